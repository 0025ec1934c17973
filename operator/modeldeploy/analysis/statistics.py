"""Pure statistics over binned counts, as Prometheus gives them.

Every distribution function works on the last axis and broadcasts over leading ones, so one
call can judge a single window (shape ``(k,)``) or a thousand simulated windows (shape
``(1000, k)``). Results are numpy arrays of the leading shape (0-d for a single window; use
``float()``).

Conventions:

- Bins that are empty on both sides carry no information and are left out (a profile with
  200 categories must not accumulate smoothing noise from the 180 nobody sent).
- PSI needs smoothing, because an empty bin makes ``log(p/q)`` infinite. Counts get a
  Jeffreys pseudo-count of 0.5 per bin, ``(c + 0.5) / (n + 0.5 k)``, which fades as n grows;
  baseline ratios (a profile of many training rows) get an additive ``1e-4`` per bin and are
  renormalised. A bin the profile never saw that now holds 10% of traffic therefore scores
  about 0.1 * ln(0.1 / 1e-4) = 0.69 on its own: a real skew signal, not an artefact.
- KS and chi-square use raw counts. KS needs ordered bins (deciles), chi-square does not.
  KS p-values assume continuous data; on binned data they are conservative.
- Counts may be fractional (Prometheus' ``increase()`` extrapolates); sample sizes are used
  as given.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

PSEUDO_COUNT = 0.5
RATIO_EPSILON = 1e-4


def _as_float(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        raise ValueError("expected bin values along the last axis, got a scalar")
    if np.any(array < 0) or not np.all(np.isfinite(array)):
        raise ValueError("bin counts and ratios must be finite and non-negative")
    return array


def _pair(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Both sides broadcast to one shape, plus the mask of bins non-empty on either side."""
    left, right = np.broadcast_arrays(_as_float(a), _as_float(b))
    return left, right, (left > 0) | (right > 0)


def _smoothed(values: FloatArray, live: BoolArray, epsilon: float) -> FloatArray:
    bins = live.sum(axis=-1, keepdims=True)
    total = np.where(live, values, 0.0).sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(live, (values + epsilon) / (total + bins * epsilon), 1.0)


def _psi(p: FloatArray, q: FloatArray, live: BoolArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(live, (p - q) * np.log(p / q), 0.0)
    return np.asarray(terms.sum(axis=-1), dtype=np.float64)


def psi_vs_ratios(counts: npt.ArrayLike, ratios: npt.ArrayLike) -> FloatArray:
    """Population stability index of observed counts against expected (baseline) ratios."""
    observed, expected, live = _pair(counts, ratios)
    return _psi(
        _smoothed(observed, live, PSEUDO_COUNT), _smoothed(expected, live, RATIO_EPSILON), live
    )


def psi_two_sample(counts_a: npt.ArrayLike, counts_b: npt.ArrayLike) -> FloatArray:
    """Population stability index between two count vectors (symmetric in its arguments)."""
    a, b, live = _pair(counts_a, counts_b)
    return _psi(_smoothed(a, live, PSEUDO_COUNT), _smoothed(b, live, PSEUDO_COUNT), live)


@dataclass(frozen=True)
class TestResult:
    """A statistic and its p-value (arrays of the leading shape; NaN when n is zero)."""

    statistic: FloatArray
    p_value: FloatArray


def _cdf(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    total = values.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.cumsum(values, axis=-1) / total[..., None], total


def _max_gap(cdf_a: FloatArray, cdf_b: FloatArray) -> FloatArray:
    return np.asarray(np.abs(cdf_a - cdf_b).max(axis=-1), dtype=np.float64)


def kolmogorov_p_value(statistic: npt.ArrayLike, n: npt.ArrayLike) -> FloatArray:
    """Two-sided Kolmogorov p-value of D for (effective) sample size n, scipy's ``kstwo``
    as ks_2samp uses it (n rounded; NaN where n < 1). About 0.1 ms per value: callers
    judging thousands of windows ask only where the statistic could matter."""
    d, size = np.broadcast_arrays(np.asarray(statistic, np.float64), np.asarray(n, np.float64))
    rounded = np.round(size)
    valid = np.isfinite(d) & (rounded >= 1)
    p_value = np.full(d.shape, np.nan)
    p_value[valid] = stats.kstwo.sf(d[valid], rounded[valid])
    return p_value


def ks_statistic_vs_ratios(
    counts: npt.ArrayLike, ratios: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """One-sample KS statistic over ordered bins: the largest gap between the observed and
    the baseline CDF at the bin edges; returned with the sample size."""
    observed, expected = np.broadcast_arrays(_as_float(counts), _as_float(ratios))
    cdf_observed, n = _cdf(observed)
    cdf_expected, _ = _cdf(expected)
    return _max_gap(cdf_observed, cdf_expected), n


def ks_vs_ratios(counts: npt.ArrayLike, ratios: npt.ArrayLike) -> TestResult:
    """One-sample KS of counts over ordered bins against baseline ratios."""
    statistic, n = ks_statistic_vs_ratios(counts, ratios)
    return TestResult(statistic, kolmogorov_p_value(statistic, n))


def ks_two_sample(counts_a: npt.ArrayLike, counts_b: npt.ArrayLike) -> TestResult:
    """Two-sample KS from counts over shared ordered bins, as scipy's ks_2samp (asymptotic)
    computes it on the same binned data."""
    a, b = np.broadcast_arrays(_as_float(counts_a), _as_float(counts_b))
    cdf_a, n_a = _cdf(a)
    cdf_b, n_b = _cdf(b)
    statistic = _max_gap(cdf_a, cdf_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        effective_n = n_a * n_b / (n_a + n_b)
    return TestResult(statistic, kolmogorov_p_value(statistic, effective_n))


def chi_square_vs_ratios(counts: npt.ArrayLike, ratios: npt.ArrayLike) -> TestResult:
    """Pearson goodness of fit of counts to baseline ratios (renormalised over live bins).

    Counts in a bin the baseline gives zero weight make the statistic infinite (p = 0).
    """
    observed, ratio, live = _pair(counts, ratios)
    n = observed.sum(axis=-1, keepdims=True)
    ratio_total = np.where(live, ratio, 0.0).sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = n * ratio / ratio_total
        terms = np.where(live, (observed - expected) ** 2 / expected, 0.0)
    statistic = np.asarray(terms.sum(axis=-1), dtype=np.float64)
    dof = live.sum(axis=-1) - 1
    p_value = np.where(dof >= 1, stats.chi2.sf(statistic, np.maximum(dof, 1)), 1.0)
    return TestResult(statistic, np.where(n[..., 0] > 0, p_value, np.nan))


def chi_square_two_sample(counts_a: npt.ArrayLike, counts_b: npt.ArrayLike) -> TestResult:
    """Pearson chi-square test of homogeneity on the 2 x k table (no Yates correction)."""
    a, b, live = _pair(counts_a, counts_b)
    if a.ndim != 1:
        raise ValueError("chi_square_two_sample takes one pair of count vectors")
    table = np.stack([a[live], b[live]])
    if table.sum(axis=1).min() <= 0:
        return TestResult(np.asarray(np.nan), np.asarray(np.nan))
    if table.shape[1] < 2:
        return TestResult(np.asarray(0.0), np.asarray(1.0))
    result = stats.chi2_contingency(table, correction=False)
    return TestResult(np.asarray(float(result.statistic)), np.asarray(float(result.pvalue)))


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when there is nothing to divide by."""
    return numerator / denominator if denominator > 0 else math.nan


# --- Prometheus histograms -----------------------------------------------------------------


def cumulative_buckets(values: Mapping[str, float]) -> list[tuple[float, float]]:
    """`le` label (``+Inf`` included) -> cumulative count, as (upper bound, count) pairs."""
    return [(float(label), count) for label, count in values.items()]


def _coalesced(buckets: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Bounds in order and their cumulative counts, buckets of equal bound merged (``1`` and
    ``1.0``) and counts made non-decreasing (scrape races can break monotonicity), as PromQL
    does before interpolating."""
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    bounds = sorted(merged)
    counts: list[float] = []
    for bound in bounds:
        counts.append(max(merged[bound], counts[-1]) if counts else merged[bound])
    return bounds, counts


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile`` over (upper bound, cumulative count) buckets.

    Same semantics as Prometheus' bucketQuantile: NaN without a ``+Inf`` bucket, with fewer
    than two buckets or without observations; linear interpolation inside the bucket that
    holds the rank, the first bucket starting at 0 (or its bound if that is <= 0); a rank in
    the ``+Inf`` bucket gives the largest finite bound (only a lower bound of the truth).
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bounds, counts = _coalesced(buckets)
    if not bounds or bounds[-1] != math.inf or len(bounds) < 2:
        return math.nan
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    # First bucket (the +Inf one excluded) whose cumulative count reaches the rank.
    b = next((i for i, count in enumerate(counts[:-1]) if count >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, in_bucket = 0.0, counts[b]
    if b > 0:
        start = bounds[b - 1]
        in_bucket -= counts[b - 1]
        rank -= counts[b - 1]
    if in_bucket == 0:  # only for q = 0 over an empty first bucket; Go's 0/0 is NaN
        return math.nan
    return start + (bounds[b] - start) * (rank / in_bucket)


def bucket_counts(buckets: Iterable[tuple[float, float]]) -> FloatArray:
    """Per-bucket counts from (upper bound, cumulative count) buckets, in bound order."""
    _, counts = _coalesced(buckets)
    return np.diff(np.asarray([0.0, *counts], dtype=np.float64))
