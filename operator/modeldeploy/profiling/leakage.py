"""Leakage in a training table: features that give the label away (pure, numpy only).

A feature leaks when it carries the outcome itself rather than evidence for it, most often
because its value was only recorded after the outcome (a cancellation time, a discharge
code). A model trained on it looks excellent in training and is useless, or worse, at
serving, where the value is not known yet. Two signs, each one flag with its figure and a
plain reason:

- ``separates-label``: the feature alone predicts the label almost perfectly. For a class
  label, the balanced accuracy of the best rule on the feature's bins (each bin predicts the
  class it holds the largest share of), learnt on half the rows and scored on the other half
  (1/classes is chance, 1 a perfect separator); for a
  numeric label, the share of its variance that the feature's bin means explain (the
  correlation ratio, eta squared). Flagged at or above the threshold (default 0.95).
- ``class-concentrated``: one value holds most of one class's rows (at least half) and almost
  none of the other rows (at most 5%), like a timestamp at midnight for every cancelled
  appointment: a default written when the outcome was recorded. Exact values are counted,
  "missing" being one of them, not bins.

Bins for separability have at least `ROWS_PER_BIN` rows: numeric features are cut at their
quantiles (ties merged, at most `MAX_BINS`), categories rarer than that are pooled, missing
values are a bin of their own. Fine enough that a threshold on a rare class shows (a perfect
separator of 20 churners in 4000 rows scores 0.99); with the held-out score, a feature
unrelated to the label scores about 0.5 however rare a class. Classes of fewer than
`MIN_CLASS_ROWS` rows are left out: too few to judge either way.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modeldeploy.profile_schema import LeakageFlag
from modeldeploy.serving.bins import category_label

DEFAULT_THRESHOLD = 0.95
ROWS_PER_BIN = 50
MAX_BINS = 100
MAX_CLASSES = 50  # a numeric label with more distinct values is a regression target
CONCENTRATED_SHARE = 0.5  # of one class's rows at one value ...
OTHERS_SHARE_MAX = 0.05  # ... against at most this share of the other rows
MIN_CLASS_ROWS = 20  # rows of rarer classes are left out (too few to judge)
REFUSED_EXIT_CODE = 3  # `modeldeploy profile --refuse-leaky` on leaky data (2: bad input)

Task = Literal["classification", "regression"]
IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

_WHY_SEPARATES = (
    "a feature this close to the label was most likely recorded after the outcome or "
    "derived from it"
)
_WHY_CONCENTRATED = "a value that only one outcome has is usually written when it happens"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def label_task(labels: npt.NDArray[Any]) -> Task:
    """Regression for a numeric label with more than `MAX_CLASSES` values, else classes."""
    present = [v for v in labels.tolist() if not _is_missing(v)]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    return "regression" if numeric and len(set(present)) > MAX_CLASSES else "classification"


def value_codes(column: npt.NDArray[Any]) -> tuple[IntArray, list[str]]:
    """An integer code per row for its exact value ("missing" included), and each code's
    label."""
    labels: dict[Any, int] = {}
    codes = np.empty(len(column), dtype=np.intp)
    for i, value in enumerate(column.tolist()):
        key = None if _is_missing(value) else value
        codes[i] = labels.setdefault(key, len(labels))
    names = ["missing" if v is None else _value_text(v) for v in labels]
    return codes, names


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else category_label(value)


def bin_codes(column: npt.NDArray[Any]) -> IntArray:
    """Separability bins of a normalised column (see module docstring)."""
    if column.dtype.kind == "f":
        missing = np.isnan(column)
        present = column[~missing]
        n_bins = min(MAX_BINS, present.size // ROWS_PER_BIN)
        edges = np.array([])
        if n_bins > 1:
            edges = np.unique(np.quantile(present, np.linspace(0, 1, n_bins + 1)[1:-1]))
        codes: IntArray = np.searchsorted(edges, np.nan_to_num(column), side="left")
        codes[missing] = len(edges) + 1
        return codes
    values, _ = value_codes(column)
    sizes = np.bincount(values)
    pooled = np.where(sizes >= ROWS_PER_BIN, np.arange(sizes.size), sizes.size)
    return np.asarray(pooled[values], dtype=np.intp)


def _table(rows: IntArray, columns: IntArray, shape: tuple[int, int] | None = None) -> FloatArray:
    """Contingency counts of rows x columns codes (of `shape`, else as many as there are)."""
    height, width = shape or (int(rows.max()) + 1, int(columns.max()) + 1)
    flat = np.bincount(rows * width + columns, minlength=height * width)
    return flat.reshape(height, width).astype(np.float64)


def balanced_accuracy(bins: IntArray, classes: IntArray) -> float:
    """Held-out balanced accuracy of the best one-feature rule: each bin predicts the class
    with the largest share of its own rows there. The rule is learnt on one random half of
    the rows and scored on the other, both ways round, so that bins a few rows of a class
    fell into by chance do not pass for skill (deterministic: a fixed seed)."""
    half = np.random.default_rng(0).permutation(len(bins)) % 2 == 0
    shape = (int(bins.max()) + 1, int(classes.max()) + 1)
    width = shape[1]
    scores = []
    for learn, score in ((half, ~half), (~half, half)):
        learnt = _table(bins[learn], classes[learn], shape)
        rule = np.argmax(learnt / np.maximum(learnt.sum(axis=0), 1.0), axis=1)
        scored = _table(bins[score], classes[score], shape)
        hits = scored[np.arange(len(rule)), rule]  # per bin: its rows of the predicted class
        recall = np.bincount(rule, weights=hits, minlength=width) / np.maximum(
            scored.sum(axis=0), 1.0
        )
        scores.append(recall[scored.sum(axis=0) > 0].mean())
    return float(np.mean(scores))


def explained_variance(bins: IntArray, target: npt.NDArray[np.float64]) -> float:
    """Share of the target's variance explained by its mean per bin (eta squared)."""
    total = float(((target - target.mean()) ** 2).sum())
    if total == 0.0:
        return 0.0
    sizes = np.bincount(bins).astype(np.float64)
    means = np.bincount(bins, weights=target) / np.maximum(sizes, 1.0)
    return float((sizes * (means - target.mean()) ** 2).sum() / total)


def separability_flag(
    name: str,
    column: npt.NDArray[Any],
    labels: npt.NDArray[Any],
    task: Task,
    *,
    label_name: str,
    threshold: float,
) -> LeakageFlag | None:
    bins = bin_codes(column)
    if task == "regression":
        value = explained_variance(bins, np.asarray(labels, dtype=np.float64))
        figure = f"explains {value:.1%} of the variance of {label_name} (eta squared)"
    else:
        value = balanced_accuracy(bins, value_codes(labels)[0])
        figure = f"predicts {label_name} with a balanced accuracy of {value:.3f}"
    if value < threshold:
        return None
    reason = f"{name} alone {figure}, at least {threshold:g}: {_WHY_SEPARATES}"
    return LeakageFlag(
        feature=name, kind="separates-label", value=value, threshold=threshold, reason=reason
    )


def concentration_flag(
    name: str, column: npt.NDArray[Any], labels: npt.NDArray[Any], *, label_name: str
) -> LeakageFlag | None:
    """The value holding the largest share of one class's rows, flagged if it holds at
    least `CONCENTRATED_SHARE` of them and at most `OTHERS_SHARE_MAX` of the other rows."""
    values, value_names = value_codes(column)
    classes, class_names = value_codes(labels)
    table = _table(values, classes)  # values x classes
    per_class = table.sum(axis=0)
    others = table.sum(axis=1, keepdims=True) - table
    class_share = table / np.maximum(per_class, 1.0)
    others_share = others / np.maximum(per_class.sum() - per_class, 1.0)
    suspect = (class_share >= CONCENTRATED_SHARE) & (others_share <= OTHERS_SHARE_MAX)
    if not suspect.any():
        return None
    flat = int(np.argmax(np.where(suspect, class_share, -1.0)))
    value_index, class_index = divmod(flat, table.shape[1])
    share = float(class_share[value_index, class_index])
    reason = (
        f"{share:.0%} of the rows with {label_name} = {class_names[class_index]} have "
        f"{name} = {value_names[value_index]}, against "
        f"{float(others_share[value_index, class_index]):.1%} of the other rows: "
        f"{_WHY_CONCENTRATED}"
    )
    return LeakageFlag(
        feature=name,
        kind="class-concentrated",
        value=share,
        threshold=CONCENTRATED_SHARE,
        reason=reason,
    )


@dataclass(frozen=True)
class LeakageCheck:
    """The profile build's leakage check: the training labels, and whether a flag refuses
    the build."""

    labels: npt.NDArray[Any]
    label_name: str = "the label"
    threshold: float = DEFAULT_THRESHOLD
    refuse: bool = False


class LeakyTrainingData(ValueError):
    """The profile build refused training data with leakage flags."""

    def __init__(self, flags: list[LeakageFlag]) -> None:
        self.flags = flags
        features = ", ".join(dict.fromkeys(f.feature for f in flags))
        super().__init__(f"refusing training data whose feature(s) leak the label: {features}")


def leakage_flags(
    columns: Mapping[str, npt.NDArray[Any]],
    labels: npt.NDArray[Any],
    *,
    label_name: str = "the label",
    threshold: float = DEFAULT_THRESHOLD,
) -> list[LeakageFlag]:
    """Every flag of every feature (normalised columns, see `stats.normalise`) against the
    label, in feature order. Rows without a label, or of a class with fewer than
    `MIN_CLASS_ROWS` rows, are left out; a class label needs two classes left to judge."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the leakage threshold must be in (0, 1], not {threshold}")
    labelled = np.fromiter((not _is_missing(v) for v in labels.tolist()), bool, len(labels))
    if not labelled.any():
        raise ValueError(f"{label_name} has no values")
    task = label_task(labels[labelled])
    if task == "classification":
        classes, _ = value_codes(labels)
        labelled &= np.bincount(classes)[classes] >= MIN_CLASS_ROWS
        if len(np.unique(classes[labelled])) < 2:
            return []
    target = labels[labelled]
    flags = []
    for name, column in columns.items():
        kept = column[labelled]
        found = [
            separability_flag(name, kept, target, task, label_name=label_name, threshold=threshold),
            concentration_flag(name, kept, target, label_name=label_name)
            if task == "classification"
            else None,
        ]
        flags += [flag for flag in found if flag is not None]
    return flags
