"""NVIDIA's own HTTP client (`tritonclient.http`) against a real `modeldeploy serve` of the
churn example on 127.0.0.1: health, metadata, and inference in JSON and in the binary tensor
data extension, which is what Triton and KServe clients send by default. Binary requests must
predict what JSON ones do and be counted exactly like them (requests, refusals by reason,
drift bins), and a mirrored binary request must reach the shadow readable."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from test_runtime import (  # noqa: F401  (fixtures)
    IDENTITY_ENV,
    INFER,
    churn,
    healthy,
    holdout,
    profile,
    rows_body,
    scrape,
    value,
    wait_for_fast,
)
from tritonclient.utils import InferenceServerException

from modeldeploy import contract as c
from modeldeploy.profile_schema import FeatureProfile, Profile
from modeldeploy.serving.binary import BINARY_CONTENT_TYPE, HEADER_LENGTH, tensor_bytes
from modeldeploy.serving.bins import counts, feature_bins
from modeldeploy.serving.process import LOOPBACK, ServerProcess
from modeldeploy.serving.protocol import PREFERRED_DATATYPE, Reason, encode_json

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MODEL = "churn"
VERSION = IDENTITY_ENV[c.ENV_MODEL_VERSION]
OUTPUTS = ("label", "confidence", "probabilities")
NUMPY_TYPES = {"float": np.float64, "int": np.int64, "bool": np.bool_, "string": np.object_}


@pytest.fixture(scope="module")
def server(healthy: Path) -> Iterator[ServerProcess]:  # noqa: F811
    with ServerProcess(healthy, env=IDENTITY_ENV, args=["--log-level", "warning"]) as process:
        process.wait_ready()
        yield process


def _client(server: ServerProcess) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"{LOOPBACK}:{server.port}")


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with _client(server) as opened:
        yield opened


def _column(feature: FeatureProfile, values: np.ndarray) -> np.ndarray:
    """A holdout column as a client holds it: missing numbers NaN, strings as str."""
    if feature.type == "string":
        column = np.empty(len(values), dtype=object)
        column[:] = [str(v) for v in values]
        return column
    return np.asarray(values, dtype=NUMPY_TYPES[feature.type])


def _inputs(
    profile: Profile,  # noqa: F811
    columns: dict[str, np.ndarray],
    *,
    binary: bool,
) -> list[triton.InferInput]:
    inputs = []
    for feature in profile.features:
        column = _column(feature, columns[feature.name])
        tensor = triton.InferInput(feature.name, [len(column)], PREFERRED_DATATYPE[feature.type])
        tensor.set_data_from_numpy(column, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _rows(holdout: dict[str, np.ndarray], start: int, n: int) -> dict[str, np.ndarray]:  # noqa: F811
    return {name: column[start : start + n] for name, column in holdout.items()}


def _outputs(result: triton.InferResult) -> dict[str, list[Any]]:
    """Every output as plain values (BYTES come back as bytes in binary, str in JSON)."""
    answered = {}
    for name in OUTPUTS:
        array = result.as_numpy(name)
        assert array is not None, name
        values = array.reshape(-1).tolist()  # flat, as in JSON
        if array.dtype == np.object_:
            values = [v.decode() if isinstance(v, bytes) else v for v in values]
        answered[name] = values
    return answered


def _binary_outputs(result: triton.InferResult) -> set[str]:
    response = result.get_response()
    return {o["name"] for o in response["outputs"] if "binary_data_size" in o.get("parameters", {})}


# --- health and metadata ----------------------------------------------------------------------


def test_health_and_metadata(
    client: triton.InferenceServerClient,
    profile: Profile,  # noqa: F811
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, VERSION)
    assert not client.is_model_ready("fraud")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(MODEL)
    assert metadata["versions"] == [VERSION]
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        (f.name, PREFERRED_DATATYPE[f.type]) for f in profile.features
    ]
    assert [o["name"] for o in metadata["outputs"]] == list(OUTPUTS)
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("fraud")
    assert unknown.value.status() == "404"


# --- inference ----------------------------------------------------------------------------


def test_binary_and_json_inference_agree_with_plain_json(
    server: ServerProcess,
    client: triton.InferenceServerClient,
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
) -> None:
    rows = 200
    columns = _rows(holdout, 0, rows)
    assert np.isnan(columns["data_usage_gb"]).any(), "the rows should have missing values"
    # The reference: the JSON body any V2 client sends (missing values as null).
    plain = httpx.post(server.url + INFER, json=rows_body(profile, holdout, 0, rows), timeout=5)
    assert plain.headers["content-type"] == "application/json"
    expected = {o["name"]: o["data"] for o in plain.json()["outputs"]}

    # tritonclient's default: binary inputs, and (no outputs named) every output binary.
    default = client.infer(MODEL, _inputs(profile, columns, binary=True), request_id="b-1")
    assert _binary_outputs(default) == set(OUTPUTS)
    assert default.get_response()["id"] == "b-1"
    assert _outputs(default) == expected
    assert default.as_numpy("probabilities").shape == (rows, 2)

    # Binary inputs, outputs chosen one by one: JSON where asked for.
    chosen = [
        triton.InferRequestedOutput("label", binary_data=True),
        triton.InferRequestedOutput("confidence", binary_data=False),
    ]
    mixed = client.infer(
        MODEL, _inputs(profile, columns, binary=True), outputs=chosen, model_version=VERSION
    )
    assert _binary_outputs(mixed) == {"label"}
    assert [o["name"] for o in mixed.get_response()["outputs"]] == ["label", "confidence"]
    assert mixed.as_numpy("label").tolist() == [v.encode() for v in expected["label"]]
    assert mixed.as_numpy("confidence").tolist() == expected["confidence"]

    # All JSON (NaN is no JSON: tritonclient's JSON inputs carry complete rows only).
    complete = {
        name: column[~np.isnan(columns["data_usage_gb"])] for name, column in columns.items()
    }
    json_outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in OUTPUTS]
    as_json = client.infer(MODEL, _inputs(profile, complete, binary=False), outputs=json_outputs)
    assert _binary_outputs(as_json) == set()
    as_binary = client.infer(MODEL, _inputs(profile, complete, binary=True))
    assert _outputs(as_json) == _outputs(as_binary)
    kept = np.flatnonzero(~np.isnan(columns["data_usage_gb"])).tolist()
    assert _outputs(as_json)["label"] == [expected["label"][i] for i in kept]


def test_binary_requests_are_counted_like_json_ones(
    healthy: Path,  # noqa: F811
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
) -> None:
    """Requests, latency, feature and prediction bins: a fresh server, so the totals are
    exactly what binary requests made (unknown and non-ASCII categories included)."""
    with ServerProcess(healthy, env=IDENTITY_ENV, args=["--log-level", "warning"]) as server:
        server.wait_ready()
        labels_seen: list[str] = []
        with _client(server) as client:
            for start in range(0, 400, 100):
                columns = _rows(holdout, start, 100)
                result = client.infer(MODEL, _inputs(profile, columns, binary=True))
                labels_seen += _outputs(result)["label"]
            unseen = {name: column[:2] for name, column in holdout.items()}
            unseen["contract"] = np.array(["zwei Jahre ü", "月額"], dtype=object)
            result = client.infer(MODEL, _inputs(profile, unseen, binary=True))
            labels_seen += _outputs(result)["label"]
        after = scrape(server.url)
    for feature in profile.features:
        expected = counts(feature_bins(feature), holdout[feature.name][:400])
        if feature.name == "contract":
            expected = expected + counts(feature_bins(feature), unseen["contract"])
        else:
            expected = expected + counts(feature_bins(feature), holdout[feature.name][:2])
        got = [
            value(after, c.FEATURE_BIN_TOTAL, feature=feature.name, bin=label)
            for label in feature_bins(feature).labels
        ]
        assert got == expected.tolist(), feature.name
    assert value(after, c.FEATURE_BIN_TOTAL, feature="contract", bin="other") == 2
    for label in ("churn", "stay"):
        seen = value(after, c.PREDICTION_BIN_TOTAL, output="label", bin=label)
        assert seen == labels_seen.count(label)
    assert value(after, c.PREDICTION_CONFIDENCE + "_count") == 402
    assert value(after, c.REQUESTS_TOTAL, code="200") == 5
    assert value(after, c.REQUEST_DURATION_SECONDS + "_count") == 5


def test_a_binary_response_is_octet_stream_with_its_header_length(
    server: ServerProcess,
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
) -> None:
    """As Triton answers; the body built by hand, as any client of the extension would."""
    body = rows_body(profile, holdout, 0, 3)
    tails = []
    for tensor in body["inputs"]:
        values = [np.nan if v is None else v for v in tensor.pop("data")]
        tails.append(tensor_bytes(tensor["datatype"], values))
        tensor["parameters"] = {"binary_data_size": len(tails[-1])}
    body["parameters"] = {"binary_data_output": True}
    header = encode_json(body)
    answer = httpx.post(
        server.url + INFER,
        content=header + b"".join(tails),
        headers={HEADER_LENGTH: str(len(header)), "content-type": BINARY_CONTENT_TYPE},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == BINARY_CONTENT_TYPE
    length = int(answer.headers[HEADER_LENGTH])
    outputs = json.loads(answer.content[:length])["outputs"]
    sizes = [o["parameters"]["binary_data_size"] for o in outputs]
    assert sizes[1:] == [3 * 8, 3 * 2 * 8]  # confidence, probabilities: FP64
    assert len(answer.content) == length + sum(sizes)


# --- refusals -----------------------------------------------------------------------------


def _position(profile: Profile, name: str) -> int:  # noqa: F811
    return [f.name for f in profile.features].index(name)


def _refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_refusals_raise_with_their_status_and_are_counted_by_reason(
    server: ServerProcess,
    client: triton.InferenceServerClient,
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
) -> None:
    columns = _rows(holdout, 0, 4)
    before = scrape(server.url)

    def infer(inputs: list[triton.InferInput]) -> Any:
        return lambda: client.infer(MODEL, inputs)

    unknown = _inputs(profile, columns, binary=True)
    extra = triton.InferInput("age", [4], "INT64")
    extra.set_data_from_numpy(np.arange(4, dtype=np.int64))
    err = _refused(infer([*unknown, extra]))
    assert (err.status(), "unknown input 'age'" in err.message()) == ("400", True), err

    wrong_shape = _inputs(profile, columns, binary=True)
    square = triton.InferInput("tenure_months", [2, 2], "INT64")
    square.set_data_from_numpy(np.arange(4, dtype=np.int64).reshape(2, 2))
    wrong_shape[_position(profile, "tenure_months")] = square
    err = _refused(infer(wrong_shape))
    assert (err.status(), "must be [batch] or [batch, 1]" in err.message()) == ("400", True)

    short = _inputs(profile, columns, binary=True)
    short[_position(profile, "monthly_charges")].set_shape([5])  # 4 values' bytes said to be 5
    err = _refused(infer(short))
    assert (err.status(), "takes 40 bytes but binary_data_size is 32" in err.message()) == (
        "400",
        True,
    )

    wrong_type = _inputs(profile, columns, binary=True)
    as_number = triton.InferInput("contract", [4], "FP64")
    as_number.set_data_from_numpy(np.zeros(4))
    wrong_type[_position(profile, "contract")] = as_number
    err = _refused(infer(wrong_type))
    assert (err.status(), "'contract' is a string feature" in err.message()) == ("400", True)

    err = _refused(lambda: client.infer("fraud", _inputs(profile, columns, binary=True)))
    assert err.status() == "404"

    # What tritonclient never sends: an Inference-Header-Content-Length that is no length.
    body = b'{"inputs": []}'
    bad_header = httpx.post(
        server.url + INFER, content=body, headers={HEADER_LENGTH: "lots"}, timeout=5
    )
    assert bad_header.status_code == 400
    assert f"{HEADER_LENGTH} must be a number of bytes" in bad_header.json()["error"]

    sent = {
        Reason.UNKNOWN_INPUT: 1,
        Reason.BAD_SHAPE: 1,
        Reason.BINARY_SIZE_MISMATCH: 1,
        Reason.BAD_DATATYPE: 1,
        Reason.UNKNOWN_MODEL: 1,
        Reason.BAD_BINARY_HEADER: 1,
    }
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert {r: delta(c.INVALID_REQUESTS_TOTAL, reason=r) for r in sent} == sent
    assert delta(c.INVALID_REQUESTS_TOTAL) == sum(sent.values())
    assert delta(c.REQUESTS_TOTAL, code="400") == 5
    assert delta(c.REQUESTS_TOTAL, code="404") == 1
    assert client.is_server_live()


# --- mirroring ------------------------------------------------------------------------------


def test_a_mirrored_binary_request_reaches_the_shadow_readable(
    healthy: Path,  # noqa: F811
    server: ServerProcess,
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
) -> None:
    """The module's server plays the shadow: binary bodies need their header to be read."""
    env = {**IDENTITY_ENV, c.ENV_SHADOW_URL: server.url, c.ENV_SHADOW_PERCENT: "100"}
    before = scrape(server.url)
    with ServerProcess(healthy, env=env, args=["--log-level", "warning"]) as primary:
        primary.wait_ready()
        with _client(primary) as client:
            for start in range(0, 100, 10):
                client.infer(MODEL, _inputs(profile, _rows(holdout, start, 10), binary=True))

        def settled() -> bool:
            sent = value(scrape(primary.url), c.SHADOW_REQUESTS_TOTAL, result="sent")
            received = value(scrape(server.url), c.REQUESTS_TOTAL, code="200") - value(
                before, c.REQUESTS_TOTAL, code="200"
            )
            return sent == 10 and received == 10

        wait_for_fast(settled)
    after = scrape(server.url)
    assert value(after, c.INVALID_REQUESTS_TOTAL) == value(before, c.INVALID_REQUESTS_TOTAL)
