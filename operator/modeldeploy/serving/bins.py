"""Vectorised binning of feature and prediction values (pure, numpy only).

The profile builder computes training baselines with these same functions and the runtime
counts live traffic with them, so a bin means the same thing on both sides by construction.
Columns are float64 arrays (NaN = missing) for numeric features and object arrays
(None = missing) for categorical ones.
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from modeldeploy.contract import MISSING_BIN, OTHER_BIN
from modeldeploy.profile_schema import FeatureProfile

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]
RESERVED_LABELS = frozenset({MISSING_BIN, OTHER_BIN})
SMALL_BATCH = 16  # rows up to which NumericBinGroup compares against all edges at once


def numeric_labels(edges: Sequence[float]) -> tuple[str, ...]:
    """Zero-padded bin indexes, so that dashboards sort bins in value order."""
    return tuple(f"{i:02d}" for i in range(len(edges) + 1))


def category_label(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class NumericBins:
    """Bins (-inf, e0], (e0, e1], ..., (e_last, inf), then missing."""

    edges: FloatArray
    labels: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", (*numeric_labels(self.edges.tolist()), MISSING_BIN))

    @property
    def missing_index(self) -> int:
        return len(self.labels) - 1

    def index(self, values: npt.ArrayLike) -> IntArray:
        column = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self.edges, column, side="left")
        missing = np.isnan(column)
        if missing.any():
            idx[missing] = self.missing_index
        return idx


@dataclass(frozen=True)
class CategoricalBins:
    """One bin per known category (or class), then other, then missing."""

    categories: tuple[Hashable, ...]
    labels: tuple[str, ...] = field(init=False)
    _lookup: dict[Hashable, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(category_label(c) for c in self.categories)
        clash = RESERVED_LABELS.intersection(names)
        if clash:
            raise ValueError(f"category name(s) {sorted(clash)} are reserved bin labels")
        object.__setattr__(self, "labels", (*names, OTHER_BIN, MISSING_BIN))
        lookup: dict[Hashable, int] = {c: i for i, c in enumerate(self.categories)}
        lookup[None] = len(names) + 1
        object.__setattr__(self, "_lookup", lookup)

    @property
    def other_index(self) -> int:
        return len(self.labels) - 2

    def index(self, values: npt.ArrayLike) -> IntArray:
        lookup, other = self._lookup, self.other_index
        column = np.asarray(values, dtype=object).ravel()
        return np.fromiter(
            (lookup.get(v, other) for v in column.tolist()), dtype=np.intp, count=column.size
        )


Bins = NumericBins | CategoricalBins


@dataclass(frozen=True)
class NumericBinGroup:
    """Several numeric features binned in one vectorised step, as NumericBins would.

    The bin of v is the number of edges below it (searchsorted, side="left"); edges are
    padded with +inf, which no finite value exceeds, so features may differ in bin count.
    """

    edges: FloatArray  # features x max edges
    missing: IntArray  # per feature, the index of its missing bin

    @classmethod
    def of(cls, bins: Sequence[NumericBins]) -> "NumericBinGroup":
        width = max((len(b.edges) for b in bins), default=0)
        edges = np.full((len(bins), width), np.inf)
        for i, b in enumerate(bins):
            edges[i, : len(b.edges)] = b.edges
        return cls(edges, np.array([b.missing_index for b in bins], dtype=np.intp))

    def index(self, matrix: FloatArray) -> IntArray:
        """Bin indexes of a features x rows matrix (NaN = missing)."""
        if matrix.shape[1] <= SMALL_BATCH:  # one broadcast beats a call per feature
            below = (matrix[:, :, None] > self.edges[:, None, :]).sum(axis=2)
        else:
            below = np.empty(matrix.shape, dtype=np.intp)
            for i, row in enumerate(matrix):
                below[i] = np.searchsorted(self.edges[i], row, side="left")
        idx: IntArray = np.where(np.isnan(matrix), self.missing[:, None], below)
        return idx


def feature_bins(feature: FeatureProfile) -> Bins:
    if feature.edges is not None:
        return NumericBins(np.asarray(feature.edges, dtype=np.float64))
    categories: tuple[Hashable, ...] = tuple(feature.categories or ())
    if feature.type == "bool":
        categories = tuple(c == "true" for c in categories)
    return CategoricalBins(categories)


def counts(bins: Bins, values: npt.ArrayLike) -> IntArray:
    """How many values fall in each bin, in the order of `bins.labels`."""
    return np.bincount(bins.index(values), minlength=len(bins.labels))


def ratios(bins: Bins, values: npt.ArrayLike) -> dict[str, float]:
    """Share of values per bin label (all zero for no values)."""
    n = counts(bins, values)
    total = int(n.sum())
    return {
        label: (int(c) / total if total else 0.0) for label, c in zip(bins.labels, n, strict=True)
    }


def bucket_counts(bounds: Sequence[float], values: npt.ArrayLike) -> IntArray:
    """Histogram counts per upper bound (v <= bound), plus one for values above the last."""
    column = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(np.asarray(bounds, dtype=np.float64), column, side="left")
    return np.bincount(idx, minlength=len(bounds) + 1)
