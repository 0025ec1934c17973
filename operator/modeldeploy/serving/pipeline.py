"""The inference path shared by the server, its warm-up and the profile builder:
validated request -> preprocess -> model -> V2 response. One path, so golden outputs
recorded at build time are exactly what the image answers. Its stages are traced inside a
request's span only (`tracing.stage`): warm-up and the profile builder make no spans."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy import tracing
from modeldeploy.profile_schema import FeatureProfile
from modeldeploy.serving.model import Columns, Model, Prediction, Preprocess
from modeldeploy.serving.protocol import InferRequest, InvalidRequest, Reason, RequestParser

LABEL_OUTPUT = "label"
CONFIDENCE_OUTPUT = "confidence"
PROBABILITIES_OUTPUT = "probabilities"
VALUE_OUTPUT = "value"


class ModelError(Exception):
    """The model or its preprocessing failed or answered nonsense (a 500, not a 400)."""


@dataclass(frozen=True)
class Inference:
    request: InferRequest
    features: dict[str, npt.NDArray[Any]]  # what the model consumed (after preprocessing)
    prediction: Prediction
    outputs: list[dict[str, Any]]  # V2 output tensors


class InferencePipeline:
    def __init__(
        self,
        features: Sequence[FeatureProfile],
        model: Model,
        preprocess: Preprocess | None = None,
        *,
        max_batch: int = 1024,
    ) -> None:
        self.features = tuple(features)
        self.parser = RequestParser(features, max_batch)
        self._model = model
        self._preprocess = preprocess

    def predict(self, columns: Columns) -> tuple[dict[str, npt.NDArray[Any]], Prediction]:
        """Preprocesses validated columns and calls the model; checks what comes back."""
        rows = len(next(iter(columns.values())))
        features = dict(columns)
        if self._preprocess is not None:
            with tracing.stage("preprocess"):
                try:
                    produced = self._preprocess(features)
                except Exception as err:
                    raise ModelError(f"preprocessing failed: {err!r}") from err
                features = {f.name: _as_column(f, produced.get(f.name)) for f in self.features}
        with tracing.stage("predict"):
            try:
                prediction = self._model.predict(features)
            except Exception as err:
                raise ModelError(f"prediction failed: {err!r}") from err
        if len(prediction.values) != rows:
            raise ModelError(f"model returned {len(prediction.values)} predictions for {rows} rows")
        return features, prediction

    def infer(self, body: Any) -> Inference:
        with tracing.stage("validate"):
            request = self.parser.parse(body)
        features, prediction = self.predict(request.columns)
        return Inference(request, features, prediction, output_tensors(prediction, request.outputs))


def _as_column(feature: FeatureProfile, values: npt.ArrayLike | None) -> npt.NDArray[Any]:
    if values is None:
        raise ModelError(f"preprocessing dropped feature {feature.name!r}")
    if feature.numeric:
        return np.asarray(values, dtype=np.float64)
    return np.asarray(values, dtype=object)


def _datatype(values: npt.NDArray[Any]) -> str:
    kind = values.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def _tensor(name: str, shape: list[int], datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def output_tensors(prediction: Prediction, requested: Sequence[str] | None) -> list[dict[str, Any]]:
    """V2 output tensors: label (+ confidence, probabilities) for classifiers, else value."""
    values = prediction.values
    rows = len(values)
    tensors = []
    if prediction.classification:
        labels = np.asarray(values)
        data = [str(v) for v in labels.tolist()] if labels.dtype.kind in "OUS" else labels.tolist()
        tensors.append(_tensor(LABEL_OUTPUT, [rows], _datatype(labels), data))
        confidence = prediction.confidence
        if confidence is not None and prediction.probabilities is not None:
            tensors.append(_tensor(CONFIDENCE_OUTPUT, [rows], "FP64", confidence.tolist()))
            probabilities = _tensor(
                PROBABILITIES_OUTPUT,
                [rows, prediction.probabilities.shape[1]],
                "FP64",
                prediction.probabilities.ravel().tolist(),
            )
            probabilities["parameters"] = {"classes": list(prediction.classes or ())}
            tensors.append(probabilities)
    else:
        numbers = np.asarray(values, dtype=np.float64)
        tensors.append(_tensor(VALUE_OUTPUT, [rows], "FP64", numbers.tolist()))
    if requested is None:
        return tensors
    available = {t["name"]: t for t in tensors}
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise InvalidRequest(
            Reason.UNKNOWN_OUTPUT,
            f"unknown output(s) {', '.join(unknown)}; this model answers: {', '.join(available)}",
        )
    return [available[name] for name in requested]
