"""A model that is another V2 server: `modeldeploy proxy`'s model (serving/proxy.py).

The proxy validates a request against its profile first (protocol.py), so what reaches the
upstream is a request the profile accepts; what the proxy refuses is the client's 4xx and
never leaves it. The validated columns are sent to the upstream's
`/v2/models/{model}/infer` as V2 JSON (one input per feature, in profile order, missing
values as null), over a bounded pool of keep-alive connections (keepalive.py), and the
outputs named in `UpstreamConfig` are read back into a Prediction: from there on, the
runtime's own path (output tensors, metrics, drift bins, prediction log, labels).

Every upstream failure is the model's error (ModelError: a 500, `requests_total{code="500"}`):
no answer (refused, reset, timed out), any status but 200 (a 4xx too: the proxy validated
the request, so the upstream refusing it is the pair's fault, not the client's), a body that
is no V2 response, outputs missing, of the wrong length or not of the profile's classes.
"""

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.profile_schema import ClassificationOutput, FeatureProfile, OutputProfile
from modeldeploy.serving.keepalive import FAILURES, ConnectionPool
from modeldeploy.serving.model import Columns, Prediction
from modeldeploy.serving.pipeline import ModelError
from modeldeploy.serving.protocol import encode_json, input_tensor
from modeldeploy.serving.proxy_config import UpstreamConfig

JSON_HEADERS = {"content-type": "application/json"}
_MESSAGE_LIMIT = 200  # characters of an upstream's error body quoted in the log


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def wanted_outputs(output: OutputProfile, config: UpstreamConfig) -> list[str]:
    """The upstream outputs a Prediction is read from, for the profile's kind of output."""
    if not isinstance(output, ClassificationOutput):
        return [config.value_output]
    if output.confidence is None or config.probabilities_output is None:
        return [config.label_output]
    return [config.label_output, config.probabilities_output]


def check_outputs(output: OutputProfile, config: UpstreamConfig) -> str | None:
    """Why this upstream configuration cannot answer for the profile, or None."""
    if (
        isinstance(output, ClassificationOutput)
        and output.confidence is not None
        and config.probabilities_output is None
    ):
        return (
            "the profile records the model's confidence, but upstream.probabilities_output "
            "is not set: the proxy could not export prediction_confidence"
        )
    return None


def upstream_request(
    features: Sequence[FeatureProfile],
    columns: Columns,
    output: OutputProfile,
    config: UpstreamConfig,
) -> dict[str, Any]:
    """The V2 request body for validated columns (pure)."""
    inputs = []
    for feature in features:
        tensor = input_tensor(feature, columns[feature.name].tolist())
        if tensor["datatype"] == "BYTES" and config.string_parameters:
            tensor["parameters"] = dict(config.string_parameters)
        inputs.append(tensor)
    body: dict[str, Any] = {
        "inputs": inputs,
        "outputs": [{"name": name} for name in wanted_outputs(output, config)],
    }
    if config.parameters:
        body["parameters"] = dict(config.parameters)
    return body


def _flat(data: Any) -> list[Any]:
    """A tensor's data, flattened (servers send row-major flat lists, some nested ones)."""
    if not isinstance(data, list):
        raise ModelError("the upstream answered an output whose data is not a list")
    flat: list[Any] = []
    for value in data:
        flat.extend(_flat(value) if isinstance(value, list) else [value])
    return flat


def _outputs(payload: Any) -> dict[str, list[Any]]:
    outputs = payload.get("outputs") if isinstance(payload, dict) else None
    if not isinstance(outputs, list):
        raise ModelError("the upstream's answer has no 'outputs' list")
    found = {}
    for entry in outputs:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            found[entry["name"]] = _flat(entry.get("data"))
    return found


def _output(outputs: dict[str, list[Any]], name: str, rows: int) -> list[Any]:
    data = outputs.get(name)
    if data is None:
        raise ModelError(
            f"the upstream's answer has no output {name!r} (has: {', '.join(outputs)})"
        )
    if len(data) != rows:
        raise ModelError(f"the upstream's output {name!r} has {len(data)} values for {rows} rows")
    return data


def _numbers(name: str, data: list[Any]) -> npt.NDArray[np.float64]:
    try:
        numbers = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ModelError(f"the upstream's output {name!r} is not numbers") from err
    if not np.isfinite(numbers).all():
        raise ModelError(f"the upstream's output {name!r} has NaN or infinite values")
    return numbers


def prediction_from(
    payload: Any, rows: int, output: OutputProfile, config: UpstreamConfig
) -> Prediction:
    """The Prediction an upstream's V2 response body (parsed JSON) stands for (pure)."""
    outputs = _outputs(payload)
    if not isinstance(output, ClassificationOutput):
        name = config.value_output
        return Prediction(_numbers(name, _output(outputs, name, rows)))
    classes = tuple(output.classes)
    labels = _output(outputs, config.label_output, rows)
    # Each label as the profile's class it equals: a server answering 1.0 for class 1 is
    # answering class 1 (and its label is exported as "1", as the runtime's).
    as_class = {cls: cls for cls in classes}
    unknown = {str(v) for v in labels if not isinstance(v, str | int | float) or v not in as_class}
    if unknown:
        raise ModelError(
            f"the upstream answered label(s) {', '.join(sorted(unknown)[:5])}, not classes of "
            f"the profile ({', '.join(map(str, classes))})"
        )
    values = np.empty(rows, dtype=object)
    values[:] = [as_class[v] for v in labels]
    if output.confidence is None or config.probabilities_output is None:
        return Prediction(values, None, classes)
    name = config.probabilities_output
    flat = _output(outputs, name, rows * len(classes))
    probabilities = _numbers(name, flat).reshape(rows, len(classes))
    return Prediction(values, probabilities, classes)


def status_error(status: int, body: bytes) -> ModelError:
    """An upstream's answer other than 200: the model's error, whatever its status."""
    text = body[:_MESSAGE_LIMIT].decode(errors="replace")
    return ModelError(f"the upstream answered {status}: {text}")


class UpstreamModel:
    """The upstream V2 server's model, as the pipeline's Model (`predict`)."""

    def __init__(
        self,
        pool: ConnectionPool,
        model: str,
        features: Sequence[FeatureProfile],
        output: OutputProfile,
        config: UpstreamConfig,
    ) -> None:
        self._pool = pool
        self._path = infer_path(model)
        self._features = tuple(features)
        self._output = output
        self._config = config

    def predict(self, columns: Columns) -> Prediction:
        rows = len(next(iter(columns.values())))
        body = encode_json(upstream_request(self._features, columns, self._output, self._config))
        try:
            reply = self._pool.request("POST", self._path, body, JSON_HEADERS)
        except FAILURES as err:
            raise ModelError(f"the upstream gave no answer: {err!r}") from err
        if reply.status != 200:
            raise status_error(reply.status, reply.body)
        try:
            payload = json.loads(reply.body)
        except ValueError as err:
            raise ModelError("the upstream's answer is not JSON") from err
        return prediction_from(payload, rows, self._output, self._config)
