"""A canary rollout of a 20-feature model as the analysis sees it, by simulation: the binned
counts both revisions export every interval, drawn as multinomials (exact for rows drawn
independently from the distributions below), vectorised over many rollouts. Used by
`bench/bench_detection.py` to compare detection rules on the same data.

The model (per rollout, so that the training profile's own sampling error is part of it):

- 14 numeric features N(0, 1), binned at the deciles of a training sample of
  `TRAINING_ROWS` rows: the profile says 10% per bin, the true masses of those bins are the
  spacings of the sample deciles (Dirichlet, as for uniform order statistics).
- 1 nullable numeric feature: the same with 10% missing (the profile's missing share is
  that of its training sample).
- 4 sparse categoricals of 40 to 50 categories with Zipf shares (s = 1.3: many below 1%)
  and 1% beyond the vocabulary ("other"); the profile holds the training sample's shares.
- 1 boolean (30% true).
- Predictions: 10 classes, confidence in the runtime's buckets, the same distribution for
  both revisions (a change of inputs is not propagated to the outputs: detection here comes
  from the input checks alone). Latency: log-normal, median 40 ms, sigma 0.5 (p95 91 ms),
  in the runtime's buckets; 0.1% 5xx and 0.5% invalid requests on both revisions.

A `Change` alters the canary only. `observations` shapes one rollout's counts as the
Prometheus answers of `checks.evaluate` (keyed by (Track, Series), label-value tuples).
`feature_rows` draws raw values consistent with a window's bins, for detectors that need
rows (within a bin, from the true distribution conditioned on the bin: an exact sample).

One rate test looked at after every request (the strictest monitoring: the operator looks
once a round): `rate_boundary` is the fewest events at each request count at which the
test rejects; `crossing_probability` the exact chance that a stream at a given rate ever
reaches it within the horizon (its false-alarm rate at a rate within the limit), and
`first_crossings` the request at which simulated streams do (samples to detect).
"""

from dataclasses import dataclass, fields
from typing import Literal, Self

import numpy as np
import numpy.typing as npt
from scipy import stats

from modeldeploy import contract
from modeldeploy.analysis import sequential
from modeldeploy.analysis.config import Observations, QueryKey, Track
from modeldeploy.analysis.data import LabelValues, QueryResult, QueryStatus
from modeldeploy.analysis.queries import Series

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

INTERVAL_SECONDS = 30
TRAINING_ROWS = 100_000
NUMERIC_FEATURES = 14
CATEGORY_COUNTS = (40, 44, 47, 50)
ZIPF_EXPONENT = 1.3
OTHER_SHARE = 0.01
NULLABLE_MISSING = 0.10
BOOLEAN_TRUE = 0.30
CLASSES = 10
LATENCY_MEDIAN_S = 0.040
LATENCY_SIGMA = 0.5
ERROR_SHARE = 0.001
INVALID_SHARE = 0.005
CONSTANT_VALUE = 0.1  # what a "leaky" feature sends: a value inside one decile bin
CODES = ("200", "400", "500")  # ok, invalid input, server error
INVALID_REASON = "schema"
PREDICTION_OUTPUT = "prediction"

SHIFTED = "num-00"  # the numeric feature a numeric change alters
NULLABLE = "nullable"
SPARSE = "cat-3"  # the categorical a category shift alters (50 categories)


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Literal["numeric", "categorical"]
    labels: tuple[str, ...]  # bin labels in the runtime's order (missing last)


def _numeric(name: str) -> Feature:
    labels = (*(f"{i:02d}" for i in range(10)), contract.MISSING_BIN)
    return Feature(name, "numeric", labels)


def _categorical(name: str, categories: tuple[str, ...]) -> Feature:
    return Feature(name, "categorical", (*categories, contract.OTHER_BIN, contract.MISSING_BIN))


FEATURES: tuple[Feature, ...] = (
    *(_numeric(f"num-{i:02d}") for i in range(NUMERIC_FEATURES)),
    _numeric(NULLABLE),
    *(
        _categorical(f"cat-{i}", tuple(f"c{j:02d}" for j in range(k)))
        for i, k in enumerate(CATEGORY_COUNTS)
    ),
    _categorical("flag", ("false", "true")),
)
MAX_BINS = max(len(f.labels) for f in FEATURES)
NUMERIC_INDEX = tuple(i for i, f in enumerate(FEATURES) if f.kind == "numeric")
CLASS_LABELS = (*(f"class-{i}" for i in range(CLASSES)), contract.OTHER_BIN, contract.MISSING_BIN)
LATENCY_BOUNDS = (*contract.LATENCY_BUCKETS, float("inf"))
CONFIDENCE_BOUNDS = (*contract.CONFIDENCE_BUCKETS, float("inf"))


@dataclass(frozen=True)
class Change:
    """What the canary does differently (none of it: a healthy canary)."""

    name: str = "none"
    shift_sd: float = 0.0  # mean shift of SHIFTED, in training sd
    scale: float = 1.0  # sd factor of SHIFTED
    constant: bool = False  # SHIFTED always sends CONSTANT_VALUE
    extra_missing: float = 0.0  # added to NULLABLE's missing share
    category_shift: float = 0.0  # mass moved from SPARSE's top category to its 10th
    latency_factor: float = 1.0  # every latency multiplied (p95 too)


@dataclass(frozen=True)
class World:
    """Per rollout (leading axis): the training profile and the true serving distributions.
    Feature arrays are (rollouts, features, MAX_BINS), zero-padded past a feature's bins."""

    change: Change
    baseline: FloatArray  # the profile's ratios
    canary: FloatArray  # true bin masses of the canary's inputs
    edges: FloatArray  # (rollouts, numeric features, 9) decile edges of the profile
    predictions: FloatArray  # (classes + 2,) both revisions
    confidence: FloatArray  # (buckets,) both revisions
    latency: FloatArray  # (2 tracks, buckets): canary, stable

    @property
    def rollouts(self) -> int:
        return int(self.baseline.shape[0])


def _zipf(k: int) -> FloatArray:
    weights = 1.0 / np.arange(1, k + 1) ** ZIPF_EXPONENT
    return np.asarray(weights / weights.sum() * (1 - OTHER_SHARE), dtype=np.float64)


def _normal_masses(edges: FloatArray, loc: float = 0.0, scale: float = 1.0) -> FloatArray:
    cdf = stats.norm.cdf((edges - loc) / scale)
    ones = np.ones((*edges.shape[:-1], 1))
    return np.asarray(np.diff(np.concatenate([0 * ones, cdf, ones], axis=-1)), dtype=np.float64)


def _latency_masses(factor: float) -> FloatArray:
    bounds = np.asarray(contract.LATENCY_BUCKETS)
    cdf = stats.norm.cdf(np.log(bounds / (LATENCY_MEDIAN_S * factor)) / LATENCY_SIGMA)
    return np.asarray(np.diff(np.concatenate([[0.0], cdf, [1.0]])), dtype=np.float64)


def make_world(rng: np.random.Generator, rollouts: int, change: Change = Change()) -> World:
    r = rollouts
    baseline = np.zeros((r, len(FEATURES), MAX_BINS))
    canary = np.zeros_like(baseline)
    edges = np.zeros((r, len(NUMERIC_INDEX), 9))
    for i, feature in enumerate(FEATURES):
        if feature.kind == "numeric":
            missing = NULLABLE_MISSING if feature.name == NULLABLE else 0.0
            profile_missing = rng.binomial(TRAINING_ROWS, missing, r) / TRAINING_ROWS
            present_rows = round(TRAINING_ROWS * (1 - missing))
            true_masses = rng.dirichlet(np.full(10, present_rows / 10), r)
            cut = stats.norm.ppf(np.cumsum(true_masses, axis=1)[:, :9])
            edges[:, NUMERIC_INDEX.index(i)] = cut
            baseline[:, i, :10] = (1 - profile_missing[:, None]) / 10
            baseline[:, i, 10] = profile_missing
            if feature.name == SHIFTED and change.constant:
                masses = np.zeros((r, 10))  # the runtime's bin: the number of edges below
                masses[np.arange(r), (cut < CONSTANT_VALUE).sum(axis=1)] = 1.0
            elif feature.name == SHIFTED:
                masses = _normal_masses(cut, change.shift_sd, change.scale)
            else:
                masses = true_masses
            served_missing = missing + (change.extra_missing if feature.name == NULLABLE else 0.0)
            canary[:, i, :10] = masses * (1 - served_missing)
            canary[:, i, 10] = served_missing
        else:
            k = len(feature.labels) - 2
            shares = np.array([1 - BOOLEAN_TRUE, BOOLEAN_TRUE]) if k == 2 else _zipf(k)
            true = np.concatenate([shares, [1 - shares.sum()], [0.0]])
            baseline[:, i, : k + 2] = rng.multinomial(TRAINING_ROWS, true, r) / TRAINING_ROWS
            served = true.copy()
            if feature.name == SPARSE:
                served[0] -= change.category_shift
                served[9] += change.category_shift
            canary[:, i, : k + 2] = served
    canary /= canary.sum(axis=-1, keepdims=True)
    classes = np.concatenate([_zipf(CLASSES) / (1 - OTHER_SHARE), [0.0, 0.0]])
    confidence = np.diff(np.concatenate([[0.0], stats.beta.cdf(contract.CONFIDENCE_BUCKETS, 5, 2)]))
    confidence = np.concatenate([confidence, [0.0]])
    latency = np.stack([_latency_masses(change.latency_factor), _latency_masses(1.0)])
    return World(change, baseline, canary, edges, classes, confidence / confidence.sum(), latency)


@dataclass(frozen=True)
class Counts:
    """Event counts of both revisions (leading axis: rollouts), as increments or sums."""

    codes: IntArray  # (rollouts, 2 tracks, 3 codes): canary, stable x CODES
    features: IntArray  # (rollouts, features, MAX_BINS), canary only
    predictions: IntArray  # (rollouts, 2, classes + 2)
    confidence: IntArray  # (rollouts, 2, buckets): per bucket, not cumulative
    latency: IntArray  # (rollouts, 2, buckets): per bucket

    def __add__(self, other: Self) -> Self:
        return type(self)(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Self) -> Self:
        return type(self)(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    @classmethod
    def zeros(cls, rollouts: int) -> Self:
        return cls(
            np.zeros((rollouts, 2, len(CODES)), np.int64),
            np.zeros((rollouts, len(FEATURES), MAX_BINS), np.int64),
            np.zeros((rollouts, 2, len(CLASS_LABELS)), np.int64),
            np.zeros((rollouts, 2, len(CONFIDENCE_BOUNDS)), np.int64),
            np.zeros((rollouts, 2, len(LATENCY_BOUNDS)), np.int64),
        )

    @property
    def canary_requests(self) -> IntArray:
        return np.asarray(self.codes[:, 0].sum(axis=-1), dtype=np.int64)


def draw_interval(
    rng: np.random.Generator, world: World, rate: float, canary_share: float
) -> Counts:
    """One interval's increments at `rate` requests/s, `canary_share` of them to the canary;
    one row per request, invalid requests (400) counted as requests only."""
    r = world.rollouts
    mean = rate * INTERVAL_SECONDS * np.array([canary_share, 1 - canary_share])
    requests = rng.poisson(mean, (r, 2))
    code_shares = np.array([1 - INVALID_SHARE - ERROR_SHARE, INVALID_SHARE, ERROR_SHARE])
    codes = rng.multinomial(requests, code_shares)
    rows = codes[..., 0] + codes[..., 2]
    return Counts(
        codes,
        rng.multinomial(rows[:, :1], world.canary),
        rng.multinomial(rows, world.predictions),
        rng.multinomial(rows, world.confidence),
        rng.multinomial(requests, world.latency),
    )


def _cumulative(bounds: tuple[float, ...], counts: IntArray) -> dict[LabelValues, float]:
    totals = np.cumsum(counts).tolist()
    return {
        (repr(b) if np.isfinite(b) else "+Inf",): float(c)
        for b, c in zip(bounds, totals, strict=True)
    }


def _ok(values: dict[LabelValues, float]) -> QueryResult:
    return QueryResult(QueryStatus.OK, values)


def observations(world: World, counts: Counts, rollout: int) -> Observations:
    """One rollout's counts (a window's or cumulative) and profile as `collect` would
    return them from Prometheus for the plan of the spec's checks."""
    r = rollout
    results: dict[QueryKey, QueryResult] = {}
    for t, track in enumerate((Track.CANARY, Track.STABLE)):
        codes = counts.codes[r, t].tolist()
        results[(track, Series.INFO)] = _ok({(): 1.0})
        results[(track, Series.REQUESTS)] = _ok(
            {(code,): float(n) for code, n in zip(CODES, codes, strict=True)}
        )
        results[(track, Series.INVALID)] = _ok({(INVALID_REASON,): float(codes[1])})
        results[(track, Series.PREDICTIONS)] = _ok(
            {
                (PREDICTION_OUTPUT, label): float(n)
                for label, n in zip(CLASS_LABELS, counts.predictions[r, t].tolist(), strict=True)
            }
        )
        results[(track, Series.CONFIDENCE)] = _ok(
            _cumulative(CONFIDENCE_BOUNDS, counts.confidence[r, t])
        )
    results[(Track.CANARY, Series.LATENCY)] = _ok(_cumulative(LATENCY_BOUNDS, counts.latency[r, 0]))
    observed: dict[LabelValues, float] = {}
    profile: dict[LabelValues, float] = {}
    for i, feature in enumerate(FEATURES):
        k = len(feature.labels)
        for label, n, ratio in zip(
            feature.labels,
            counts.features[r, i, :k].tolist(),
            world.baseline[r, i, :k].tolist(),
            strict=True,
        ):
            observed[(feature.name, label)] = float(n)
            profile[(feature.name, label)] = ratio
    results[(Track.CANARY, Series.FEATURES)] = _ok(observed)
    results[(Track.CANARY, Series.BASELINE)] = _ok(profile)
    return Observations(results)


def feature_rows(
    rng: np.random.Generator, world: World, rollout: int, counts: IntArray, *, training: bool
) -> dict[str, npt.NDArray[np.generic]]:
    """Raw values consistent with `counts` (features x MAX_BINS) of one rollout: numeric
    values drawn within their bin from the true distribution (the training one, N(0, 1),
    when `training`; else the canary's), NaN for missing; categories by label, None for
    missing, "other" for the bin of unseen categories."""
    columns: dict[str, npt.NDArray[np.generic]] = {}
    change = Change() if training else world.change
    for i, feature in enumerate(FEATURES):
        k = len(feature.labels)
        per_bin = counts[i, :k]
        if feature.kind == "categorical":
            values = np.repeat(np.array(feature.labels, dtype=object), per_bin)
            values[values == contract.MISSING_BIN] = None
            columns[feature.name] = values
            continue
        altered = feature.name == SHIFTED
        if altered and change.constant:
            columns[feature.name] = np.full(int(per_bin[:10].sum()), CONSTANT_VALUE)
        else:
            loc, scale = (change.shift_sd, change.scale) if altered else (0.0, 1.0)
            edges = world.edges[rollout, NUMERIC_INDEX.index(i)]
            cdf = stats.norm.cdf((np.concatenate([[-np.inf], edges, [np.inf]]) - loc) / scale)
            bin_of = np.repeat(np.arange(10), per_bin[:10])
            u = rng.uniform(cdf[bin_of], cdf[bin_of + 1])
            columns[feature.name] = loc + scale * stats.norm.ppf(u)
        missing = np.full(int(per_bin[10]), np.nan)
        columns[feature.name] = np.concatenate([columns[feature.name], missing])
    return columns


# --- one rate test, request by request --------------------------------------------------------


def single_rate_prior(p0: float) -> tuple[sequential.BetaComponent, ...]:
    """The rate test's prior before its ladder: one beta prior about p0 (for comparison)."""
    c = sequential.rate_concentration(p0)
    return (sequential.BetaComponent(1.0, c * p0, c * (1 - p0)),)


def rate_boundary(
    p0: float,
    threshold: float,
    horizon: int,
    prior: tuple[sequential.BetaComponent, ...] | None = None,
) -> IntArray:
    """For n = 1..horizon trials, the fewest events whose log e-value against "rate at most
    p0" reaches `threshold` (n + 1 where none does). The e-value grows with the events at a
    fixed number of trials, so the test rejects at n exactly when the events reach it."""
    n = np.arange(1, horizon + 1)
    concentration = sequential.rate_concentration(p0)

    def rejects(k: IntArray) -> npt.NDArray[np.bool_]:
        log_e = sequential.log_e_rate_above(np.minimum(k, n), n, p0, concentration, prior)
        return np.asarray((k <= n) & (log_e >= threshold))

    low, high = np.zeros_like(n), n + 1  # invariant: low does not reject, high does (or n + 1)
    while np.any(high - low > 1):
        mid = (low + high) // 2
        hit = rejects(mid)
        low, high = np.where(hit, low, mid), np.where(hit, mid, high)
    return np.asarray(high, dtype=np.int64)


def crossing_probability(boundary: IntArray, p: float) -> float:
    """The exact chance that the events among the first n trials (each an event with
    chance p) reach boundary[n - 1] for some n within the boundary's horizon."""
    horizon = len(boundary)
    alive = np.zeros(horizon + 2)  # P(k events so far and no crossing yet)
    alive[0] = 1.0
    crossed = 0.0
    for n in range(1, horizon + 1):
        alive[1:] = alive[1:] * (1 - p) + alive[:-1] * p
        alive[0] *= 1 - p
        crossed += float(alive[boundary[n - 1] :].sum())
        alive[boundary[n - 1] :] = 0.0
    return crossed


def first_crossings(rng: np.random.Generator, boundary: IntArray, p: float, runs: int) -> IntArray:
    """Per simulated stream of trials at rate p, the trial at which its events first reach
    the boundary (0: not within the boundary's horizon)."""
    events = (rng.random((runs, len(boundary))) < p).cumsum(axis=1)
    hit = events >= boundary
    return np.asarray(np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0), dtype=np.int64)
