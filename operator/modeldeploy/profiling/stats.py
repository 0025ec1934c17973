"""Pure computations of a profile: schema inference, bin edges, baselines, golden rows.

Columns are numpy arrays; `normalise` turns any column into the runtime's representation
(float64 with NaN for numeric features, object with None for categorical ones) so that
baselines are counted exactly like live traffic.
"""

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.contract import CONFIDENCE_BUCKETS
from modeldeploy.profile_schema import (
    NUMERIC_TYPES,
    ClassificationOutput,
    ConfidenceProfile,
    FeatureProfile,
    FeatureType,
    RegressionOutput,
)
from modeldeploy.serving.bins import (
    CategoricalBins,
    NumericBins,
    bucket_counts,
    category_label,
    feature_bins,
    ratios,
)
from modeldeploy.serving.model import Prediction

DEFAULT_BINS = 10  # deciles
MAX_CATEGORIES = 50


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def column_type(values: npt.NDArray[Any]) -> FeatureType:
    """The feature type a column's dtype (or, for objects, its values) implies."""
    kind = values.dtype.kind
    if kind == "f":
        return "float"
    if kind in "iu":
        return "int"
    if kind == "b":
        return "bool"
    if kind in "US":
        return "string"
    present = [v for v in values.tolist() if not _is_missing(v)]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float"
    return "string"


def normalise(values: npt.NDArray[Any], feature_type: FeatureType) -> npt.NDArray[Any]:
    """The runtime's representation of a column (see module docstring)."""
    if feature_type in NUMERIC_TYPES:
        return np.array([np.nan if _is_missing(v) else v for v in values.tolist()], dtype=float)
    convert = bool if feature_type == "bool" else str
    column = np.empty(len(values), dtype=object)
    column[:] = [None if _is_missing(v) else convert(v) for v in values.tolist()]
    return column


def missing_mask(column: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    if column.dtype.kind == "f":
        return np.asarray(np.isnan(column), dtype=bool)
    return np.fromiter((v is None for v in column.tolist()), dtype=bool, count=len(column))


def decile_edges(values: npt.NDArray[np.float64], n_bins: int = DEFAULT_BINS) -> list[float]:
    """Inner edges at the training quantiles; tied quantiles merge into one edge."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return []
    quantiles = np.quantile(present, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return [float(e) for e in np.unique(quantiles)]


def vocabulary(column: npt.NDArray[Any], max_categories: int = MAX_CATEGORIES) -> list[Any]:
    """The most frequent categories (ties by name), at most `max_categories`."""
    counts = Counter(v for v in column.tolist() if v is not None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], category_label(kv[0])))
    return sorted((v for v, _ in ranked[:max_categories]), key=category_label)


def profile_feature(
    name: str,
    column: npt.NDArray[Any],
    feature_type: FeatureType,
    *,
    nullable: bool = False,
    n_bins: int = DEFAULT_BINS,
    max_categories: int = MAX_CATEGORIES,
) -> FeatureProfile:
    """Schema, bins and baseline of one normalised column."""
    missing = missing_mask(column)
    missing_rate = float(missing.mean()) if column.size else 0.0
    common: dict[str, Any] = {
        "name": name,
        "type": feature_type,
        "nullable": nullable or missing_rate > 0,
        "missing_rate": missing_rate,
    }
    if feature_type in NUMERIC_TYPES:
        present = column[~missing]
        extra: dict[str, Any] = {
            "min": float(present.min()) if present.size else None,
            "max": float(present.max()) if present.size else None,
            "edges": decile_edges(column, n_bins),
        }
    else:
        extra = {"categories": [category_label(v) for v in vocabulary(column, max_categories)]}
    draft = FeatureProfile(**common, **extra, baseline={})
    return draft.model_copy(update={"baseline": ratios(feature_bins(draft), column)})


def output_profile(
    prediction: Prediction, n_bins: int = DEFAULT_BINS
) -> ClassificationOutput | RegressionOutput:
    """Distribution of the model's predictions (and confidence) on the training data."""
    if prediction.classes is not None:
        classes = list(prediction.classes)
        confidence = prediction.confidence
        confidence_profile = None
        if confidence is not None:
            counts = bucket_counts(CONFIDENCE_BUCKETS, confidence)
            confidence_profile = ConfidenceProfile(
                buckets=list(CONFIDENCE_BUCKETS),
                baseline=(counts / max(1, confidence.size)).tolist(),
            )
        return ClassificationOutput(
            classes=classes,
            baseline=ratios(CategoricalBins(tuple(classes)), prediction.values),
            confidence=confidence_profile,
        )
    values = np.asarray(prediction.values, dtype=np.float64)
    edges = decile_edges(values, n_bins)
    return RegressionOutput(edges=edges, baseline=ratios(NumericBins(np.asarray(edges)), values))


def golden_rows(
    labels: Sequence[Any],
    has_missing: npt.NDArray[np.bool_],
    count: int,
    seed: int = 0,
) -> list[int]:
    """Rows for golden requests: one with missing values if any, then classes in turn.

    Deterministic for a seed, so rebuilding an image yields the same golden requests.
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    picks: list[int] = []
    with_missing = order[has_missing[order]]
    if with_missing.size:
        picks.append(int(with_missing[0]))
    groups: dict[str, list[int]] = {}
    for row in order.tolist():
        groups.setdefault(category_label(labels[row]), []).append(row)
    queues = [groups[k] for k in sorted(groups)]
    while len(picks) < min(count, len(labels)) and any(queues):
        for queue in queues:
            while queue and queue[0] in picks:
                queue.pop(0)
            if queue and len(picks) < count:
                picks.append(queue.pop(0))
    return picks
