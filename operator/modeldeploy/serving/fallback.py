"""Low-confidence fallback: rows the model is unsure of are answered by rules in the image.

    fallback: {confidence_floor: 0.6, rules: churn_features:rules}    # model.yaml

A row whose confidence (the predicted class' probability, as the confidence histogram counts
it) is below the floor is answered by the rules instead: a `module:callable` from the model
directory, called with the model's inputs (after preprocessing) of those rows only, that
answers as the model does (a Prediction or a mapping with its fields: labels, and
probabilities over the same classes in the same order). The response tags each row
(`fallback` output), and the runtime counts the rows answered by each
(`answered_rows_total{answered_by}`). Golden requests go through it like any request, so the
rules must be deterministic for golden answers to stay the ones the image was built with.

Only rules in the image: answering from another deployment would mean calling a Service from
the runtime, which it never does.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.profile_schema import ClassificationOutput, Profile
from modeldeploy.serving.config import ModelConfig, ModelDirError
from modeldeploy.serving.model import Columns, Prediction, as_prediction, resolve_callable

Rules = Callable[[dict[str, npt.NDArray[Any]]], Any]
Mask = npt.NDArray[np.bool_]


class RulesError(Exception):
    """The rules raised or answered in another shape than the model (the image's fault)."""


@dataclass(frozen=True)
class Fallback:
    confidence_floor: float
    rules: Rules

    def unsure(self, prediction: Prediction) -> Mask:
        """The rows below the floor (none for a prediction without probabilities)."""
        confidence = prediction.confidence
        if confidence is None:
            return np.zeros(len(prediction.values), dtype=bool)
        return np.asarray(confidence < self.confidence_floor, dtype=bool)

    def answer(self, features: Columns, prediction: Prediction) -> tuple[Prediction, Mask]:
        """The prediction with its unsure rows answered by the rules, and which they are."""
        unsure = self.unsure(prediction)
        if not unsure.any():
            return prediction, unsure
        rows = {name: np.asarray(column)[unsure] for name, column in features.items()}
        try:
            ruled = as_prediction(self.rules(rows))
        except Exception as err:
            raise RulesError(f"the fallback rules failed: {err!r}") from err
        _check_shape(ruled, prediction, int(unsure.sum()))
        assert ruled.probabilities is not None  # _check_shape
        assert prediction.probabilities is not None  # rows fell below the floor
        kind = prediction.values.dtype.kind
        values = prediction.values.astype(object if kind in "OUS" else prediction.values.dtype)
        values[unsure] = ruled.values
        probabilities = prediction.probabilities.copy()
        probabilities[unsure] = ruled.probabilities
        return replace(prediction, values=values, probabilities=probabilities), unsure


def _check_shape(ruled: Prediction, model: Prediction, rows: int) -> None:
    if ruled.classes != model.classes:
        raise RulesError(
            f"the fallback rules answered classes {ruled.classes}, the model {model.classes}"
        )
    if len(ruled.values) != rows:
        raise RulesError(f"the fallback rules answered {len(ruled.values)} rows for {rows}")
    unknown = set(np.asarray(ruled.values).tolist()) - set(model.classes or ())
    if unknown:
        raise RulesError(f"the fallback rules answered labels that are no class: {unknown}")
    assert model.probabilities is not None  # rows fell below the floor: it has some
    wanted = (rows, model.probabilities.shape[1])
    if ruled.probabilities is None or ruled.probabilities.shape != wanted:
        got = None if ruled.probabilities is None else ruled.probabilities.shape
        raise RulesError(f"the fallback rules answered probabilities of shape {got}, not {wanted}")


def load_fallback(config: ModelConfig, model_dir: Path) -> Fallback | None:
    declared = config.fallback
    if declared is None:
        return None
    return Fallback(declared.confidence_floor, resolve_callable(declared.rules, model_dir))


def check_fallback(config: ModelConfig, profile: Profile) -> None:
    """A fallback needs what its floor is on: a classifier's probabilities."""
    output = profile.output
    if config.fallback is not None and (
        not isinstance(output, ClassificationOutput) or output.confidence is None
    ):
        raise ModelDirError(
            "fallback needs a classifier with probabilities (its profile records no "
            "confidence): the floor is on the predicted class' probability"
        )
