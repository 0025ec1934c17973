"""From raw query results of one round to every check's verdict."""

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from modeldeploy.analysis.checks import Degenerate, degenerate_feature, evaluate
from modeldeploy.analysis.config import (
    AnalysisConfig,
    CustomCheck,
    EffectLimits,
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
    latency_p95_ms=250,
    latency_p99_ms=600,
    max_error_rate=0.01,
    max_invalid_increase=0.02,
    features=EffectLimits.of(psi=0.1, ks=0.1),
    max_missing_increase=0.05,
    predictions=EffectLimits.of(psi=0.2, ks=0.1),
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


def healthy(n: int = 5000) -> dict[QueryKey, QueryResult]:
    return {
        (Track.CANARY, Series.INFO): ok({(): 2}),
        (Track.CANARY, Series.REQUESTS): ok({("200",): n - 2, ("500",): 2}),
        (Track.CANARY, Series.INVALID): ok({("schema",): 2 * n / 1000}),
        (Track.CANARY, Series.LATENCY): latency(n - 5, 5),
        (Track.CANARY, Series.FEATURES): features(n),
        (Track.CANARY, Series.BASELINE): BASELINE,
        (Track.CANARY, Series.PREDICTIONS): predictions(n, 0.2),
        (Track.CANARY, Series.CONFIDENCE): confidence(n, 0.7),
        (Track.STABLE, Series.INFO): ok({(): 4}),
        (Track.STABLE, Series.REQUESTS): ok({("200",): 9 * n}),
        (Track.STABLE, Series.INVALID): ok({("schema",): 18 * n / 1000}),
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
        "missing-rate", "prediction-psi", "confidence-psi", "custom/accuracy",
    }  # fmt: skip
    assert set(verdicts(checks).values()) == {Verdict.PASS}, [c.reason for c in checks.values()]
    assert checks["error-rate"].value == pytest.approx(2 / 5000)
    assert checks["error-rate"].samples == 5000
    assert all(c.sequential for name, c in checks.items() if not name.startswith("custom/"))
    assert aggregate(checks.values()).verdict is Verdict.PASS


def test_a_healthy_canary_on_thin_data_is_not_yet_judged() -> None:
    checks = run(healthy(n=100))
    assert Verdict.FAIL not in verdicts(checks).values()
    assert verdicts(checks)["feature-psi"] is Verdict.INCONCLUSIVE
    assert "not yet conclusive" in checks["feature-psi"].reason
    assert aggregate(checks.values()).verdict is Verdict.INCONCLUSIVE


def test_latency_breach_fails_with_the_quantile_in_ms() -> None:
    results = healthy()
    results[(Track.CANARY, Series.LATENCY)] = latency(900, 100)  # 10% at 300-400 ms
    checks = run(results)
    p95 = checks["latency-p95"]
    assert (p95.verdict, p95.sequential) == (Verdict.FAIL, True)
    assert p95.value == pytest.approx(350.0)  # rank 950: 0.3 + 0.1 * 50/100 s
    assert p95.reason.startswith(
        "latency-p95: p95 350 ms (max 250 ms), slower share: 0.1 of n=1000 (limit 0.05), e="
    )
    assert checks["latency-p99"].verdict is Verdict.PASS  # none slower than 600 ms


def test_a_quantile_beyond_the_largest_bucket_cannot_pass() -> None:
    results = healthy()
    results[(Track.CANARY, Series.LATENCY)] = latency(900, 40, very_slow=60)
    config = AnalysisConfig(latency_p95_ms=20_000)
    (check,) = evaluate(config, Observations(results))
    # 6% took over 10 s: maybe over 20 s, maybe not; a limit in the +Inf bucket can hold
    # neither a failure (none is known to be slower) nor a pass.
    assert check.verdict is Verdict.INCONCLUSIVE
    assert "slower share: 0 of n=1000" in check.reason


def test_error_rate_and_invalid_inputs_compared_with_stable() -> None:
    results = healthy()
    results[(Track.CANARY, Series.REQUESTS)] = ok({("200",): 900, ("503",): 30, ("400",): 70})
    results[(Track.CANARY, Series.INVALID)] = ok({("schema",): 50, ("range",): 20})
    results[(Track.STABLE, Series.INVALID)] = ok({("schema",): 900})  # 2% of 45000
    checks = run(results)
    assert checks["error-rate"].verdict is Verdict.FAIL
    assert checks["error-rate"].value == pytest.approx(0.03)
    invalid = checks["invalid-input-rate"]
    assert invalid.verdict is Verdict.FAIL
    assert invalid.value == pytest.approx(0.05)
    assert invalid.reason.startswith("invalid-input-rate: 0.07 vs 0.02 (+0.05 of 0.02), n=1000, e=")


def test_invalid_inputs_without_stable_compare_with_zero() -> None:
    results = {k: v for k, v in healthy().items() if k[0] is Track.CANARY}
    results[(Track.CANARY, Series.INVALID)] = ok({("schema",): 150})
    check = run(results)["invalid-input-rate"]
    assert check.verdict is Verdict.FAIL
    assert check.value == pytest.approx(0.03)
    assert check.reason.startswith("invalid-input-rate: 0.03 vs 0 (+0.03 of 0.02)")


def test_too_few_samples_is_inconclusive_not_no_data() -> None:
    results = healthy(n=200)
    results[(Track.CANARY, Series.REQUESTS)] = ok({("500",): 200})  # all errors, but n=200
    assert run(results)["error-rate"].verdict is Verdict.FAIL  # the tests need no floor
    outcome = aggregate(run(results, config=replace(CONFIG, min_samples=500)).values())
    assert outcome.verdict is Verdict.INCONCLUSIVE
    assert not outcome.no_data
    assert "error-rate: n=200, 500 samples needed" in outcome.reason


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
    psi = checks["feature-psi"]
    assert (psi.verdict, psi.subject, psi.sequential) == (Verdict.FAIL, "income", True)
    assert psi.value == pytest.approx(0.238, abs=0.01)
    # Over both tolerances (PSI and KS), with evidence.
    assert psi.reason.startswith("feature-psi of income: psi 0.23")
    assert "ks 0.19" in psi.reason
    assert "over (psi 0.1, ks 0.1); e=" in psi.reason
    assert checks["missing-rate"].verdict is not Verdict.FAIL


def test_categorical_features_get_psi_but_no_ks() -> None:
    results = healthy()
    values = dict(features(1000).values)
    values[("plan", "basic")], values[("plan", "team")] = 300.0, 400.0
    results[(Track.CANARY, Series.FEATURES)] = ok(values)
    check = run(results)["feature-psi"]
    assert (check.verdict, check.subject) == (Verdict.FAIL, "plan")
    assert "ks" not in check.reason.split(";")[0]  # categories have no order: PSI alone


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
    results[(Track.CANARY, Series.FEATURES)] = features(5000, shift_income=0.5)
    config = AnalysisConfig(
        features=EffectLimits.of(psi=0.1), ignored_features=frozenset({"income"})
    )
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
    assert "ks 0.25" in checks["prediction-psi"].reason  # class labels 0/1 are ordered
    assert checks["confidence-psi"].verdict is Verdict.FAIL
    assert "ks 0.5" in checks["confidence-psi"].reason


def test_a_thin_stable_cannot_vouch_for_the_canary() -> None:
    results = healthy()
    results[(Track.STABLE, Series.PREDICTIONS)] = predictions(50, 0.2)
    check = run(results)["prediction-psi"]
    assert check.verdict is Verdict.INCONCLUSIVE
    assert check.samples == 5000


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


def plan_counts(scale: float) -> QueryResult:
    shares = {"basic": 0.4, "pro": 0.45, "team": 0.15}  # PSI 0.12 against 0.6/0.3/0.1
    return ok({("plan", plan): share * scale for plan, share in shares.items()})


def test_drift_over_tolerance_waits_for_evidence() -> None:
    config = AnalysisConfig(features=EffectLimits.of(psi=0.1))
    results = healthy()
    results[(Track.CANARY, Series.BASELINE)] = ok(
        {("plan", "basic"): 0.6, ("plan", "pro"): 0.3, ("plan", "team"): 0.1}
    )
    results[(Track.CANARY, Series.FEATURES)] = plan_counts(20)
    (thin,) = evaluate(config, Observations(results))
    assert (thin.verdict, thin.samples) == (Verdict.INCONCLUSIVE, 20)
    assert "not yet conclusive" in thin.reason
    results[(Track.CANARY, Series.FEATURES)] = plan_counts(2000)
    (enough,) = evaluate(config, Observations(results))
    assert enough.verdict is Verdict.FAIL


def test_a_real_but_tiny_change_never_fails_however_much_data() -> None:
    results = healthy()
    results[(Track.CANARY, Series.FEATURES)] = features(1_000_000, shift_income=0.1)
    check = run(results, config=AnalysisConfig(features=EffectLimits.of(psi=0.05)))["feature-psi"]
    # PSI 0.0096: certainly a change (e-value huge), and certainly within tolerance.
    assert check.verdict is Verdict.PASS
    assert check.value == pytest.approx(0.0096, abs=0.001)


def test_a_change_must_exceed_every_tolerance_set() -> None:
    results = healthy()
    results[(Track.CANARY, Series.FEATURES)] = features(5000, shift_income=0.5)
    lenient = AnalysisConfig(features=EffectLimits.of(psi=0.1, kl=0.5))  # KL 0.12 < 0.5
    check = run(results, config=lenient)["feature-psi"]
    # Within one tolerance is within tolerance: KL is shown below 0.5.
    assert check.verdict is Verdict.PASS
    assert "kl at most 0.404, within 0.5" in check.reason
    strict = AnalysisConfig(features=EffectLimits.of(psi=0.1, kl=0.1))
    assert run(results, config=strict)["feature-psi"].verdict is Verdict.FAIL


def test_a_feature_few_requests_carry_drops_out_instead_of_blocking() -> None:
    results = healthy()
    values = dict(features(5000).values)
    for i, label in enumerate(DECILES):
        values[("age", label)] = 15.0 if i % 2 else 25.0  # 200 values in 5000 requests: 4%
    values[("age", "missing")] = 4800.0
    results[(Track.CANARY, Series.FEATURES)] = ok(values)
    config = AnalysisConfig(features=EffectLimits.of(psi=0.1))
    (check,) = evaluate(config, Observations(results))
    assert check.verdict is Verdict.PASS
    assert "too few values to judge, left out: age" in check.reason
    assert aggregate([check]).verdict is Verdict.PASS


TRAINING_DECILES = {**dict.fromkeys(DECILES, 0.1), "missing": 0.0}


def test_degenerate_features_are_named_for_what_they_are() -> None:
    constant = {**dict.fromkeys(DECILES, 0.0), "3": 40.0, "missing": 0.0}
    assert degenerate_feature("tenure", constant, TRAINING_DECILES) == Degenerate(
        "feature tenure is constant at serving (all 40 values in bin 3; training had 10 bins)",
        all_missing=False,
    )
    none_present = {**dict.fromkeys(DECILES, 0.0), "missing": 25.0}
    with_missing = {**TRAINING_DECILES, "missing": 0.04}
    assert degenerate_feature("usage", none_present, with_missing) == Degenerate(
        "feature usage is all missing at serving (25 values; training had 4.0% missing)",
        all_missing=True,
    )
    spread = {**dict.fromkeys(DECILES, 4.0), "missing": 1.0}
    assert degenerate_feature("tenure", spread, TRAINING_DECILES) is None


def test_a_few_values_or_a_training_shape_alike_are_not_called_degenerate() -> None:
    two = {"3": 2.0, "missing": 0.0}  # 10 x 0.1^2: one bin by chance 10% of the time
    assert degenerate_feature("x", two, TRAINING_DECILES) is None
    assert degenerate_feature("x", {**two, "3": 5.0}, TRAINING_DECILES) is not None  # 1e-4
    nearly_constant = {"0": 0.995, "1": 0.005, "missing": 0.0}
    assert degenerate_feature("x", {"0": 500.0, "1": 0.0}, nearly_constant) is None
    assert degenerate_feature("x", {"0": 5.0}, {"0": 1.0}) is None  # constant in training too
    # All missing: 0.04^2 is over the 1e-3 chance, 0.04^3 under it; mostly missing in training.
    often = {**TRAINING_DECILES, "missing": 0.04}
    assert degenerate_feature("x", {"missing": 2.0}, often) is None
    assert degenerate_feature("x", {"missing": 3.0}, often) is not None
    assert degenerate_feature("x", {"missing": 50.0}, {"0": 0.1, "missing": 0.9}) is None


def test_a_constant_feature_fails_named_as_constant() -> None:
    results = healthy()
    values = dict(features(1000).values)
    for label in DECILES:
        values[("income", label)] = 1000.0 if label == "3" else 0.0
    results[(Track.CANARY, Series.FEATURES)] = ok(values)
    psi = run(results)["feature-psi"]
    assert (psi.verdict, psi.subject) == (Verdict.FAIL, "income")
    assert psi.reason.startswith(
        "feature income is constant at serving (all 1000 values in bin 3; training had 10 "
        "bins); feature-psi of income: psi "
    )


def test_an_all_missing_feature_fails_the_missing_rate_named_as_such() -> None:
    results = healthy()
    values = dict(features(1000).values)
    for label in DECILES:
        values[("age", label)] = 0.0
    values[("age", "missing")] = 1000.0
    results[(Track.CANARY, Series.FEATURES)] = ok(values)
    checks = run(results)
    missing = checks["missing-rate"]
    assert (missing.verdict, missing.subject) == (Verdict.FAIL, "age")
    assert missing.reason.startswith(
        "feature age is all missing at serving (1000 values; training had 1.0% missing); "
        "missing-rate of age: 1 vs 0.01"
    )
    assert checks["feature-psi"].verdict is Verdict.PASS  # age dropped out: missing-rate judges


def test_an_all_missing_feature_cannot_drop_out_when_nothing_else_judges_it() -> None:
    results = healthy()
    values = dict(features(5000).values)
    for label in DECILES:
        values[("age", label)] = 0.0
    values[("age", "missing")] = 5000.0
    results[(Track.CANARY, Series.FEATURES)] = ok(values)
    config = AnalysisConfig(features=EffectLimits.of(psi=0.1))  # no missing-rate check
    (check,) = evaluate(config, Observations(results))
    assert (check.verdict, check.subject, check.blocking) == (Verdict.INCONCLUSIVE, "age", True)
    assert check.reason.startswith("feature age is all missing at serving (5000 values;")
    assert aggregate([check]).verdict is Verdict.INCONCLUSIVE  # not a pass with age left out


def test_the_budget_is_split_across_every_test() -> None:
    results = healthy()
    results[(Track.CANARY, Series.FEATURES)] = features(1000, shift_income=0.5)
    alone = AnalysisConfig(features=EffectLimits.of(psi=0.1), false_positive_rate=0.01)
    (check,) = evaluate(alone, Observations(results))
    assert ">= 300" in check.reason  # 3 features: e >= 3 / 0.01
    full = run(results)["feature-psi"]
    assert ">= 1.2e+03" in full.reason  # 12 tests (9 checks, 3 features twice)


def test_custom_checks_compare_their_value_and_need_samples() -> None:
    low = run(healthy(), custom=0.7)["custom/accuracy"]
    assert low.verdict is Verdict.FAIL
    assert low.reason == "custom/accuracy: 0.7 < min 0.8, n=5000"
    assert not low.sequential  # failureLimit applies
    assert run(healthy(n=100), custom=0.95)["custom/accuracy"].verdict is Verdict.PASS
    floored = replace(CONFIG, min_samples=500)
    thin = run(healthy(n=100), custom=0.95, config=floored)["custom/accuracy"]
    assert (thin.verdict, thin.sequential) == (Verdict.INCONCLUSIVE, False)
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
    assert [c.name for c in checks] == ["feature-psi", "missing-rate"]


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


def test_a_revision_judged_on_its_whole_life_is_read_as_its_totals() -> None:
    plan = plan_queries(CONFIG, canary=CANARY, stable=STABLE, window="95s", canary_totals=True)
    canary = plan.queries[(Track.CANARY, Series.FEATURES)].promql
    stable = plan.queries[(Track.STABLE, Series.PREDICTIONS)].promql
    assert canary == (
        'sum by (feature, bin) (modeldeploy_feature_bin_total{model="churn",revision="c4n4ry"})'
    )
    assert stable.endswith('{model="churn",revision="st4bl3"}[95s]))')  # the same period
