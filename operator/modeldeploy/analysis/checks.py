"""Every check of one analysis round, from raw query results to verdicts.

The operator glue is three calls (the first two from `config`)::

    plan = plan_queries(config, canary=canary_ref, stable=stable_ref, window="5m")
    observations = collect(provider, plan, at=time.time())   # the only I/O
    outcome = aggregate(evaluate(config, observations))

and then `verdicts.decide` across rounds. For the stable revision after promotion (drift vs
its own profile -> Degraded), use ``config.drift_only()`` with the stable revision as
`canary` and no `stable`.

How raw data are read:

- ``model_info`` tells whether the revision is scraped at all. Without it every check of
  that revision has no data. With it, an absent series of a counter whose label values
  appear on first use (requests by code, invalid requests by reason, histogram buckets)
  means zero events, not missing data. Feature, baseline and prediction bins are
  pre-created by the runtime, so their absence is missing data.
- Features: the baseline ratio gauge defines the features and bins (the profile is the
  truth). PSI and KS compare the distribution of *present* values (the ``missing`` bin
  left out, both sides renormalised); the missing-rate check watches the ``missing`` bin
  (canary missing share minus the baseline's ``missing`` ratio, 0 when not exported).
- Bins are ordered when every label (``missing`` aside) is a number (decile index or upper
  edge, ``+Inf`` allowed); only ordered bins get KS. Other labels are categories.
- A drift check fails only when its effect size exceeds the threshold *and*, if
  ``significance`` is set, its test rejects "no drift" at that level (chi-square for PSI,
  KS for KS). Above the threshold without significance it is inconclusive: wait for data.
- Canary vs stable (predictions, confidence) needs ``min_samples`` on both sides. Without
  a stable revision (first rollout) these checks are skipped. Confidence is skipped when
  neither side observed any (models without a confidence, e.g. regressors).
- The invalid-input check compares the canary's share of invalid requests with the
  stable's on the same window (with 0 when there is no stable revision or it served none).
- Custom checks are gated on the canary's request count like every other check, and are
  reported as ``custom/<name>``.
"""

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from modeldeploy import contract
from modeldeploy.analysis import statistics
from modeldeploy.analysis.config import (
    CUSTOM_PREFIX,
    AnalysisConfig,
    CustomCheck,
    Observations,
    Track,
)
from modeldeploy.analysis.data import LabelValues, QueryResult, QueryStatus
from modeldeploy.analysis.queries import Series
from modeldeploy.analysis.verdicts import (
    CheckResult,
    Verdict,
    combine,
    no_data_check,
    threshold_check,
)

LATENCY_P95 = "latency-p95"
LATENCY_P99 = "latency-p99"
ERROR_RATE = "error-rate"
INVALID_INPUT_RATE = "invalid-input-rate"
FEATURE_PSI = "feature-psi"
FEATURE_KS = "feature-ks"
MISSING_RATE = "missing-rate"
PREDICTION_PSI = "prediction-psi"
PREDICTION_KS = "prediction-ks"
CONFIDENCE_PSI = "confidence-psi"
CONFIDENCE_KS = "confidence-ks"

# Series whose label values exist only after the first event: absent means zero.
_CREATED_ON_FIRST_USE = frozenset(
    {Series.REQUESTS, Series.INVALID, Series.LATENCY, Series.CONFIDENCE}
)


_NOT_QUERIED = QueryResult.failed(QueryStatus.NO_DATA, "not queried")


class _Reader:
    """Answers of one round, with model_info deciding what absence means."""

    def __init__(self, observations: Observations) -> None:
        self._results = observations.results

    def has(self, track: Track) -> bool:
        """Whether the round looked at this track at all (no stable on a first rollout)."""
        return (track, Series.INFO) in self._results

    def get(self, track: Track, series: Series) -> QueryResult:
        result = self._results.get((track, series), _NOT_QUERIED)
        info = self._results.get((track, Series.INFO), _NOT_QUERIED)
        if not info.ok:
            why = info.error
            if info.status is QueryStatus.NO_DATA:
                why = f"no {contract.MODEL_INFO} series: the {track.value} revision is not scraped"
            return QueryResult.failed(info.status, why)
        if result.status is QueryStatus.NO_DATA and series in _CREATED_ON_FIRST_USE:
            return QueryResult(QueryStatus.OK, {})
        return result


def evaluate(config: AnalysisConfig, observations: Observations) -> list[CheckResult]:
    """Every configured check of one round, in a stable order."""
    reader = _Reader(observations)
    requests = reader.get(Track.CANARY, Series.REQUESTS)
    request_count = sum(requests.values.values()) if requests.ok else 0.0
    results = _latency_checks(config, reader.get(Track.CANARY, Series.LATENCY))
    results += _error_checks(config, requests)
    if config.max_invalid_increase is not None:
        results.append(_invalid_input_check(config, config.max_invalid_increase, reader))
    if config.checks_features:
        results += _feature_checks(
            config,
            reader.get(Track.CANARY, Series.FEATURES),
            reader.get(Track.CANARY, Series.BASELINE),
        )
    if config.checks_predictions and reader.has(Track.STABLE):
        results += _prediction_checks(config, reader)
    for check in config.custom:
        answer = observations.custom.get(check.name, _NOT_QUERIED)
        results.append(_custom_check(config, check, answer, requests, request_count))
    return results


# --- latency and rates ----------------------------------------------------------------------


def _latency_checks(config: AnalysisConfig, latency: QueryResult) -> list[CheckResult]:
    wanted = [
        (LATENCY_P95, 0.95, config.latency_p95_ms),
        (LATENCY_P99, 0.99, config.latency_p99_ms),
    ]
    results: list[CheckResult] = []
    for name, q, limit in wanted:
        if limit is None:
            continue
        if not latency.ok:
            results.append(no_data_check(name, limit, latency.describe()))
            continue
        buckets = statistics.cumulative_buckets({k[0]: v for k, v in latency.values.items()})
        counts = statistics.bucket_counts(buckets)
        samples = _count(counts.sum())
        seconds = statistics.histogram_quantile(q, buckets)
        result = threshold_check(
            name, seconds * 1000, samples, config.min_samples, maximum=limit, unit=" ms"
        )
        # A rank in the +Inf bucket only bounds the quantile from below.
        beyond = samples > 0 and q * counts.sum() > counts[:-1].sum()
        if beyond and result.verdict is Verdict.PASS:
            result = replace(
                result,
                verdict=Verdict.INCONCLUSIVE,
                reason=f"{name}: above the largest finite bucket ({seconds:g} s); "
                f"cannot tell against max {limit:g} ms, n={samples}",
            )
        results.append(result)
    return results


def _error_checks(config: AnalysisConfig, requests: QueryResult) -> list[CheckResult]:
    if config.max_error_rate is None:
        return []
    if not requests.ok:
        return [no_data_check(ERROR_RATE, config.max_error_rate, requests.describe())]
    total = sum(requests.values.values())
    errors = sum(v for (code,), v in requests.values.items() if code.startswith("5"))
    return [
        threshold_check(
            ERROR_RATE,
            statistics.ratio(errors, total),
            _count(total),
            config.min_samples,
            maximum=config.max_error_rate,
            detail=f"{_count(errors)} 5xx",
        )
    ]


def _invalid_input_check(config: AnalysisConfig, limit: float, reader: _Reader) -> CheckResult:
    tracks = [Track.CANARY, Track.STABLE] if reader.has(Track.STABLE) else [Track.CANARY]
    shares: list[float] = []
    totals: list[float] = []
    for track in tracks:
        requests, invalid = reader.get(track, Series.REQUESTS), reader.get(track, Series.INVALID)
        broken = requests if not requests.ok else invalid
        if not broken.ok:
            return no_data_check(INVALID_INPUT_RATE, limit, f"{broken.describe()} ({track})")
        totals.append(sum(requests.values.values()))
        shares.append(statistics.ratio(sum(invalid.values.values()), totals[-1]))
    canary_share = shares[0]
    # Without a stable revision, or one that served nothing, compare with no invalid inputs.
    stable_share = shares[1] if len(shares) > 1 and not math.isnan(shares[1]) else 0.0
    return threshold_check(
        INVALID_INPUT_RATE,
        canary_share - stable_share,
        _count(totals[0]),
        config.min_samples,
        maximum=limit,
        detail=f"canary {canary_share:.3g} vs stable {stable_share:.3g}",
    )


# --- drift ----------------------------------------------------------------------------------


def _enabled(limits: Iterable[tuple[str, float | None]]) -> dict[str, float]:
    return {name: limit for name, limit in limits if limit is not None}


def _drift_check(
    name: str,
    threshold: float,
    config: AnalysisConfig,
    *,
    value: float,
    p_value: float,
    samples: int,
    subject: str,
) -> CheckResult:
    detail = f"p={p_value:.3g}" if not math.isnan(p_value) else ""
    result = threshold_check(
        name, value, samples, config.min_samples, maximum=threshold, subject=subject, detail=detail
    )
    alpha = config.significance
    if result.verdict is Verdict.FAIL and not statistics.exceeds(value, threshold, p_value, alpha):
        return replace(
            result,
            verdict=Verdict.INCONCLUSIVE,
            reason=f"{result.reason}: above the threshold but not significant "
            f"(p >= {alpha:g}); waiting for more data",
        )
    return result


def _grouped(values: Mapping[LabelValues, float]) -> dict[str, dict[str, float]]:
    """(subject, bin) -> value as subject -> bin -> value (negatives clipped to 0)."""
    grouped: dict[str, dict[str, float]] = {}
    for (subject, bin_label), value in values.items():
        grouped.setdefault(subject, {})[bin_label] = max(0.0, value)
    return grouped


def _bin_order(labels: Iterable[str]) -> tuple[list[str], bool]:
    """Labels in bin order, and whether that order is numeric (meaningful for KS)."""
    labels = sorted(set(labels))
    try:
        keys = [float(label) for label in labels]
    except ValueError:
        return labels, False
    if any(math.isnan(key) for key in keys):
        return labels, False
    return [label for _, label in sorted(zip(keys, labels, strict=True))], True


@dataclass(frozen=True)
class _DistributionTests:
    """PSI (judged with the chi-square test's p-value) and KS of observed bin counts against
    a reference: the training profile's ratios, or the stable revision's counts."""

    psi: Callable[[statistics.FloatArray, statistics.FloatArray], statistics.FloatArray]
    chi_square: Callable[[statistics.FloatArray, statistics.FloatArray], statistics.TestResult]
    ks: Callable[[statistics.FloatArray, statistics.FloatArray], statistics.TestResult]


VS_PROFILE = _DistributionTests(
    statistics.psi_vs_ratios, statistics.chi_square_vs_ratios, statistics.ks_vs_ratios
)
VS_STABLE = _DistributionTests(
    statistics.psi_two_sample, statistics.chi_square_two_sample, statistics.ks_two_sample
)


def _distribution_checks(
    out: dict[str, list[CheckResult]],
    wanted: Mapping[str, float],
    config: AnalysisConfig,
    *,
    names: tuple[str, str],
    tests: _DistributionTests,
    observed: statistics.FloatArray,
    reference: statistics.FloatArray,
    ordered: bool,
    samples: int,
    subject: str,
) -> None:
    """Appends the wanted PSI and (over ordered bins only) KS checks of one subject."""
    psi_name, ks_name = names
    if psi_name in wanted:
        psi = float(tests.psi(observed, reference))
        p = float(tests.chi_square(observed, reference).p_value)
        out[psi_name].append(
            _drift_check(
                psi_name,
                wanted[psi_name],
                config,
                value=psi,
                p_value=p,
                samples=samples,
                subject=subject,
            )
        )
    if ks_name in wanted and ordered:
        ks = tests.ks(observed, reference)
        out[ks_name].append(
            _drift_check(
                ks_name,
                wanted[ks_name],
                config,
                value=float(ks.statistic),
                p_value=float(ks.p_value),
                samples=samples,
                subject=subject,
            )
        )


def _aligned(
    left: Mapping[str, float], right: Mapping[str, float]
) -> tuple[statistics.FloatArray, statistics.FloatArray, bool]:
    labels, ordered = _bin_order(
        label for label in (*left, *right) if label != contract.MISSING_BIN
    )
    return (
        np.asarray([left.get(label, 0.0) for label in labels], dtype=np.float64),
        np.asarray([right.get(label, 0.0) for label in labels], dtype=np.float64),
        ordered,
    )


def _feature_checks(
    config: AnalysisConfig, features: QueryResult, baseline: QueryResult
) -> list[CheckResult]:
    wanted = _enabled(
        [
            (FEATURE_PSI, config.feature_psi),
            (FEATURE_KS, config.feature_ks),
            (MISSING_RATE, config.max_missing_increase),
        ]
    )
    broken = features if not features.ok else baseline
    if not broken.ok:
        why = broken.describe() + (" (training-profile ratios)" if broken is baseline else "")
        return [no_data_check(name, limit, why) for name, limit in wanted.items()]
    observed, profile = _grouped(features.values), _grouped(baseline.values)
    per_feature: dict[str, list[CheckResult]] = {name: [] for name in wanted}
    for feature in sorted(set(profile) - config.ignored_features):
        counts = observed.get(feature)
        if counts is None:
            for name, limit in wanted.items():
                per_feature[name].append(
                    replace(
                        no_data_check(name, limit, f"no bins of feature {feature}"), subject=feature
                    )
                )
            continue
        present, expected, ordered = _aligned(counts, profile[feature])
        samples = _count(present.sum())
        _distribution_checks(
            per_feature, wanted, config, names=(FEATURE_PSI, FEATURE_KS), tests=VS_PROFILE,
            observed=present, reference=expected, ordered=ordered, samples=samples,
            subject=feature,
        )  # fmt: skip
        if MISSING_RATE in wanted:
            missing = counts.get(contract.MISSING_BIN, 0.0)
            total = missing + float(present.sum())
            baseline_rate = profile[feature].get(contract.MISSING_BIN, 0.0)
            increase = statistics.ratio(missing, total) - baseline_rate
            per_feature[MISSING_RATE].append(
                threshold_check(
                    MISSING_RATE,
                    increase,
                    _count(total),
                    config.min_samples,
                    maximum=wanted[MISSING_RATE],
                    subject=feature,
                    detail=f"baseline {baseline_rate:.3g}",
                )
            )
    return [combine(name, results) for name, results in per_feature.items() if results]


def _prediction_checks(config: AnalysisConfig, reader: _Reader) -> list[CheckResult]:
    results: list[CheckResult] = []
    predictions = _two_sample_checks(
        config,
        (PREDICTION_PSI, PREDICTION_KS),
        reader.get(Track.CANARY, Series.PREDICTIONS),
        reader.get(Track.STABLE, Series.PREDICTIONS),
        _grouped,
    )
    results += predictions
    canary = reader.get(Track.CANARY, Series.CONFIDENCE)
    stable = reader.get(Track.STABLE, Series.CONFIDENCE)
    if canary.ok and stable.ok and not (_any_observed(canary) or _any_observed(stable)):
        return results  # this model reports no confidence
    results += _two_sample_checks(
        config, (CONFIDENCE_PSI, CONFIDENCE_KS), canary, stable, _confidence_bins
    )
    return results


def _any_observed(histogram: QueryResult) -> bool:
    return any(v > 0 for v in histogram.values.values())


def _confidence_bins(values: Mapping[LabelValues, float]) -> dict[str, dict[str, float]]:
    """Cumulative `le` buckets as per-bucket counts, labelled by their upper bound."""
    buckets = statistics.cumulative_buckets({k[0]: v for k, v in values.items()})
    bounds = sorted({bound for bound, _ in buckets})
    counts = statistics.bucket_counts(buckets)
    return {"confidence": {repr(b): float(c) for b, c in zip(bounds, counts, strict=True)}}


def _two_sample_checks(
    config: AnalysisConfig,
    names: tuple[str, str],
    canary: QueryResult,
    stable: QueryResult,
    to_bins: Callable[[Mapping[LabelValues, float]], dict[str, dict[str, float]]],
) -> list[CheckResult]:
    psi_name, ks_name = names
    wanted = _enabled([(psi_name, config.prediction_psi), (ks_name, config.prediction_ks)])
    broken = canary if not canary.ok else stable
    if not broken.ok:
        why = broken.describe() + (" (stable)" if broken is stable else "")
        return [no_data_check(name, limit, why) for name, limit in wanted.items()]
    canary_bins, stable_bins = to_bins(canary.values), to_bins(stable.values)
    per_subject: dict[str, list[CheckResult]] = {name: [] for name in wanted}
    for subject in sorted({*canary_bins, *stable_bins}):
        a, b, ordered = _aligned(canary_bins.get(subject, {}), stable_bins.get(subject, {}))
        samples = _count(min(a.sum(), b.sum()))
        _distribution_checks(
            per_subject, wanted, config, names=names, tests=VS_STABLE,
            observed=a, reference=b, ordered=ordered, samples=samples, subject=subject,
        )  # fmt: skip
    return [combine(name, results) for name, results in per_subject.items() if results]


# --- custom ---------------------------------------------------------------------------------


def _custom_check(
    config: AnalysisConfig,
    check: CustomCheck,
    answer: QueryResult,
    requests: QueryResult,
    request_count: float,
) -> CheckResult:
    name = CUSTOM_PREFIX + check.name
    threshold = check.maximum if check.maximum is not None else check.minimum
    assert threshold is not None  # CustomCheck insists on a bound
    broken = answer if not answer.ok else requests
    if not broken.ok:
        why = broken.describe() + (" (canary requests)" if broken is requests else "")
        return no_data_check(name, threshold, why)
    (value,) = answer.values.values()  # keyed by no label: exactly one value
    return threshold_check(
        name,
        value,
        _count(request_count),
        config.min_samples,
        minimum=check.minimum,
        maximum=check.maximum,
    )


def _count(value: float) -> int:
    """Sample counts from increase() are fractional; report them as whole observations."""
    return round(value) if math.isfinite(value) else 0
