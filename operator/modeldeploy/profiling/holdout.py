"""The model's accuracy on held-out rows, counted as the runtime counts labels (pure).

A held-out row is correct when the runtime would score its label so (`serving/labels.py`):
a classifier's class equal to the label (compared as bin labels, so 1 and "1" agree), a
regressor's value within the runtime's tolerance of it (`labels.max_abs_error` of
model.yaml, else its share of the spread of the training predictions). Rows without a label
are left out, as the runtime never scores a label it has not received.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.profile_schema import (
    ClassificationOutput,
    FeatureProfile,
    OutputProfile,
    Quality,
)
from modeldeploy.profiling.stats import normalise
from modeldeploy.serving.bins import category_label
from modeldeploy.serving.labels import regression_tolerance
from modeldeploy.serving.model import Prediction


@dataclass(frozen=True)
class Holdout:
    """Rows the model was not trained on (columns as the training data's) and their labels."""

    columns: Mapping[str, npt.NDArray[Any]]
    labels: npt.NDArray[Any]
    label_name: str = "the label"


def _is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and np.isnan(value))


def labelled_rows(
    holdout: Holdout, features: Sequence[FeatureProfile]
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[Any]]:
    """The holdout's labelled rows (columns normalised as the runtime sees the features) and
    their labels; refuses a holdout whose columns are not the training features."""
    names = [f.name for f in features]
    missing = [n for n in names if n not in holdout.columns]
    extra = sorted(set(holdout.columns) - set(names))
    if missing or extra:
        wrong = [f"lacks {', '.join(missing)}"] if missing else []
        wrong += [f"has {', '.join(extra)} too"] if extra else []
        raise ValueError(f"the holdout's columns must be the features: it {' and '.join(wrong)}")
    rows = len(holdout.labels)
    for name in names:
        if len(holdout.columns[name]) != rows:
            raise ValueError(f"holdout column {name} has not one value per label ({rows})")
    keep = np.fromiter((not _is_missing(v) for v in holdout.labels.tolist()), bool, rows)
    if not keep.any():
        raise ValueError(f"{holdout.label_name} has no values in the holdout")
    columns = {f.name: normalise(holdout.columns[f.name][keep], f.type) for f in features}
    return columns, holdout.labels[keep]


def holdout_quality(
    prediction: Prediction,
    labels: npt.NDArray[Any],
    output: OutputProfile,
    max_abs_error: float | None = None,
) -> Quality:
    """The share of `labels` the predictions got right (see the module docstring)."""
    predicted = np.asarray(prediction.values).ravel().tolist()
    truth = labels.tolist()
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} labels")
    if isinstance(output, ClassificationOutput):
        correct = sum(
            category_label(p) == category_label(t) for p, t in zip(predicted, truth, strict=True)
        )
        tolerance = None
    else:
        tolerance = regression_tolerance(output, max_abs_error)
        values = np.asarray(predicted, dtype=np.float64)
        try:
            target = np.asarray(truth, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError("a regressor's holdout labels must be numbers") from err
        correct = int(np.count_nonzero(np.abs(values - target) <= tolerance))
    return Quality(
        holdout_accuracy=correct / len(truth), holdout_rows=len(truth), holdout_tolerance=tolerance
    )
