"""Every check of one analysis round, from raw query results to verdicts.

    outcome = aggregate(evaluate(config, observations))

How raw data are read:

- Counts are cumulative: everything the revision (and the stable, over the same period)
  did since the revision's first round, so that each check is one sequential test that
  grows with every round (`sequential`). The stable after bakeTime is judged on a sliding
  window instead (a monitor for Degraded, not a test that stops).
- ``model_info`` tells whether the revision is scraped at all. Without it every check of
  that revision has no data. With it, an absent series of a counter whose label values
  appear on first use (requests by code, invalid requests by reason, histogram buckets)
  means zero events, not missing data. Feature, baseline and prediction bins are
  pre-created by the runtime, so their absence is missing data.
- Features: the baseline ratio gauge defines the features and bins (the profile is the
  truth). The distribution of *present* values is compared (the ``missing`` bin left out,
  both sides renormalised); the missing-rate check watches the ``missing`` bin.
- Bins are ordered when every label (``missing`` aside) is a number (decile index or upper
  edge, ``+Inf`` allowed); KS and Wasserstein tolerances apply only to ordered bins.
  Categories whose training share is below 1% are pooled into one bin.

Verdicts. One false-positive budget (``false_positive_rate``) is split evenly across the
round's tests; as the tests are anytime-valid, it holds over all rounds together. A check
**fails** only with evidence (its e-value reached 1 / its share of the budget) *and* a
practically significant effect (over every tolerance set: PSI, KL, JS, KS, Wasserstein for
distributions; the limit itself for latency and error rates, whose null hypothesis is
"within the limit"); a failure is final (the rollout rolls back at once). A check
**passes** when a confidence sequence shows the effect within tolerance (at a 5% risk
shared by all checks). Otherwise it is inconclusive: thin data is "not yet", never a pass.
``min_samples`` is an optional floor under both. A feature with values in fewer than 10% of
the canary's requests drops out of the round (reported, not blocking a pass). Custom
checks are plain bounds on the current value (``failureLimit`` applies to them).

Degenerate features: a feature whose served values are all missing, or all in one bin
(constant), where training would have done that only by a tiny chance, is named as such at
the head of its checks' reasons ("feature tenure_months is constant at serving ..."), rather
than left to a large PSI; it does not drop out of the round (an all-missing one does when
the missing-rate check judges it), so it cannot let a round pass unjudged. A
feature that leaked into the training data (known only after the outcome) typically shows
this way at serving: not known yet, so missing or a default. ``modeldeploy profile`` flags
leakage in the training data itself.

Golden answers (`golden`): a count of the revision's replayed golden requests that did not
match, not a test (no share of the budget; `analysis/golden.py`).

Holdout accuracy (`holdout-accuracy`, the stable after bakeTime with `accuracy` set): its
share of wrong answers on labelled predictions against the rate its profile's holdout
accuracy implies, plus `max_drop` (a one-sample rate test, as latency's); skipped when the
runtime exports no holdout accuracy (a profile built without one).

Canary vs stable (predictions, confidence, invalid inputs) needs a stable revision; without
one (first rollout) those checks are skipped, and invalid inputs compare with none.
Confidence is skipped when neither side observed any (models without a confidence).

Fallback answers (`fallback-rate`): the canary's share of rows answered by its
low-confidence fallback against the stable's, only when the canary's model declares one
(its `answered_rows_total{answered_by="fallback"}` series exists, at 0 from the start) and a
stable exists; a stable declaring none falls back never (compared with 0). No fallback rows
on either side is no evidence of an increase: the bound shrinks with the rows, so it passes.
"""

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from modeldeploy import contract
from modeldeploy.analysis import sequential, statistics
from modeldeploy.analysis.config import (
    CUSTOM_PREFIX,
    AccuracyLimits,
    AnalysisConfig,
    CustomCheck,
    EffectLimits,
    Observations,
    Track,
)
from modeldeploy.analysis.data import LabelValues, QueryResult, QueryStatus
from modeldeploy.analysis.golden import golden_check
from modeldeploy.analysis.queries import Series
from modeldeploy.analysis.verdicts import (
    CheckResult,
    Verdict,
    combine,
    no_data_check,
    threshold_check,
    too_few,
)

LATENCY_P95 = "latency-p95"
LATENCY_P99 = "latency-p99"
ERROR_RATE = "error-rate"
INVALID_INPUT_RATE = "invalid-input-rate"
FEATURE_PSI = "feature-psi"
MISSING_RATE = "missing-rate"
PREDICTION_PSI = "prediction-psi"
CONFIDENCE_PSI = "confidence-psi"
ACCURACY = "accuracy"
HOLDOUT_ACCURACY = "holdout-accuracy"
FALLBACK_RATE = "fallback-rate"

PASS_RISK = 0.05
"""Chance that a pass vouches wrongly for some check (a change over tolerance promoted),
shared by all checks of the round."""
PASS_PRIOR_FACTOR = 4.0
"""The confidence set behind a pass is centred on the training ratios 4 times as tightly as
the test's mixture: healthy canaries sit there, and it passes them with ~15% fewer samples
(any fixed prior keeps the set valid)."""
DROP_OUT_SHARE = 0.1
"""A feature with values in fewer than this share of the requests drops out of the round."""
DEGENERATE_CHANCE = 1e-3
"""A feature is called degenerate at serving only when training data would be that
degenerate with at most this chance: a handful of values is never "constant" by bad luck."""

# Series whose label values exist only after the first event: absent means zero.
_CREATED_ON_FIRST_USE = frozenset(
    {Series.REQUESTS, Series.INVALID, Series.LATENCY, Series.CONFIDENCE}
)


_NOT_QUERIED = QueryResult.failed(QueryStatus.NO_DATA, "not queried")


class _Reader:
    """Answers of one round, with model_info deciding what absence means."""

    def __init__(self, observations: Observations) -> None:
        self._results = observations.results

    def scraped(self, track: Track) -> QueryResult:
        """The track's model_info answer (not ok: nothing of it can be read)."""
        return self._results.get((track, Series.INFO), _NOT_QUERIED)

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


@dataclass(frozen=True)
class Levels:
    """One test's share of the round's budgets."""

    fail: float  # of false_positive_rate
    passing: float  # of PASS_RISK
    floor: int  # min_samples

    @property
    def needed(self) -> float:
        """The e-value a failure needs."""
        return 1 / self.fail


Test = Callable[[Levels], CheckResult]


def _test(verdict: Callable[..., CheckResult], /, **arguments: Any) -> Test:
    """A test waiting for its share of the budget (known once every test is counted)."""
    return lambda levels: verdict(levels, **arguments)


def evaluate(config: AnalysisConfig, observations: Observations) -> list[CheckResult]:
    """Every configured check of one round, in a stable order."""
    reader = _Reader(observations)
    requests = reader.get(Track.CANARY, Series.REQUESTS)
    request_count = sum(requests.values.values()) if requests.ok else 0.0
    # (check name, tests of its subjects): the budget is split over every test.
    groups: list[tuple[str, list[Test]]] = []
    groups += _latency_tests(config, reader.get(Track.CANARY, Series.LATENCY))
    groups += _error_tests(config, requests)
    if config.max_invalid_increase is not None:
        invalid = _invalid_input_test(config.max_invalid_increase, reader)
        groups.append((INVALID_INPUT_RATE, [invalid]))
    if config.checks_features:
        groups += _feature_tests(
            config,
            reader.get(Track.CANARY, Series.FEATURES),
            reader.get(Track.CANARY, Series.BASELINE),
            request_count,
        )
    if config.checks_predictions and reader.has(Track.STABLE):
        groups += _prediction_tests(config, reader)
    if config.accuracy is not None and reader.has(Track.STABLE):
        groups.append((ACCURACY, [_accuracy_test(config.accuracy, reader)]))
    if config.holdout_accuracy is not None:
        holdout = _holdout_accuracy_test(config.holdout_accuracy, reader)
        groups += [(HOLDOUT_ACCURACY, [holdout])] if holdout is not None else []
    if config.max_fallback_increase is not None and reader.has(Track.STABLE):
        fallback = _fallback_test(config.max_fallback_increase, reader)
        if fallback is not None:
            groups.append((FALLBACK_RATE, [fallback]))
    count = max(1, sum(len(tests) for _, tests in groups))
    levels = Levels(config.false_positive_rate / count, PASS_RISK / count, config.min_samples)
    results = [combine(name, [test(levels) for test in tests]) for name, tests in groups if tests]
    if config.golden_max_mismatches is not None:  # a count, not a test: no share of the budget
        golden = reader.get(Track.CANARY, Series.GOLDEN)
        results.append(golden_check(config.golden_max_mismatches, golden))
    for check in config.custom:
        answer = observations.custom.get(check.name, _NOT_QUERIED)
        results.append(_custom_check(config, check, answer, requests, request_count))
    return results


def _missing(name: str, limit: float, why: str, subject: str = "") -> Test:
    result = replace(no_data_check(name, limit, why), subject=subject)
    return lambda _: result


# --- verdicts of one test -------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _e(log_e: float) -> str:
    return f"e={math.exp(min(log_e, 700)):.3g}" if log_e < 700 else "e>1e300"


def _below_floor(
    levels: Levels, name: str, *, value: float | None, threshold: float, samples: int, subject: str
) -> CheckResult | None:
    thin = too_few(name, value, threshold, samples=samples, floor=levels.floor, subject=subject)
    return replace(thin, sequential=True) if thin is not None else None


def distribution_verdict(
    levels: Levels,
    name: str,
    *,
    limits: EffectLimits,
    observed: statistics.FloatArray,
    reference: statistics.FloatArray,
    reference_is_counts: bool,
    ordered: bool,
    subject: str,
    blocking: bool = True,
) -> CheckResult:
    """A distribution against a reference (training ratios, or the stable's counts)."""
    pooled = sequential.pool_rare(
        observed, reference, ordered=ordered, reference_is_counts=reference_is_counts
    )
    x, ref = pooled.counts, pooled.reference
    tolerances = limits.usable(ordered)
    headline = limits.headline
    # The API always sets a PSI tolerance, and PSI applies to categories too.
    assert headline is not None, "a distribution check needs a PSI tolerance"
    assert tolerances, "a distribution check needs a PSI tolerance"
    effect_name, threshold = headline
    samples = round(float(x.sum()))
    measured = sequential.effects(x, ref, reference_is_counts=reference_is_counts)
    fx = {e: float(v) for e, v in measured.items()}
    value = fx[effect_name]
    thin = _below_floor(
        levels, name, value=value, threshold=threshold, samples=samples, subject=subject
    )
    if thin is not None:
        return replace(thin, blocking=blocking)
    tightest = min(tolerances.values())
    concentration = 0.0
    if reference_is_counts:
        log_e = float(
            sequential.log_e_two_sample(x, ref, sequential.two_sample_concentration(tightest))
        )
    else:
        ratios = np.maximum(ref / max(ref.sum(), 1e-300), sequential.RATIO_FLOOR)
        concentration = sequential.concentration_for(tightest, len(ratios))
        log_e = float(sequential.log_e_multinomial(x, ratios, concentration))
    psi_bound = float(
        sequential.psi_upper_bound(
            x, ref, levels.passing, reference_is_counts=reference_is_counts,
            concentration=concentration * PASS_PRIOR_FACTOR,
        )
    )  # fmt: skip
    bounds = {e: float(sequential.bound_from_psi(e, psi_bound)) for e in tolerances}
    over = {e: fx[e] > v for e, v in tolerances.items()}
    shown = ", ".join(f"{e.value} {_fmt(fx[e])}" for e in tolerances)
    limit_text = ", ".join(f"{e.value} {_fmt(v)}" for e, v in tolerances.items())
    what = f"{name} of {subject}" if subject else name
    evidence = log_e >= math.log(levels.needed)
    if evidence and all(over.values()):
        verdict = Verdict.FAIL
        why = f"{shown} over ({limit_text}); {_e(log_e)} >= {levels.needed:.3g}, n={samples}"
    elif any(bounds[e] < v for e, v in tolerances.items()):
        verdict = Verdict.PASS
        within = next(e for e, v in tolerances.items() if bounds[e] < v)
        why = (
            f"{shown}; {within.value} at most {_fmt(bounds[within])}, within "
            f"{_fmt(tolerances[within])}, n={samples}"
        )
    elif evidence:
        verdict = Verdict.INCONCLUSIVE
        why = f"changed ({_e(log_e)}), but {shown} not over every one of {limit_text}, n={samples}"
    else:
        verdict = Verdict.INCONCLUSIVE
        why = (
            f"{shown}; not yet conclusive ({_e(log_e)} of {levels.needed:.3g} to fail, "
            f"{effect_name.value} bound {_fmt(bounds.get(effect_name, psi_bound))} of "
            f"{_fmt(threshold)} to pass), n={samples}"
        )
    return CheckResult(
        name,
        verdict,
        value,
        threshold,
        samples,
        f"{what}: {why}",
        subject=subject,
        sequential=True,
        blocking=blocking,
    )


def rate_verdict(
    levels: Levels,
    name: str,
    *,
    events: float,
    trials: float,
    limit: float,
    value: float,
    threshold: float,
    shown: str,
    events_at_most: float | None = None,
) -> CheckResult:
    """A rate whose limit is the null hypothesis: "at most `limit`" (an error share, the
    share of requests slower than a latency limit). A failure needs evidence on `events`, a
    pass a bound on `events_at_most` (when events are only known within bounds). `value`,
    `threshold` and `shown` are what the check reports (e.g. the p95 in ms)."""
    samples = round(trials)
    thin = _below_floor(levels, name, value=value, threshold=threshold, samples=samples, subject="")
    if thin is not None:
        return thin
    log_e = float(
        sequential.log_e_rate_above(events, trials, limit, sequential.rate_concentration(limit))
    )
    _, upper = sequential.rate_bounds(
        events if events_at_most is None else events_at_most, trials, levels.passing
    )
    share = f"{_fmt(events / trials if trials else 0.0)} of n={samples} (limit {_fmt(limit)})"
    if log_e >= math.log(levels.needed):
        verdict, why = Verdict.FAIL, f"{shown}: {share}, {_e(log_e)} >= {levels.needed:.3g}"
    elif float(upper) < limit:
        verdict, why = Verdict.PASS, f"{shown}: {share}, at most {_fmt(float(upper))}"
    else:
        verdict = Verdict.INCONCLUSIVE
        why = f"{shown}: {share}, not yet conclusive ({_e(log_e)}, bound {_fmt(float(upper))})"
    return CheckResult(name, verdict, value, threshold, samples, f"{name}: {why}", sequential=True)


def increase_verdict(
    levels: Levels,
    name: str,
    *,
    events: float,
    trials: float,
    reference: tuple[float, float] | float,
    tolerance: float,
    subject: str = "",
) -> CheckResult:
    """A rate that must not rise over a reference by more than `tolerance`: a known share
    (the training profile's missing share), or (events, trials) of the stable. Fails on
    evidence of an increase and an estimated increase over tolerance; passes when the
    confidence sequences bound the increase within it."""
    samples = round(trials)
    rate = events / trials if trials > 0 else 0.0
    if isinstance(reference, tuple):
        ref_events, ref_trials = reference
        base = ref_events / ref_trials if ref_trials > 0 else 0.0
        total = events + ref_events
        # Under "no increase" each event is the canary's with its share of the trials.
        share = trials / (trials + ref_trials) if ref_trials > 0 else 1 - sequential.RATIO_FLOOR
        log_e = float(
            sequential.log_e_rate_above(events, total, share, sequential.rate_concentration(share))
        )
        _, upper = sequential.rate_bounds(events, trials, levels.passing / 2)
        ref_lower, _ = sequential.rate_bounds(ref_events, ref_trials, levels.passing / 2)
        bound = float(upper) - float(ref_lower)
    else:
        base = reference
        p0 = max(base, sequential.RATIO_FLOOR)
        log_e = float(
            sequential.log_e_rate_above(events, trials, p0, sequential.rate_concentration(p0))
        )
        _, upper = sequential.rate_bounds(events, trials, levels.passing)
        bound = float(upper) - base
    increase = rate - base
    what = f"{name} of {subject}" if subject else name
    thin = _below_floor(
        levels, name, value=increase, threshold=tolerance, samples=samples, subject=subject
    )
    if thin is not None:
        return thin
    text = f"{_fmt(rate)} vs {_fmt(base)} (+{_fmt(increase)} of {_fmt(tolerance)}), n={samples}"
    if log_e >= math.log(levels.needed) and increase > tolerance:
        verdict, why = Verdict.FAIL, f"{text}, {_e(log_e)} >= {levels.needed:.3g}"
    elif bound < tolerance:
        verdict, why = Verdict.PASS, f"{text}, increase at most {_fmt(bound)}"
    else:
        verdict = Verdict.INCONCLUSIVE
        why = f"{text}, not yet conclusive ({_e(log_e)}, bound +{_fmt(bound)})"
    return CheckResult(
        name, verdict, increase, tolerance, samples, f"{what}: {why}", subject=subject,
        sequential=True,
    )  # fmt: skip


# --- latency and rates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Slower:
    """Requests slower than a latency limit, from histogram buckets."""

    at_least: float
    at_most: float
    total: float


def slower_than(limit_s: float, buckets: list[tuple[float, float]]) -> Slower:
    """How many requests were slower than `limit_s`, interpolating linearly inside the
    bucket holding the limit (as histogram_quantile does). Beyond the largest finite bucket
    a request may or may not be slower: it counts for `at_most` only."""
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = max(merged.get(bound, 0.0), count)
    total = merged.get(math.inf, max(merged.values(), default=0.0))
    below, start = 0.0, 0.0
    for bound in sorted(merged):
        count = merged[bound]
        if math.isinf(bound):
            return Slower(0.0, max(0.0, total - below), total)
        if bound >= limit_s:
            width = bound - start
            fraction = (limit_s - start) / width if width > 0 else 1.0
            slower = max(0.0, total - (below + (count - below) * fraction))
            return Slower(slower, slower, total)
        below, start = max(below, count), bound
    return Slower(0.0, max(0.0, total - below), total)


def _latency_tests(config: AnalysisConfig, latency: QueryResult) -> list[tuple[str, list[Test]]]:
    wanted = [
        (LATENCY_P95, 0.95, config.latency_p95_ms),
        (LATENCY_P99, 0.99, config.latency_p99_ms),
    ]
    groups: list[tuple[str, list[Test]]] = []
    for name, q, limit in wanted:
        if limit is None:
            continue
        if not latency.ok:
            groups.append((name, [_missing(name, limit, latency.describe())]))
            continue
        buckets = statistics.cumulative_buckets({k[0]: v for k, v in latency.values.items()})
        slower = slower_than(limit / 1000, buckets)
        quantile_ms = statistics.histogram_quantile(q, buckets) * 1000

        shown = f"p{round(q * 100)} {_fmt(quantile_ms)} ms (max {_fmt(limit)} ms), slower share"
        test = _test(
            rate_verdict, name=name, events=slower.at_least, events_at_most=slower.at_most,
            trials=slower.total, limit=1 - q, value=quantile_ms, threshold=limit, shown=shown,
        )  # fmt: skip
        groups.append((name, [test]))
    return groups


def _error_tests(config: AnalysisConfig, requests: QueryResult) -> list[tuple[str, list[Test]]]:
    limit = config.max_error_rate
    if limit is None:
        return []
    if not requests.ok:
        return [(ERROR_RATE, [_missing(ERROR_RATE, limit, requests.describe())])]
    total = sum(requests.values.values())
    errors = sum(v for (code,), v in requests.values.items() if code.startswith("5"))
    rate = statistics.ratio(errors, total)

    test = _test(
        rate_verdict, name=ERROR_RATE, events=errors, trials=total, limit=limit, value=rate,
        threshold=limit, shown=f"{round(errors)} 5xx",
    )  # fmt: skip
    return [(ERROR_RATE, [test])]


def _invalid_input_test(limit: float, reader: _Reader) -> Test:
    tracks = [Track.CANARY, Track.STABLE] if reader.has(Track.STABLE) else [Track.CANARY]
    counts: list[tuple[float, float]] = []
    for track in tracks:
        requests, invalid = reader.get(track, Series.REQUESTS), reader.get(track, Series.INVALID)
        broken = requests if not requests.ok else invalid
        if not broken.ok:
            return _missing(INVALID_INPUT_RATE, limit, f"{broken.describe()} ({track})")
        counts.append((sum(invalid.values.values()), sum(requests.values.values())))
    (events, trials), stable = counts[0], counts[1] if len(counts) > 1 else (0.0, 0.0)
    # Without a stable revision, or one that served nothing, compare with no invalid inputs.
    reference = stable if stable[1] > 0 else 0.0
    return _test(
        increase_verdict, name=INVALID_INPUT_RATE, events=events, trials=trials,
        reference=reference, tolerance=limit,
    )  # fmt: skip


def _accuracy_test(limits: AccuracyLimits, reader: _Reader) -> Test:
    """The canary's wrong-answer share against the stable's on the same window: the
    invalid-input-rate check's two-sample test (`increase_verdict`) on labelled outcomes."""
    counts: list[tuple[float, float]] = []
    for track in (Track.CANARY, Track.STABLE):
        labelled = reader.get(track, Series.LABELLED)
        if not labelled.ok:
            return _missing(ACCURACY, limits.max_drop, f"{labelled.describe()} ({track})")
        wrong = labelled.values.get((contract.OUTCOME_WRONG,), 0.0)
        counts.append((wrong, sum(labelled.values.values())))
    (wrong, total), stable = counts
    head = (
        f"{ACCURACY}: canary {_accuracy(wrong, total)} ({_count(total)} labels) vs stable "
        f"{_accuracy(*stable)} ({_count(stable[1])} labels)"
    )
    if min(total, stable[1]) < limits.min_labels:
        drop = statistics.ratio(wrong, total) - statistics.ratio(*stable)
        thin = CheckResult(
            ACCURACY, Verdict.INCONCLUSIVE, drop, limits.max_drop, _count(total),
            f"{head}; {limits.min_labels} labels needed on each", sequential=True,
        )  # fmt: skip
        return lambda _: thin

    def test(levels: Levels) -> CheckResult:
        result = increase_verdict(
            levels, ACCURACY, events=wrong, trials=total, reference=stable,
            tolerance=limits.max_drop,
        )  # fmt: skip
        detail = result.reason.removeprefix(f"{ACCURACY}: ")
        return replace(result, reason=f"{head}; wrong share {detail}")

    return test


def _holdout_accuracy_test(limits: AccuracyLimits, reader: _Reader) -> Test | None:
    """The revision's wrong-answer share on labelled predictions against its training
    holdout's, a fixed rate: `rate_verdict` on "at most (1 - holdout accuracy) + max_drop".
    None when its profile records no holdout accuracy (the runtime exports none)."""
    holdout = reader.get(Track.CANARY, Series.HOLDOUT)
    if holdout.status is QueryStatus.NO_DATA and reader.get(Track.CANARY, Series.INFO).ok:
        return None
    labelled = reader.get(Track.CANARY, Series.LABELLED)
    broken = holdout if not holdout.ok else labelled
    if not broken.ok:
        return _missing(HOLDOUT_ACCURACY, limits.max_drop, broken.describe())
    (expected,) = holdout.values.values()  # keyed by no label: exactly one value
    wrong = labelled.values.get((contract.OUTCOME_WRONG,), 0.0)
    total = sum(labelled.values.values())
    drop = expected - (1 - statistics.ratio(wrong, total)) if total > 0 else 0.0
    head = (
        f"labelled accuracy {_accuracy(wrong, total)} ({_count(total)} labels) vs holdout "
        f"{expected:.1%} (max drop {_fmt(limits.max_drop)})"
    )
    if total < limits.min_labels:
        thin = CheckResult(
            HOLDOUT_ACCURACY, Verdict.INCONCLUSIVE, drop, limits.max_drop, _count(total),
            f"{HOLDOUT_ACCURACY}: {head}; {limits.min_labels} labels needed", sequential=True,
        )  # fmt: skip
        return lambda _: thin
    # A limit of 1 or more cannot be exceeded: the test's null needs a rate below 1.
    limit = min(1 - expected + limits.max_drop, 1 - sequential.RATIO_FLOOR)
    return _test(
        rate_verdict, name=HOLDOUT_ACCURACY, events=wrong, trials=total,
        limit=max(limit, sequential.RATIO_FLOOR), value=drop, threshold=limits.max_drop,
        shown=f"{head}, wrong share",
    )  # fmt: skip


def _answered_rows(result: QueryResult) -> tuple[float, float] | None:
    """(rows answered by the fallback, all rows answered), or None for a model declaring
    no fallback (or a runtime not counting answered rows: no series at all)."""
    if result.status is QueryStatus.NO_DATA:
        return None
    fallback = result.values.get((contract.ANSWERED_BY_FALLBACK,))
    if fallback is None:
        return None
    return max(0.0, fallback), max(0.0, sum(result.values.values()))


def _fallback_test(limit: float, reader: _Reader) -> Test | None:
    """The canary's share of fallback answers against the stable's (`increase_verdict`, as
    invalid inputs); None when the canary's model declares no fallback."""
    counts: list[tuple[float, float] | None] = []
    for track in (Track.CANARY, Track.STABLE):
        info = reader.scraped(track)
        answered = reader.get(track, Series.ANSWERED)
        # An absent series (NO_DATA) of a scraped revision: a model declaring no fallback.
        broken = info if not info.ok else answered
        if not info.ok or (not answered.ok and answered.status is not QueryStatus.NO_DATA):
            return _missing(FALLBACK_RATE, limit, f"{broken.describe()} ({track})")
        counts.append(_answered_rows(answered))
    canary, stable = counts
    if canary is None:
        return None
    (events, trials), reference = canary, stable if stable is not None and stable[1] > 0 else 0.0
    stable_text = (
        f"{_share(*stable)} ({_count(stable[0])} of {_count(stable[1])} rows)"
        if stable is not None
        else "no fallback"
    )
    head = (
        f"{FALLBACK_RATE}: canary {_share(events, trials)} of rows from the fallback "
        f"({_count(events)} of {_count(trials)}) vs stable {stable_text}"
    )

    def test(levels: Levels) -> CheckResult:
        result = increase_verdict(
            levels, FALLBACK_RATE, events=events, trials=trials, reference=reference,
            tolerance=limit,
        )  # fmt: skip
        return replace(result, reason=f"{head}; {result.reason.removeprefix(FALLBACK_RATE + ': ')}")

    return test


def _share(events: float, total: float) -> str:
    return f"{events / total:.1%}" if total > 0 else "-"


def _accuracy(wrong: float, total: float) -> str:
    return f"{1 - wrong / total:.1%}" if total > 0 else "-"


# --- drift ----------------------------------------------------------------------------------


def _grouped(values: Mapping[LabelValues, float]) -> dict[str, dict[str, float]]:
    """(subject, bin) -> value as subject -> bin -> value (negatives clipped to 0)."""
    grouped: dict[str, dict[str, float]] = {}
    for (subject, bin_label), value in values.items():
        grouped.setdefault(subject, {})[bin_label] = max(0.0, value)
    return grouped


def _bin_order(labels: Iterable[str]) -> tuple[list[str], bool]:
    """Labels in bin order, and whether that order is numeric (deciles, buckets)."""
    labels = sorted(set(labels))
    try:
        keys = [float(label) for label in labels]
    except ValueError:
        return labels, False
    if any(math.isnan(key) for key in keys):
        return labels, False
    return [label for _, label in sorted(zip(keys, labels, strict=True))], True


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


@dataclass(frozen=True)
class Degenerate:
    """What is wrong with a feature's served values, named for what it is."""

    description: str  # e.g. "feature age is all missing at serving (...)"
    all_missing: bool  # else constant


def degenerate_feature(
    feature: str, counts: Mapping[str, float], baseline: Mapping[str, float]
) -> Degenerate | None:
    """A feature whose served values (counts per bin) are all missing, or all in one bin,
    where training (ratios per bin) had few missing, or spread its values over several bins,
    so that values that degenerate had at most `DEGENERATE_CHANCE` under training."""
    missing = counts.get(contract.MISSING_BIN, 0.0)
    present = {b: c for b, c in counts.items() if b != contract.MISSING_BIN and c > 0}
    served = sum(present.values())
    trained = {b: r for b, r in baseline.items() if b != contract.MISSING_BIN and r > 0}
    training_missing = baseline.get(contract.MISSING_BIN, 0.0)
    if not present and missing > 0 and training_missing**missing <= DEGENERATE_CHANCE:
        return Degenerate(
            f"feature {feature} is all missing at serving ({_count(missing)} values; training "
            f"had {training_missing:.1%} missing)",
            all_missing=True,
        )
    if len(present) != 1 or len(trained) < 2:
        return None
    total = sum(trained.values())
    chance = sum((r / total) ** served for r in trained.values())
    if chance > DEGENERATE_CHANCE:
        return None
    (bin_label,) = present
    return Degenerate(
        f"feature {feature} is constant at serving (all {_count(served)} values in bin "
        f"{bin_label}; training had {len(trained)} bins)",
        all_missing=False,
    )


def _named(test: Test, degenerate: Degenerate) -> Test:
    """The test's verdict, its reason headed by what is degenerate about the feature."""

    def named(levels: Levels) -> CheckResult:
        result = test(levels)
        return replace(result, reason=f"{degenerate.description}; {result.reason}")

    return named


def _feature_tests(
    config: AnalysisConfig, features: QueryResult, baseline: QueryResult, requests: float
) -> list[tuple[str, list[Test]]]:
    wanted: dict[str, float] = {}
    if config.features.headline is not None:
        wanted[FEATURE_PSI] = config.features.headline[1]
    if config.max_missing_increase is not None:
        wanted[MISSING_RATE] = config.max_missing_increase
    broken = features if not features.ok else baseline
    if not broken.ok:
        why = broken.describe() + (" (training-profile ratios)" if broken is baseline else "")
        return [(name, [_missing(name, limit, why)]) for name, limit in wanted.items()]
    observed, profile = _grouped(features.values), _grouped(baseline.values)
    per_check: dict[str, list[Test]] = {name: [] for name in wanted}
    for feature in sorted(set(profile) - config.ignored_features):
        counts = observed.get(feature)
        if counts is None:
            for name, limit in wanted.items():
                per_check[name].append(
                    _missing(name, limit, f"no bins of feature {feature}", feature)
                )
            continue
        present, expected, ordered = _aligned(counts, profile[feature])
        degenerate = degenerate_feature(feature, counts, profile[feature])
        if FEATURE_PSI in wanted:
            # A feature few requests carry cannot vouch for the round; it may still fail it.
            # A degenerate one cannot drop out, unless the missing-rate check judges it.
            missing_judged = (
                degenerate is not None and degenerate.all_missing and (MISSING_RATE in wanted)
            )
            blocking = float(present.sum()) >= DROP_OUT_SHARE * requests or (
                degenerate is not None and not missing_judged
            )
            drift = _test(
                distribution_verdict, name=FEATURE_PSI, limits=config.features,
                observed=present, reference=expected, reference_is_counts=False,
                ordered=ordered, subject=feature, blocking=blocking,
            )  # fmt: skip
            per_check[FEATURE_PSI].append(_named(drift, degenerate) if degenerate else drift)
        if MISSING_RATE in wanted:
            missing = counts.get(contract.MISSING_BIN, 0.0)
            total = missing + float(present.sum())
            base = profile[feature].get(contract.MISSING_BIN, 0.0)
            missing_rate = _test(
                increase_verdict, name=MISSING_RATE, events=missing, trials=total,
                reference=base, tolerance=wanted[MISSING_RATE], subject=feature,
            )  # fmt: skip
            if degenerate and degenerate.all_missing:
                missing_rate = _named(missing_rate, degenerate)
            per_check[MISSING_RATE].append(missing_rate)
    return list(per_check.items())


def _prediction_tests(config: AnalysisConfig, reader: _Reader) -> list[tuple[str, list[Test]]]:
    groups = [
        _two_sample_tests(
            config.predictions,
            PREDICTION_PSI,
            reader.get(Track.CANARY, Series.PREDICTIONS),
            reader.get(Track.STABLE, Series.PREDICTIONS),
            _grouped,
        )
    ]
    canary = reader.get(Track.CANARY, Series.CONFIDENCE)
    stable = reader.get(Track.STABLE, Series.CONFIDENCE)
    if canary.ok and stable.ok and not (_any_observed(canary) or _any_observed(stable)):
        return groups  # this model reports no confidence
    groups.append(
        _two_sample_tests(config.predictions, CONFIDENCE_PSI, canary, stable, _confidence_bins)
    )
    return groups


def _any_observed(histogram: QueryResult) -> bool:
    return any(v > 0 for v in histogram.values.values())


def _confidence_bins(values: Mapping[LabelValues, float]) -> dict[str, dict[str, float]]:
    """Cumulative `le` buckets as per-bucket counts, labelled by their upper bound."""
    buckets = statistics.cumulative_buckets({k[0]: v for k, v in values.items()})
    bounds = sorted({bound for bound, _ in buckets})
    counts = statistics.bucket_counts(buckets)
    return {"confidence": {repr(b): float(c) for b, c in zip(bounds, counts, strict=True)}}


def _two_sample_tests(
    limits: EffectLimits,
    name: str,
    canary: QueryResult,
    stable: QueryResult,
    to_bins: Callable[[Mapping[LabelValues, float]], dict[str, dict[str, float]]],
) -> tuple[str, list[Test]]:
    headline = limits.headline
    assert headline is not None  # checks_predictions
    broken = canary if not canary.ok else stable
    if not broken.ok:
        why = broken.describe() + (" (stable)" if broken is stable else "")
        return name, [_missing(name, headline[1], why)]
    canary_bins, stable_bins = to_bins(canary.values), to_bins(stable.values)
    tests: list[Test] = []
    for subject in sorted({*canary_bins, *stable_bins}):
        a, b, ordered = _aligned(canary_bins.get(subject, {}), stable_bins.get(subject, {}))
        tests.append(
            _test(
                distribution_verdict, name=name, limits=limits, observed=a, reference=b,
                reference_is_counts=True, ordered=ordered, subject=subject,
            )
        )  # fmt: skip
    return name, tests


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
        max(config.min_samples, 1),
        minimum=check.minimum,
        maximum=check.maximum,
    )


def _count(value: float) -> int:
    """Sample counts from increase() are fractional; report them as whole observations."""
    return round(value) if math.isfinite(value) else 0
