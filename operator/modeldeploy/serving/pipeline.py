"""The inference path shared by the server, its warm-up and the profile builder:
validated request -> preprocess -> model -> V2 response. One path, so golden outputs
recorded at build time are exactly what the image answers (a declared low-confidence
fallback included: serving/fallback.py). Its stages are traced inside a
request's span only (`tracing.stage`): warm-up and the profile builder make no spans."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy import tracing
from modeldeploy.profile_schema import FeatureProfile
from modeldeploy.serving.explain import CannotExplain, Explainer, Matrix
from modeldeploy.serving.fallback import Fallback, Mask, RulesError
from modeldeploy.serving.model import Columns, Model, Prediction, Preprocess
from modeldeploy.serving.protocol import InferRequest, InvalidRequest, Reason, RequestParser

LABEL_OUTPUT = "label"
CONFIDENCE_OUTPUT = "confidence"
PROBABILITIES_OUTPUT = "probabilities"
VALUE_OUTPUT = "value"
ATTRIBUTIONS_OUTPUT = "attributions"
FALLBACK_OUTPUT = "fallback"  # BOOL per row: answered by the fallback rules (with a fallback)


class ModelError(Exception):
    """The model or its preprocessing failed or answered nonsense (a 500, not a 400)."""


@dataclass(frozen=True)
class Inference:
    request: InferRequest
    features: dict[str, npt.NDArray[Any]]  # what the model consumed (after preprocessing)
    prediction: Prediction  # as answered: the fallback's rows included
    outputs: list[dict[str, Any]]  # V2 output tensors
    attributions: Matrix | None = None  # rows x features, when the request asked for them
    fallback: Mask | None = None  # rows the fallback answered; None: the model declares none


class InferencePipeline:
    def __init__(
        self,
        features: Sequence[FeatureProfile],
        model: Model,
        preprocess: Preprocess | None = None,
        *,
        max_batch: int = 1024,
        explainer: Explainer | CannotExplain | None = None,
        fallback: Fallback | None = None,
    ) -> None:
        self.features = tuple(features)
        self.parser = RequestParser(features, max_batch)
        self._model = model
        self._preprocess = preprocess
        self.explainer = explainer  # None: not set up (no background); why not, if refused
        self.fallback = fallback

    def predict(
        self, columns: Columns
    ) -> tuple[dict[str, npt.NDArray[Any]], Prediction, Mask | None]:
        """Preprocesses validated columns and calls the model, then the fallback on the rows
        below its floor; checks what comes back. Also returns the rows the fallback answered
        (None without a fallback)."""
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
        if self.fallback is None:
            return features, prediction, None
        with tracing.stage("fallback"):
            try:
                answered, unsure = self.fallback.answer(features, prediction)
            except RulesError as err:
                raise ModelError(str(err)) from err
        return features, answered, unsure

    def explain(self, features: Columns) -> Matrix:
        """Attributions (rows x features) of what the model consumed; InvalidRequest when
        this model cannot be explained, ModelError when explaining it failed."""
        explainer = self._explainer()
        with tracing.stage("explain"):
            try:
                return explainer.explain(features)
            except Exception as err:
                raise ModelError(f"explaining failed: {err!r}") from err

    def _explainer(self) -> Explainer:
        explainer = self.explainer
        if isinstance(explainer, Explainer):
            return explainer
        why = explainer or "its profile has no background rows (rebuild the profile)"
        raise InvalidRequest(Reason.CANNOT_EXPLAIN, f"this model cannot be explained: {why}")

    def infer(self, body: Any) -> Inference:
        with tracing.stage("validate"):
            request = self.parser.parse(body)
        explainer = self._explainer() if request.explain else None  # refused before the model
        features, prediction, fallback = self.predict(request.columns)
        if explainer is None:
            outputs = output_tensors(prediction, request.outputs, fallback)
            return Inference(request, features, prediction, outputs, fallback=fallback)
        # The model's answers are explained, also on rows the fallback answered (tagged).
        attributions = self.explain(features)
        extra = [attributions_tensor(explainer, attributions)]
        outputs = output_tensors(prediction, request.outputs, fallback, extra)
        return Inference(request, features, prediction, outputs, attributions, fallback)


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


def attributions_tensor(explainer: Explainer, attributions: Matrix) -> dict[str, Any]:
    """The attributions as a V2 output: rows x features, named and placed in parameters."""
    tensor = _tensor(
        ATTRIBUTIONS_OUTPUT, list(attributions.shape), "FP64", attributions.ravel().tolist()
    )
    tensor["parameters"] = {
        "features": list(explainer.features),
        "expected_value": explainer.expected,
        "space": explainer.space,
    }
    return tensor


def output_tensors(
    prediction: Prediction,
    requested: Sequence[str] | None,
    fallback: Mask | None = None,
    extra: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """V2 output tensors: label (+ confidence, probabilities) for classifiers, else value;
    with a fallback, which rows it answered (`fallback`, BOOL); then `extra` ones
    (attributions)."""
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
    if fallback is not None:
        tensors.append(_tensor(FALLBACK_OUTPUT, [rows], "BOOL", fallback.tolist()))
    tensors.extend(extra)
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
