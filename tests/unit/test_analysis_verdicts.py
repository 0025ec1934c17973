"""Three-valued verdicts, aggregation, and the rollback decision across rounds."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from modeldeploy.analysis.verdicts import (
    Action,
    AnalysisMemory,
    AnalysisOutcome,
    CheckResult,
    OnNoData,
    Verdict,
    aggregate,
    combine,
    decide,
    no_data_check,
    threshold_check,
)

pytestmark = pytest.mark.unit


def test_no_verdict_before_min_samples_even_on_a_terrible_value() -> None:
    result = threshold_check("error-rate", 0.9, 499, 500, maximum=0.01)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "n=499, 500 samples needed" in result.reason
    assert not result.no_data


def test_threshold_check_names_value_threshold_and_samples() -> None:
    failed = threshold_check("latency-p95", 312.5, 812, 500, maximum=250, unit=" ms")
    assert failed.verdict is Verdict.FAIL
    assert (failed.value, failed.threshold, failed.samples) == (312.5, 250, 812)
    assert failed.reason == "latency-p95: 312.5 ms > max 250 ms, n=812"
    passed = threshold_check("accuracy", 0.91, 900, 500, minimum=0.8)
    assert passed.verdict is Verdict.PASS
    assert passed.reason == "accuracy: 0.91 within min 0.8, n=900"
    low = threshold_check("accuracy", 0.7, 900, 500, minimum=0.8, maximum=1.0)
    assert low.verdict is Verdict.FAIL
    assert "0.7 < min 0.8" in low.reason


def test_a_missing_value_is_never_a_pass() -> None:
    assert threshold_check("x", math.nan, 900, 500, maximum=1).verdict is Verdict.INCONCLUSIVE
    assert threshold_check("x", None, 900, 500, maximum=1).verdict is Verdict.INCONCLUSIVE


def test_no_data_checks_are_flagged_and_json_safe() -> None:
    result = no_data_check("latency-p95", 250, "unreachable: connection refused")
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.no_data
    assert result.reason == "latency-p95: no data (unreachable: connection refused)"
    assert result.as_status() == {
        "name": "latency-p95", "value": None, "threshold": 250, "samples": 0,
        "verdict": "inconclusive",
    }  # fmt: skip
    nan = threshold_check("x", math.nan, 900, 500, maximum=1)
    assert nan.as_status()["value"] is None
    with pytest.raises(ValueError, match="minimum or a maximum"):
        threshold_check("x", 1.0, 900, 500)


def feature(subject: str, value: float, samples: int = 600, limit: float = 0.1) -> CheckResult:
    return threshold_check("feature-psi", value, samples, 500, maximum=limit, subject=subject)


def test_combine_names_the_worst_failing_subject_and_lists_others() -> None:
    combined = combine(
        "feature-psi", [feature("age", 0.05), feature("income", 0.4), feature("zip", 0.2)]
    )
    assert combined.verdict is Verdict.FAIL
    assert combined.subject == "income"
    assert combined.value == 0.4
    assert combined.reason.startswith("feature-psi of income: 0.4 > max 0.1")
    assert combined.reason.endswith("also failing: zip 0.2")
    assert combined.as_status()["name"] == "feature-psi/income"


def test_combine_prefers_no_data_among_inconclusive_and_else_reports_the_worst() -> None:
    unsure = combine(
        "feature-psi",
        [
            feature("age", 0.05),
            feature("zip", 0.3, samples=10),
            no_data_check("feature-psi", 0.1, "gone"),
        ],
    )
    assert unsure.verdict is Verdict.INCONCLUSIVE
    assert unsure.no_data
    assert "2 of 3 inconclusive" in unsure.reason
    passed = combine("feature-psi", [feature("age", 0.05), feature("zip", 0.07)])
    assert (passed.verdict, passed.subject) == (Verdict.PASS, "zip")


def test_aggregate_is_fail_then_inconclusive_then_pass() -> None:
    ok = threshold_check("a", 1, 600, 500, maximum=2)
    bad = threshold_check("b", 3, 600, 500, maximum=2)
    thin = threshold_check("c", 3, 6, 500, maximum=2)
    gone = no_data_check("d", 2, "no series")
    assert aggregate([ok, bad, thin, gone]).verdict is Verdict.FAIL
    assert aggregate([ok, thin]).verdict is Verdict.INCONCLUSIVE
    assert not aggregate([ok, thin]).no_data
    assert aggregate([ok, gone]).no_data
    passed = aggregate([ok])
    assert (passed.verdict, passed.samples, passed.reason) == (
        Verdict.PASS,
        600,
        "all 1 checks passed",
    )
    empty = aggregate([])
    assert empty.verdict is Verdict.INCONCLUSIVE
    assert empty.reason == "no checks configured"


def outcome(verdict: Verdict, no_data: bool = False) -> AnalysisOutcome:
    return AnalysisOutcome(verdict, (), 600, no_data, verdict.value)


PASS = outcome(Verdict.PASS)
FAIL = outcome(Verdict.FAIL)
THIN = outcome(Verdict.INCONCLUSIVE)
NO_DATA = outcome(Verdict.INCONCLUSIVE, no_data=True)
IDLE = AnalysisOutcome(Verdict.INCONCLUSIVE, (), 0, False, "no requests")  # scraped, unused


T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
INTERVAL = timedelta(seconds=30)


def run(
    rounds: list[AnalysisOutcome], on_no_data: OnNoData = OnNoData.HOLD, limit: int = 2
) -> list[Action]:
    """One round every 30 s, noDataTimeout 1m."""
    memory, actions = AnalysisMemory(), []
    for i, round_outcome in enumerate(rounds):
        decision = decide(
            round_outcome,
            memory,
            now=T0 + i * INTERVAL,
            failure_limit=limit,
            on_no_data=on_no_data,
            no_data_timeout=timedelta(minutes=1),
        )
        memory = decision.memory
        actions.append(decision.action)
    return actions


def test_failure_limit_consecutive_failures_roll_back() -> None:
    assert run([FAIL, FAIL]) == [Action.HOLD, Action.ROLLBACK]
    assert run([FAIL], limit=1) == [Action.ROLLBACK]


def test_a_pass_resets_the_failure_count() -> None:
    assert run([FAIL, PASS, FAIL, PASS]) == [
        Action.HOLD, Action.PROCEED, Action.HOLD, Action.PROCEED,
    ]  # fmt: skip


def test_inconclusive_rounds_hold_and_do_not_excuse_failures() -> None:
    assert run([FAIL, THIN, FAIL]) == [Action.HOLD, Action.HOLD, Action.ROLLBACK]
    assert run([FAIL, NO_DATA, FAIL]) == [Action.HOLD, Action.HOLD, Action.ROLLBACK]


def test_no_verdict_for_no_data_timeout_follows_on_no_data() -> None:
    # Rounds at 0s, 30s, 60s, 90s without a verdict: the timeout (1m) is reached at 60s.
    assert run([NO_DATA] * 4, OnNoData.ROLLBACK) == [Action.HOLD] * 2 + [Action.ROLLBACK] * 2
    # Thin but flowing data is not a wait for data: the evidence grows, no clock runs.
    assert run([THIN] * 4, OnNoData.ROLLBACK) == [Action.HOLD] * 4
    # A revision that serves nothing is waiting for data.
    assert run([IDLE] * 4, OnNoData.ROLLBACK) == [Action.HOLD] * 2 + [Action.ROLLBACK] * 2
    assert run([NO_DATA] * 4, OnNoData.HOLD) == [Action.HOLD] * 4
    # A verdict restarts the clock; a failure is a verdict too.
    assert run([NO_DATA, NO_DATA, PASS, NO_DATA, NO_DATA], OnNoData.ROLLBACK) == [
        Action.HOLD, Action.HOLD, Action.PROCEED, Action.HOLD, Action.HOLD,
    ]  # fmt: skip
    assert run([THIN, FAIL, THIN, THIN], OnNoData.ROLLBACK, limit=3) == [Action.HOLD] * 4


def test_decisions_explain_themselves() -> None:
    memory = AnalysisMemory(inconclusive_since=T0)
    held = decide(
        NO_DATA,
        memory,
        now=T0 + timedelta(minutes=15),
        failure_limit=2,
        on_no_data=OnNoData.HOLD,
        no_data_timeout=timedelta(minutes=15),
    )
    assert held.reason == (
        "no data for 15m00s (noDataTimeout 15m00s): inconclusive; onNoData=hold, holding"
    )
    assert held.memory == memory
    failed = decide(
        FAIL,
        memory,
        now=T0,
        failure_limit=2,
        on_no_data=OnNoData.HOLD,
        no_data_timeout=timedelta(minutes=15),
    )
    assert failed.reason == "failure 1 of 2: fail"
    assert failed.memory == AnalysisMemory(1, None)
