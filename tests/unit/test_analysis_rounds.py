"""The pure half of the analysis glue: spec -> settings, which revision a round judges,
when it is due, memory from status, and the outcome as status, signal and events."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeploy import api
from modeldeploy.analysis.config import (
    CUSTOM_PREFIX,
    NO_LIMITS,
    AnalysisConfig,
    CustomCheck,
    EffectLimits,
    Track,
)
from modeldeploy.analysis.queries import Series
from modeldeploy.analysis.rounds import (
    RoundTarget,
    Waiting,
    bake_config,
    choose_target,
    cohort_config,
    has_checks,
    map_spec,
    measurements_needed,
    memory_of,
    revision_ref,
    round_due,
    signal_of,
    status_check,
    waiting_event,
    waiting_kind,
)
from modeldeploy.analysis.verdicts import (
    Action,
    AnalysisMemory,
    CheckResult,
    Decision,
    OnNoData,
    Verdict,
    aggregate,
    decide,
    no_data_check,
    threshold_check,
)
from modeldeploy.api import Analysis, AnalysisResult, ModelDeploymentSpec, ModelDeploymentStatus
from modeldeploy.resources.revision import RevisionSource
from modeldeploy.rollout import Subject, World
from modeldeploy.rollout.world import ObservedDeployment

OWN_QUERY = 'acc{revision="{{revision}}",namespace="{{namespace}}"}'

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
IMAGE = "registry.example/churn@sha256:" + "1" * 64


def spec(**analysis: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": {"name": "churn", "version": "3"}, "image": IMAGE, "analysis": analysis}
    )


def subject(status: ModelDeploymentStatus, **analysis: Any) -> Subject:
    return Subject("churn", "ml", "uid", 1, spec(**analysis), status)


def world(**ready: int) -> World:
    """Deployments churn-<revision> with that many Ready pods."""
    return World(
        {
            f"churn-{rev}": ObservedDeployment(f"churn-{rev}", rev, None, n, n, None, None)
            for rev, n in ready.items()
        }
    )


def analysed(revision: str, at: datetime, verdict: str = "pass") -> AnalysisResult:
    return AnalysisResult(time=at, revision=revision, verdict=verdict)  # type: ignore[arg-type]


# --- spec -> settings -----------------------------------------------------------------------


def test_defaults_map_to_the_documented_checks() -> None:
    mapped = map_spec(spec().analysis)
    assert mapped.config == AnalysisConfig(
        false_positive_rate=0.01,
        min_samples=0,
        max_error_rate=0.01,
        max_invalid_increase=0.02,
        max_fallback_increase=0.05,
        features=EffectLimits.of(psi=0.05),
        max_missing_increase=0.05,
        predictions=EffectLimits.of(psi=0.1),
        golden_max_mismatches=0,
    )
    assert (mapped.failure_limit, mapped.on_no_data) == (2, OnNoData.HOLD)
    assert (mapped.interval, mapped.no_data_timeout, mapped.window) == (
        timedelta(seconds=30),
        timedelta(minutes=15),
        "5m",
    )


def test_every_field_maps() -> None:
    mapped = map_spec(
        spec(
            interval="2s",
            window="1m",
            minSamples=200,
            falsePositiveRate=0.05,
            failureLimit=3,
            onNoData="rollback",
            noDataTimeout="20s",
            latency={"p95Ms": 50, "p99Ms": 120},
            errorRate={"max": 0.05},
            invalidInputRate={"maxIncrease": 0.1},
            fallbackRate={"maxIncrease": 0.08},
            drift={
                "features": {
                    "psi": 0.15,
                    "ks": 0.2,
                    "kl": 0.15,
                    "js": 0.02,
                    "wasserstein": 0.04,
                    "ignore": ["data_usage_gb"],
                },
                "predictions": {"psi": 0.3, "ks": 0.1, "kl": 0.2, "js": 0.03, "wasserstein": 0.05},
                "missingRate": {"maxIncrease": 0.07},
            },
            golden={"enabled": True, "maxMismatches": 2},
            custom=[{"name": "accuracy", "query": OWN_QUERY, "min": 0.8}],
        ).analysis
    )
    assert mapped.config == AnalysisConfig(
        false_positive_rate=0.05,
        min_samples=200,
        latency_p95_ms=50.0,
        latency_p99_ms=120.0,
        max_error_rate=0.05,
        max_invalid_increase=0.1,
        max_fallback_increase=0.08,
        features=EffectLimits.of(psi=0.15, ks=0.2, kl=0.15, js=0.02, wasserstein=0.04),
        ignored_features=frozenset({"data_usage_gb"}),
        max_missing_increase=0.07,
        predictions=EffectLimits.of(psi=0.3, ks=0.1, kl=0.2, js=0.03, wasserstein=0.05),
        golden_max_mismatches=2,
        custom=(CustomCheck("accuracy", OWN_QUERY, minimum=0.8),),
    )
    assert (mapped.failure_limit, mapped.on_no_data, mapped.window) == (
        3,
        OnNoData.ROLLBACK,
        "1m",
    )
    assert (mapped.interval, mapped.no_data_timeout) == (
        timedelta(seconds=2),
        timedelta(seconds=20),
    )


def test_bounds_of_one_and_disabled_drift_switch_checks_off() -> None:
    mapped = map_spec(
        spec(
            errorRate={"max": 1},
            invalidInputRate={"maxIncrease": 1},
            fallbackRate={"maxIncrease": 1},
            drift={"enabled": False},
            golden={"enabled": False},
        ).analysis
    )
    assert mapped.config == AnalysisConfig()
    assert not has_checks(mapped.config)
    assert has_checks(map_spec(spec(drift={"enabled": False}).analysis).config)  # golden
    assert has_checks(map_spec(spec(latency={"p99Ms": 100}).analysis).config)


def with_stored_bad_query(analysis: Analysis, query: str, **bounds: float) -> Analysis:
    """`analysis` with a custom check the API now refuses (stored before it did)."""
    check = api.CustomCheck.model_construct(name="acc", query=query, **{"min": None, **bounds})
    return analysis.model_copy(update={"custom": [check]})


def test_a_custom_check_with_a_bad_template_is_kept_as_a_check_without_data() -> None:
    mapped = map_spec(with_stored_bad_query(spec().analysis, "acc{x='{{ oops }}'}", max=2))
    assert mapped.config.custom == ()
    (rejected,) = mapped.rejected
    check = rejected.as_check()
    assert (check.name, check.verdict, check.no_data, check.threshold) == (
        CUSTOM_PREFIX + "acc",
        Verdict.INCONCLUSIVE,
        True,
        2,
    )
    assert "unknown template variable" in check.reason
    only_rejected = map_spec(
        with_stored_bad_query(
            spec(
                errorRate={"max": 1},
                invalidInputRate={"maxIncrease": 1},
                fallbackRate={"maxIncrease": 1},
                drift={"enabled": False},
            ).analysis,
            "{{ nope }}",
            min=1,
        )
    )
    assert has_checks(only_rejected.config, only_rejected.rejected)


def test_inside_bake_time_no_check_compares_with_other_traffic() -> None:
    config = map_spec(spec(latency={"p95Ms": 80}).analysis).config
    baked = bake_config(config)
    assert (baked.predictions, baked.max_invalid_increase) == (NO_LIMITS, None)
    assert baked.golden_max_mismatches == 0
    assert (baked.latency_p95_ms, baked.features, baked.max_error_rate) == (
        80,
        EffectLimits.of(psi=0.05),
        0.01,
    )


# --- which revision, when ----------------------------------------------------------------


def test_the_canary_is_judged_against_the_stable_once_it_has_a_ready_pod() -> None:
    status = ModelDeploymentStatus(stable_revision="s", canary_revision="c", phase="Progressing")
    md = subject(status)
    mapped = map_spec(md.spec.analysis)
    assert choose_target(md, world(s=2, c=0), mapped, T0) is None
    target = choose_target(md, world(s=2, c=1), mapped, T0)
    assert target == RoundTarget("c", Track.CANARY, mapped.config, reference="s")
    assert target.may_roll_back


def cohort_subject(status: ModelDeploymentStatus, **analysis: Any) -> Subject:
    """A ModelDeployment whose rollout has a cohort phase (Gateway API)."""
    rollout = {
        "traffic": {"mode": "gatewayAPI", "httpRoute": "churn"},
        "canary": {"steps": [10], "cohort": {"header": {"name": "x-canary", "value": "1"}}},
    }
    analysis = analysis or {"latency": {"p95Ms": 80}, "accuracy": {"enabled": True}}
    raw = {"model": {"name": "churn", "version": "3"}, "image": IMAGE, "rollout": rollout,
           "analysis": analysis}  # fmt: skip
    return Subject("churn", "ml", "uid", 1, ModelDeploymentSpec.model_validate(raw), status)


IN_COHORT = ModelDeploymentStatus(
    stable_revision="s", canary_revision="c", phase="Progressing", cohort="header x-canary=1"
)


def test_a_cohort_is_judged_on_its_own_checks_and_the_stable_ones_wait_for_the_steps() -> None:
    md = cohort_subject(IN_COHORT)
    mapped = map_spec(md.spec.analysis)
    assert mapped.config.accuracy is not None
    target = choose_target(md, world(s=2, c=1), mapped, T0)
    assert target is not None
    assert (target.cohort, target.after_cohort) == (True, False)
    assert target.config == cohort_config(mapped.config)
    assert (target.config.predictions, target.config.max_invalid_increase) == (NO_LIMITS, None)
    assert target.config.accuracy is None
    assert (target.config.latency_p95_ms, target.config.features) == (80, mapped.config.features)
    outcome, decision = decided([latency(12.0)])
    reason = signal_of(target, outcome, decision, T0).reason
    assert reason.startswith("all 1 checks passed: latency-p95")
    assert "checks against the stable (prediction drift, invalid-input increase, accuracy) " \
        "wait for the weighted steps" in reason  # fmt: skip
    # Its own requests are its counters' totals: it served no one else.
    needed = measurements_needed(md, world(s=2, c=1), T0, namespace_label="")
    assert needed.request is not None
    own = needed.request.plan.queries[(Track.CANARY, Series.REQUESTS)].promql
    assert "increase(" not in own
    assert not [key for key in needed.request.plan.queries if key[0] is Track.STABLE]


def test_after_a_cohort_the_weighted_steps_compare_the_same_window_on_both_sides() -> None:
    status = IN_COHORT.model_copy(update={"cohort": None, "step": 0})
    md = cohort_subject(status)
    mapped = map_spec(md.spec.analysis)
    target = choose_target(md, world(s=2, c=1), mapped, T0)
    assert target is not None
    assert (target.cohort, target.after_cohort) == (False, True)
    assert target.config == mapped.config  # every check, the stable's too
    needed = measurements_needed(md, world(s=2, c=1), T0, namespace_label="")
    assert needed.request is not None
    queries = needed.request.plan.queries
    # Not the totals (which hold the cohort's requests): the increase over the stable's range.
    own = queries[(Track.CANARY, Series.LABELLED)].promql
    stable = queries[(Track.STABLE, Series.LABELLED)].promql
    assert "increase(" in own
    assert own.split("[")[1] == stable.split("[")[1]


def test_a_cohort_with_only_checks_against_the_stable_lasts_its_step_interval_alone() -> None:
    only_stable = {"errorRate": {"max": 1}, "drift": {"enabled": False},
                   "golden": {"enabled": False}, "accuracy": {"enabled": True}}  # fmt: skip
    md = cohort_subject(IN_COHORT, **only_stable)
    needed = measurements_needed(md, world(s=2, c=1), T0, namespace_label="")
    assert (needed.gated, needed.request) == (False, None)  # not held for a verdict
    weighted = cohort_subject(IN_COHORT.model_copy(update={"cohort": None, "step": 0}),
                              **only_stable)  # fmt: skip
    assert measurements_needed(weighted, world(s=2, c=1), T0, namespace_label="").gated


def test_the_stable_is_judged_on_drift_after_bake_and_on_everything_within() -> None:
    mapped = map_spec(spec(latency={"p95Ms": 80}).analysis)
    after = ModelDeploymentStatus(stable_revision="s", phase="Stable")
    target = choose_target(subject(after, latency={"p95Ms": 80}), world(s=2), mapped, T0)
    assert target == RoundTarget("s", Track.STABLE, mapped.config.drift_only())
    assert not target.may_roll_back
    baking = after.model_copy(
        update={"previous_stable_revision": "p", "bake_until": T0 + timedelta(minutes=1)}
    )
    target = choose_target(subject(baking), world(s=2, p=2), mapped, T0)
    assert target == RoundTarget("s", Track.STABLE, bake_config(mapped.config), in_bake=True)
    assert target.may_roll_back
    # Bake time over (the machine removes the previous revision on this reconcile).
    over = choose_target(subject(baking), world(s=2, p=2), mapped, T0 + timedelta(minutes=2))
    assert over is not None
    assert not over.in_bake


def test_nothing_is_judged_when_killed_unready_or_without_drift_or_golden_checks() -> None:
    stable = ModelDeploymentStatus(stable_revision="s", phase="Stable")
    mapped = map_spec(spec().analysis)
    assert choose_target(subject(stable), world(s=0), mapped, T0) is None
    killed = subject(stable.model_copy(update={"phase": "Killed"}))
    assert choose_target(killed, world(s=2), mapped, T0) is None
    no_drift = map_spec(spec(drift={"enabled": False}, golden={"enabled": False}).analysis)
    assert choose_target(subject(stable), world(s=2), no_drift, T0) is None
    golden_only = map_spec(spec(drift={"enabled": False}).analysis)
    target = choose_target(subject(stable), world(s=2), golden_only, T0)
    assert target is not None
    assert target.config == AnalysisConfig(golden_max_mismatches=0)  # its answers, watched


def test_a_round_is_due_after_the_interval_or_for_another_revision() -> None:
    interval = timedelta(seconds=30)
    status = ModelDeploymentStatus(last_analysis=analysed("c", T0))
    assert round_due(ModelDeploymentStatus(), "c", interval, T0)
    assert not round_due(status, "c", interval, T0 + timedelta(seconds=29, microseconds=999))
    assert round_due(status, "c", interval, T0 + timedelta(seconds=30))
    assert round_due(status, "other", interval, T0 + timedelta(seconds=1))


def test_the_failing_round_of_a_rolled_back_canary_stays_in_status_for_an_interval() -> None:
    interval = timedelta(seconds=30)
    failed = ModelDeploymentStatus(
        stable_revision="stable", last_analysis=analysed("canary", T0, verdict="fail")
    )
    assert not round_due(failed, "stable", interval, T0 + timedelta(seconds=1))
    assert round_due(failed, "stable", interval, T0 + timedelta(seconds=30))
    assert round_due(failed, "next-canary", interval, T0 + timedelta(seconds=1))


def test_memory_comes_from_status_only_for_the_same_revision() -> None:
    status = ModelDeploymentStatus(
        last_analysis=analysed("c", T0, "fail"), consecutive_failures=1, no_data_since=T0
    )
    assert memory_of(status, "c") == AnalysisMemory(1, T0)
    assert memory_of(status, "new") == AnalysisMemory()
    assert memory_of(ModelDeploymentStatus(), "c") == AnalysisMemory()


def test_series_are_selected_by_namespace_and_version_comes_from_the_revision() -> None:
    md = subject(ModelDeploymentStatus())
    spec_revision = RevisionSource.of(md.spec).revision
    ref = revision_ref(md, World(), spec_revision, "namespace")
    assert (ref.model, ref.revision, ref.version, ref.name) == (
        "churn",
        spec_revision,
        "3",
        "churn",
    )
    assert dict(ref.matchers) == {"namespace": "ml"}
    other = revision_ref(md, World(), "old", "")
    assert (other.version, dict(other.matchers)) == ("", {})


# --- outcome -> status, signal, events ----------------------------------------------------


def latency(value: float, n: int = 300) -> CheckResult:
    return threshold_check("latency-p95", value, n, 200, maximum=50, unit=" ms")


def decided(checks: list[CheckResult], memory: AnalysisMemory | None = None) -> Any:
    outcome = aggregate(checks)
    decision = decide(
        outcome,
        memory or AnalysisMemory(),
        now=T0,
        failure_limit=2,
        on_no_data=OnNoData.ROLLBACK,
        no_data_timeout=timedelta(seconds=30),
    )
    return outcome, decision


def test_status_checks_name_the_subject_and_hold_no_nan() -> None:
    psi = threshold_check(
        "feature-psi", float("nan"), 400, 200, maximum=0.15, subject="monthly_charges"
    )
    check = status_check(psi)
    assert (check.name, check.value, check.threshold, check.samples, check.verdict) == (
        "feature-psi/monthly_charges",
        None,
        0.15,
        400,
        "inconclusive",
    )
    assert status_check(latency(72.5)).value == 72.5


def test_a_failing_canary_rolls_back_at_the_failure_limit() -> None:
    canary = RoundTarget("c", Track.CANARY, AnalysisConfig())
    outcome, decision = decided([latency(72.5)])
    first = signal_of(canary, outcome, decision, T0)
    assert (first.verdict, first.rollback, first.consecutive_failures) == ("fail", False, 1)
    assert first.reason == "failure 1 of 2: latency-p95: 72.5 ms > max 50 ms, n=300"
    outcome, decision = decided([latency(72.5)], decision.memory)
    second = signal_of(canary, outcome, decision, T0)
    assert (second.rollback, second.consecutive_failures, second.samples) == (True, 2, 300)
    assert [c.name for c in second.checks] == ["latency-p95"]


def test_a_pass_names_every_check_with_value_threshold_and_samples() -> None:
    canary = RoundTarget("c", Track.CANARY, AnalysisConfig())
    errors = threshold_check("error-rate", 0.0, 300, 200, maximum=0.01)
    outcome, decision = decided([latency(12.0), errors])
    signal = signal_of(canary, outcome, decision, T0)
    assert signal.verdict == "pass"
    assert signal.reason == (
        "all 2 checks passed: latency-p95: 12 ms within max 50 ms, n=300; "
        "error-rate: 0 within max 0.01, n=300"
    )


def test_the_stable_rolls_back_only_on_failures_inside_bake_time() -> None:
    no_data = [no_data_check("feature-psi", 0.1, "unreachable: refused")]
    later = T0 + timedelta(minutes=1)
    memory = AnalysisMemory(0, T0)
    outcome, _ = decided(no_data)
    timed_out = decide(
        outcome,
        memory,
        now=later,
        failure_limit=2,
        on_no_data=OnNoData.ROLLBACK,
        no_data_timeout=timedelta(seconds=30),
    )
    assert timed_out.action is Action.ROLLBACK
    baking = RoundTarget("s", Track.STABLE, AnalysisConfig(), in_bake=True)
    canary = RoundTarget("c", Track.CANARY, AnalysisConfig())
    assert not signal_of(baking, outcome, timed_out, later).rollback
    assert signal_of(canary, outcome, timed_out, later).rollback
    failing = aggregate([latency(99)])
    limit = Decision(Action.ROLLBACK, AnalysisMemory(2), "failure 2 of 2")
    assert signal_of(baking, failing, limit, T0).rollback
    after_bake = RoundTarget("s", Track.STABLE, AnalysisConfig())
    assert not signal_of(after_bake, failing, limit, T0).rollback


def test_waiting_is_told_apart_and_reported_with_the_reason() -> None:
    timeout = timedelta(seconds=30)
    few = [threshold_check("latency-p95", 12, 40, 200, maximum=50)]
    outcome, decision = decided(few)
    assert waiting_kind(outcome, decision.memory, timeout, T0) is Waiting.SAMPLES
    event = waiting_event("c", Waiting.SAMPLES, decision)
    assert (event.type, event.reason) == ("Normal", "AnalysisInconclusive")
    assert "n=40, 200 samples needed" in event.message
    outcome, decision = decided([no_data_check("error-rate", 0.01, "unreachable: refused")])
    assert waiting_kind(outcome, decision.memory, timeout, T0) is Waiting.NO_DATA
    assert waiting_event("c", Waiting.NO_DATA, decision).reason == "AnalysisNoData"
    late = AnalysisMemory(0, T0 - timedelta(seconds=31))
    assert waiting_kind(outcome, late, timeout, T0) is Waiting.TIMED_OUT
    assert waiting_kind(aggregate([latency(1)]), late, timeout, T0) is None


def test_checks_waiting_for_the_same_cause_are_named_once() -> None:
    canary = RoundTarget("c", Track.CANARY, AnalysisConfig())
    why = "unreachable: ConnectionError: cannot connect to http://127.0.0.1:9"
    checks = [no_data_check(name, 0.1, why) for name in ("latency-p95", "error-rate")]
    checks.append(threshold_check("feature-psi", 0.3, 20, 200, maximum=0.15, subject="age"))
    outcome, decision = decided(checks)
    signal = signal_of(canary, outcome, decision, T0)
    assert signal.reason == (
        f"no data for 0s (noDataTimeout 30s): latency-p95, error-rate: no data ({why}); "
        "feature-psi of age: n=20, 200 samples needed"
    )
