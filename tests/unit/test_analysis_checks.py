"""From raw query results of one round to every check's verdict."""

from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from scipy import stats

from modeldeploy.analysis.checks import evaluate
from modeldeploy.analysis.config import (
    AnalysisConfig,
    CustomCheck,
    Observations,
    QueryKey,
    Track,
    collect,
    plan_queries,
)
from modeldeploy.analysis.data import LabelValues, QueryResult, QueryStatus
from modeldeploy.analysis.queries import RevisionRef, Series, TemplateError
from modeldeploy.analysis.verdicts import CheckResult, Verdict, aggregate

pytestmark = pytest.mark.unit

CANARY = RevisionRef(model="churn", revision="c4n4ry", version="v2", namespace="ml")
STABLE = RevisionRef(model="churn", revision="st4bl3", version="v1", namespace="ml")
DECILES = [str(i) for i in range(10)]
CONFIG = AnalysisConfig(
    min_samples=500,
    latency_p95_ms=250,
    latency_p99_ms=600,
    max_error_rate=0.01,
    max_invalid_increase=0.02,
    feature_psi=0.1,
    feature_ks=0.1,
    max_missing_increase=0.05,
    prediction_psi=0.2,
    prediction_ks=0.1,
    custom=(CustomCheck("accuracy", 'accuracy{revision="{{ revision }}"}', minimum=0.8),),
)


def ok(values: Mapping[LabelValues, float]) -> QueryResult:
    return QueryResult(QueryStatus.OK, dict(values))


def latency(fast: float, slow: float, very_slow: float = 0.0) -> QueryResult:
    """`fast` requests at <= 50 ms, `slow` in (0.3, 0.4] s, `very_slow` above 10 s."""
    cumulative = {"0.05": fast, "0.3": fast, "0.4": fast + slow, "10": fast + slow}
    cumulative["+Inf"] = fast + slow + very_slow
    return ok({(le,): count for le, count in cumulative.items()})


def decile_counts(n: int, shift_sd: float = 0.0) -> list[float]:
    edges = stats.norm.ppf(np.arange(1, 10) / 10)
    masses = np.diff(np.concatenate([[0.0], stats.norm.cdf(edges - shift_sd), [1.0]]))
    return [float(round(n * m)) for m in masses]


def features(n: int, *, shift_income: float = 0.0, missing_age: float = 0.0) -> QueryResult:
    values: dict[LabelValues, float] = {}
    for name, shift in (("age", 0.0), ("income", shift_income)):
        for label, count in zip(DECILES, decile_counts(n, shift), strict=True):
            values[(name, label)] = count
    values[("age", "missing")] = missing_age * n
    values[("income", "missing")] = 0.0
    for plan, share in (("basic", 0.6), ("pro", 0.3), ("team", 0.1)):
        values[("plan", plan)] = share * n
    values[("plan", "missing")] = 0.0
    return ok(values)


BASELINE = ok(
    {
        **{(name, label): 0.1 for name in ("age", "income") for label in DECILES},
        ("age", "missing"): 0.01,
        ("plan", "basic"): 0.6,
        ("plan", "pro"): 0.3,
        ("plan", "team"): 0.1,
    }
)


def predictions(n: int, positive_share: float) -> QueryResult:
    return ok({("churn", "0"): n * (1 - positive_share), ("churn", "1"): n * positive_share})


def confidence(n: int, high_share: float) -> QueryResult:
    bounds = ["0.5", "0.7", "0.9", "1.0", "+Inf"]
    low = n * (1 - high_share)
    cumulative = [low / 2, low, low, n, n]
    return ok({(le,): c for le, c in zip(bounds, cumulative, strict=True)})


def healthy(n: int = 1000) -> dict[QueryKey, QueryResult]:
    return {
        (Track.CANARY, Series.INFO): ok({(): 2}),
        (Track.CANARY, Series.REQUESTS): ok({("200",): n - 2, ("500",): 2}),
        (Track.CANARY, Series.INVALID): ok({("schema",): 3}),
        (Track.CANARY, Series.LATENCY): latency(n - 5, 5),
        (Track.CANARY, Series.FEATURES): features(n),
        (Track.CANARY, Series.BASELINE): BASELINE,
        (Track.CANARY, Series.PREDICTIONS): predictions(n, 0.2),
        (Track.CANARY, Series.CONFIDENCE): confidence(n, 0.7),
        (Track.STABLE, Series.INFO): ok({(): 4}),
        (Track.STABLE, Series.REQUESTS): ok({("200",): 9 * n}),
        (Track.STABLE, Series.INVALID): ok({("schema",): 18}),
        (Track.STABLE, Series.PREDICTIONS): predictions(9 * n, 0.2),
        (Track.STABLE, Series.CONFIDENCE): confidence(9 * n, 0.7),
    }


def run(
    results: Mapping[QueryKey, QueryResult],
    custom: float | QueryResult = 0.9,
    config: AnalysisConfig = CONFIG,
) -> dict[str, CheckResult]:
    answer = ok({(): custom}) if isinstance(custom, float) else custom
    checks = evaluate(config, Observations(results, {"accuracy": answer}))
    by_name = {check.name: check for check in checks}
    assert len(by_name) == len(checks)
    return by_name


def verdicts(checks: Mapping[str, CheckResult]) -> dict[str, Verdict]:
    return {name: check.verdict for name, check in checks.items()}


def test_a_healthy_canary_passes_every_check() -> None:
    checks = run(healthy())
    assert set(checks) == {
        "latency-p95", "latency-p99", "error-rate", "invalid-input-rate", "feature-psi",
        "feature-ks", "missing-rate", "prediction-psi", "prediction-ks", "confidence-psi",
        "confidence-ks", "custom/accuracy",
    }  # fmt: skip
    assert set(verdicts(checks).values()) == {Verdict.PASS}, [c.reason for c in checks.values()]
    assert checks["error-rate"].value == pytest.approx(0.002)
    assert checks["error-rate"].samples == 1000
    assert aggregate(checks.values()).verdict is Verdict.PASS


def test_latency_breach_fails_with_the_quantile_in_ms() -> None:
    results = healthy()
    results[(Track.CANARY, Series.LATENCY)] = latency(900, 100)  # 10% at 300-400 ms
    checks = run(results)
    p95 = checks["latency-p95"]
    assert p95.verdict is Verdict.FAIL
    assert p95.value == pytest.approx(350.0)  # rank 950: 0.3 + 0.1 * 50/100 s
    assert p95.reason == "latency-p95: 350 ms > max 250 ms, n=1000"
    assert checks["latency-p99"].verdict is Verdict.PASS  # 390 ms < 600 ms


def test_a_quantile_beyond_the_largest_bucket_cannot_pass() -> None:
    results = healthy()
    results[(Track.CANARY, Series.LATENCY)] = latency(900, 40, very_slow=60)
    config = AnalysisConfig(min_samples=500, latency_p95_ms=20_000)
    checks = evaluate(config, Observations(results))
    assert [c.verdict for c in checks] == [Verdict.INCONCLUSIVE]
    assert "above the largest finite bucket" in checks[0].reason


def test_error_rate_and_invalid_inputs_compared_with_stable() -> None:
    results = healthy()
    results[(Track.CANARY, Series.REQUESTS)] = ok({("200",): 900, ("503",): 30, ("400",): 70})
    results[(Track.CANARY, Series.INVALID)] = ok({("schema",): 50, ("range",): 20})
    results[(Track.STABLE, Series.INVALID)] = ok({("schema",): 180})  # 2% of 9000
    checks = run(results)
    assert checks["error-rate"].verdict is Verdict.FAIL
    assert checks["error-rate"].value == pytest.approx(0.03)
    invalid = checks["invalid-input-rate"]
    assert invalid.verdict is Verdict.FAIL
    assert invalid.value == pytest.approx(0.05)
    assert invalid.reason == (
        "invalid-input-rate: 0.05 > max 0.02, n=1000 (canary 0.07 vs stable 0.02)"
    )


def test_invalid_inputs_without_stable_compare_with_zero() -> None:
    results = {k: v for k, v in healthy().items() if k[0] is Track.CANARY}
    results[(Track.CANARY, Series.INVALID)] = ok({("schema",): 30})
    check = run(results)["invalid-input-rate"]
    assert check.verdict is Verdict.FAIL
    assert check.value == pytest.approx(0.03)
    assert check.reason.endswith("(canary 0.03 vs stable 0)")


def test_too_few_samples_is_inconclusive_not_no_data() -> None:
    results = healthy(n=200)
    results[(Track.CANARY, Series.REQUESTS)] = ok({("500",): 200})  # all errors, but n=200
    outcome = aggregate(run(results).values())
    assert outcome.verdict is Verdict.INCONCLUSIVE
    assert not outcome.no_data
    assert "200 of 500 samples" in outcome.reason


def test_unreachable_prometheus_is_no_data_everywhere() -> None:
    down = QueryResult.failed(QueryStatus.UNREACHABLE, "ConnectionError: refused")
    results = dict.fromkeys(healthy(), down)
    checks = run(results, custom=down)
    assert all(c.verdict is Verdict.INCONCLUSIVE and c.no_data for c in checks.values())
    assert checks["latency-p95"].reason == (
        "latency-p95: no data (unreachable: ConnectionError: refused)"
    )
    outcome = aggregate(checks.values())
    assert (outcome.verdict, outcome.no_data) == (Verdict.INCONCLUSIVE, True)


def test_an_unscraped_canary_has_no_data_but_absent_event_series_are_zeros() -> None:
    results = healthy()
    results[(Track.CANARY, Series.INFO)] = QueryResult.of({})
    checks = run(results)
    assert checks["error-rate"].no_data
    assert "revision is not scraped" in checks["error-rate"].reason
    # Scraped but idle: counters created on first use are simply absent.
    results = healthy()
    for series in (Series.REQUESTS, Series.INVALID, Series.LATENCY):
        results[(Track.CANARY, series)] = QueryResult.of({})
    checks = run(results)
    assert checks["error-rate"].verdict is Verdict.INCONCLUSIVE
    assert not checks["error-rate"].no_data
    assert checks["error-rate"].samples == 0


def test_feature_skew_against_the_profile_fails_and_names_the_feature() -> None:
    results = healthy()
    results[(Track.CANARY, Series.FEATURES)] = features(1000, shift_income=0.5)
    checks = run(results)
    psi, ks = checks["feature-psi"], checks["feature-ks"]
    assert (psi.verdict, psi.subject) == (Verdict.FAIL, "income")
    assert psi.value == pytest.approx(0.238, abs=0.01)
    assert psi.reason.startswith("feature-psi of income: 0.23")
    assert "p=" in psi.reason
    assert (ks.verdict, ks.subject) == (Verdict.FAIL, "income")
    assert ks.value == pytest.approx(0.197, abs=0.005)
    assert checks["missing-rate"].verdict is Verdict.PASS


def test_categorical_features_get_psi_but_no_ks() -> None:
    results = healthy()
    values = dict(features(1000).values)
    values[("plan", "basic")], values[("plan", "team")] = 300.0, 400.0
    results[(Track.CANARY, Series.FEATURES)] = ok(values)
    checks = run(results)
    assert (checks["feature-psi"].verdict, checks["feature-psi"].subject) == (Verdict.FAIL, "plan")
    assert checks["feature-ks"].verdict is Verdict.PASS
    assert checks["feature-ks"].subject in {"age", "income"}


def test_missing_rate_increase_fails_against_the_baseline_missing_ratio() -> None:
    results = healthy()
    results[(Track.CANARY, Series.FEATURES)] = features(1000, missing_age=0.12)
    check = run(results)["missing-rate"]
    assert (check.verdict, check.subject) == (Verdict.FAIL, "age")
    assert check.value == pytest.approx(120 / 1120 - 0.01)


def test_a_feature_the_runtime_does_not_export_is_no_data() -> None:
    results = healthy()
    values = {k: v for k, v in features(1000).values.items() if k[0] != "plan"}
    results[(Track.CANARY, Series.FEATURES)] = ok(values)
    check = run(results)["feature-psi"]
    assert (check.verdict, check.no_data, check.subject) == (Verdict.INCONCLUSIVE, True, "plan")


def test_ignored_features_are_not_judged() -> None:
    results = healthy()
    results[(Track.CANARY, Series.FEATURES)] = features(1000, shift_income=0.5)
    config = AnalysisConfig(feature_psi=0.1, ignored_features=frozenset({"income"}))
    (check,) = evaluate(config, Observations(results))
    assert check.verdict is Verdict.PASS
    assert check.subject != "income"
    assert config.drift_only().ignored_features == {"income"}


def test_missing_profile_ratios_are_no_data() -> None:
    results = healthy()
    results[(Track.CANARY, Series.BASELINE)] = QueryResult.of({})
    check = run(results)["feature-psi"]
    assert check.no_data
    assert "training-profile ratios" in check.reason


def test_prediction_drift_against_stable_fails() -> None:
    results = healthy()
    results[(Track.CANARY, Series.PREDICTIONS)] = predictions(1000, 0.45)
    results[(Track.CANARY, Series.CONFIDENCE)] = confidence(1000, 0.2)
    checks = run(results)
    assert (checks["prediction-psi"].verdict, checks["prediction-psi"].subject) == (
        Verdict.FAIL,
        "churn",
    )
    assert checks["prediction-ks"].verdict is Verdict.FAIL  # class labels 0/1 are ordered
    assert checks["confidence-psi"].verdict is Verdict.FAIL
    assert checks["confidence-ks"].value == pytest.approx(0.5)


def test_prediction_checks_need_samples_on_both_sides() -> None:
    results = healthy()
    results[(Track.STABLE, Series.PREDICTIONS)] = predictions(100, 0.5)
    check = run(results)["prediction-psi"]
    assert check.verdict is Verdict.INCONCLUSIVE
    assert check.samples == 100


def test_without_a_stable_revision_prediction_checks_are_skipped() -> None:
    results = {k: v for k, v in healthy().items() if k[0] is Track.CANARY}
    assert not {"prediction-psi", "confidence-psi"} & set(run(results))


def test_models_without_confidence_skip_the_confidence_checks() -> None:
    results = healthy()
    results[(Track.CANARY, Series.CONFIDENCE)] = QueryResult.of({})
    results[(Track.STABLE, Series.CONFIDENCE)] = QueryResult.of({})
    checks = run(results)
    assert "confidence-psi" not in checks
    assert checks["prediction-psi"].verdict is Verdict.PASS


def test_drift_above_threshold_without_significance_waits_for_data() -> None:
    config = AnalysisConfig(min_samples=20, feature_psi=0.1)
    results = healthy()
    results[(Track.CANARY, Series.FEATURES)] = ok(
        {("plan", "basic"): 8.0, ("plan", "pro"): 9.0, ("plan", "team"): 3.0}
    )
    results[(Track.CANARY, Series.BASELINE)] = ok(
        {("plan", "basic"): 0.6, ("plan", "pro"): 0.3, ("plan", "team"): 0.1}
    )
    (check,) = evaluate(config, Observations(results))
    assert check.verdict is Verdict.INCONCLUSIVE
    assert "not significant" in check.reason
    (ungated,) = evaluate(
        AnalysisConfig(min_samples=20, feature_psi=0.1, significance=None), Observations(results)
    )
    assert ungated.verdict is Verdict.FAIL


def test_custom_checks_compare_their_value_and_need_samples() -> None:
    low = run(healthy(), custom=0.7)["custom/accuracy"]
    assert low.verdict is Verdict.FAIL
    assert low.reason == "custom/accuracy: 0.7 < min 0.8, n=1000"
    assert run(healthy(n=100), custom=0.95)["custom/accuracy"].verdict is Verdict.INCONCLUSIVE
    bad = QueryResult.failed(QueryStatus.BAD_QUERY, "HTTP 400: parse error")
    gone = run(healthy(), custom=bad)["custom/accuracy"]
    assert gone.no_data
    assert "bad query: HTTP 400: parse error" in gone.reason


def test_custom_checks_are_validated() -> None:
    with pytest.raises(TemplateError):
        CustomCheck("x", "up{pod='{{ pod }}'}", minimum=1)
    with pytest.raises(ValueError, match="minimum or a maximum"):
        CustomCheck("x", "up")
    with pytest.raises(ValueError, match="unique"):
        AnalysisConfig(
            custom=(CustomCheck("a", "up", maximum=1), CustomCheck("a", "up", maximum=2))
        )


def test_plan_asks_only_for_what_the_config_needs() -> None:
    plan = plan_queries(AnalysisConfig(max_error_rate=0.01), canary=CANARY, window="5m")
    assert set(plan.queries) == {(Track.CANARY, Series.INFO), (Track.CANARY, Series.REQUESTS)}
    full = plan_queries(CONFIG, canary=CANARY, stable=STABLE, window="2m")
    assert set(full.queries) == set(healthy())
    assert full.queries[(Track.STABLE, Series.PREDICTIONS)].promql == (
        "sum by (output, bin) (increase(modeldeploy_prediction_bin_total"
        '{model="churn",revision="st4bl3"}[2m]))'
    )
    assert full.custom["accuracy"].promql == 'accuracy{revision="c4n4ry"}'
    invalid_only = plan_queries(
        AnalysisConfig(max_invalid_increase=0.01), canary=CANARY, stable=STABLE, window="1m"
    )
    assert {key for key in invalid_only.queries if key[0] is Track.STABLE} == {
        (Track.STABLE, Series.INFO), (Track.STABLE, Series.REQUESTS),
        (Track.STABLE, Series.INVALID),
    }  # fmt: skip
    no_stable = plan_queries(CONFIG, canary=CANARY, window="2m")
    assert not any(track is Track.STABLE for track, _ in no_stable.queries)


def test_drift_only_keeps_the_profile_checks() -> None:
    drift = CONFIG.drift_only()
    plan = plan_queries(drift, canary=STABLE, window="10m")
    assert {series for _, series in plan.queries} == {
        Series.INFO, Series.REQUESTS, Series.FEATURES, Series.BASELINE,
    }  # fmt: skip
    assert not plan.custom
    checks = evaluate(drift, Observations(healthy()))
    assert [c.name for c in checks] == ["feature-psi", "feature-ks", "missing-rate"]


class RecordingProvider:
    """Our own provider interface, answering from a table (not a Prometheus double)."""

    def __init__(self, answers: Mapping[str, QueryResult]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def query(self, promql: str, by: Sequence[str] = (), at: float | None = None) -> QueryResult:
        assert at == 1700000000.0
        self.asked.append((promql, tuple(by)))
        return self.answers.get(promql, QueryResult.of({}))


def test_collect_asks_every_planned_query_once() -> None:
    plan = plan_queries(CONFIG, canary=CANARY, stable=STABLE, window="5m")
    provider = RecordingProvider({plan.custom["accuracy"].promql: ok({(): 0.9})})
    observations = collect(provider, plan, at=1700000000.0)
    assert len(provider.asked) == len(plan.queries) + 1
    assert observations.custom["accuracy"].values == {(): 0.9}
    assert observations.results[(Track.CANARY, Series.FEATURES)].status is QueryStatus.NO_DATA
