"""The golden check (analysis/golden.py): its verdicts from the replays' counts, its query,
and what it does to a canary (rolled back) and to the stable after bakeTime (Degraded)."""

from collections.abc import Callable
from datetime import datetime

import pytest
from test_rollout_machine import V2, Driver

from modeldeploy import contract
from modeldeploy.analysis.checks import evaluate
from modeldeploy.analysis.config import AnalysisConfig, Observations, Track, plan_queries
from modeldeploy.analysis.data import QueryResult, QueryStatus
from modeldeploy.analysis.golden import GOLDEN, golden_check
from modeldeploy.analysis.queries import RevisionRef, Series
from modeldeploy.analysis.verdicts import Verdict, aggregate
from modeldeploy.reconcile import Measured, measurements_needed
from modeldeploy.rollout import Subject, World

pytestmark = pytest.mark.unit


def _counts(match: float = 0, mismatch: float = 0, error: float = 0) -> QueryResult:
    return QueryResult.of(
        {
            (contract.GOLDEN_MATCH,): match,
            (contract.GOLDEN_MISMATCH,): mismatch,
            (contract.GOLDEN_ERROR,): error,
        }
    )


def test_any_answer_that_did_not_match_fails_by_default() -> None:
    check = golden_check(0, _counts(match=40, mismatch=1))
    assert (check.verdict, check.value, check.threshold, check.samples) == (
        Verdict.FAIL, 1.0, 0.0, 41,
    )  # fmt: skip
    assert (
        check.reason == "golden: 1 of 41 golden answers did not match (1 mismatch, 0 error; max 0)"
    )
    assert check.sequential  # a canary's count only grows: final at once
    assert golden_check(0, _counts(match=9, error=1)).verdict is Verdict.FAIL


def test_answers_within_max_mismatches_pass_and_increase_fractions_round() -> None:
    assert golden_check(2, _counts(match=40, mismatch=2)).verdict is Verdict.PASS
    assert golden_check(0, _counts(match=7.6, mismatch=0.2)).verdict is Verdict.PASS
    assert golden_check(0, _counts(match=7.6, mismatch=0.9)).verdict is Verdict.FAIL


def test_before_the_first_replay_or_without_series_it_waits_without_holding_a_round() -> None:
    waiting = golden_check(0, _counts())
    assert (waiting.verdict, waiting.blocking, waiting.reason) == (
        Verdict.INCONCLUSIVE, False, "golden: no golden replay yet",
    )  # fmt: skip
    absent = golden_check(0, QueryResult.failed(QueryStatus.NO_DATA, "empty result"))
    assert (absent.verdict, absent.no_data, absent.blocking) == (Verdict.INCONCLUSIVE, True, False)


CANARY = RevisionRef("churn", "c1", matchers={"namespace": "ml"})


def test_the_plan_asks_for_the_golden_counts_only_when_enabled() -> None:
    plan = plan_queries(AnalysisConfig(golden_max_mismatches=0), canary=CANARY, window="5m")
    query = plan.queries[(Track.CANARY, Series.GOLDEN)]
    assert query.promql == (
        "sum by (result) (increase(modeldeploy_golden_checks_total"
        '{model="churn",revision="c1",namespace="ml"}[5m]))'
    )
    assert query.by == (contract.LABEL_RESULT,)
    off = plan_queries(AnalysisConfig(), canary=CANARY, window="5m")
    assert (Track.CANARY, Series.GOLDEN) not in off.queries


def _observed(golden: QueryResult, requests: float = 5000) -> Observations:
    return Observations(
        {
            (Track.CANARY, Series.INFO): QueryResult.of({(): 2.0}),
            (Track.CANARY, Series.REQUESTS): QueryResult.of({("200",): requests}),
            (Track.CANARY, Series.GOLDEN): golden,
        }
    )


def test_a_round_passes_on_its_other_checks_before_the_first_replay() -> None:
    config = AnalysisConfig(max_error_rate=0.01, golden_max_mismatches=0)
    waiting = aggregate(evaluate(config, _observed(_counts())))
    assert waiting.verdict is Verdict.PASS
    failing = aggregate(evaluate(config, _observed(_counts(match=10, mismatch=3))))
    assert (failing.verdict, failing.final) == (Verdict.FAIL, True)
    assert [c.name for c in failing.checks if c.verdict is Verdict.FAIL] == [GOLDEN]


# --- through the state machine --------------------------------------------------------------

GOLDEN_ONLY = {
    "interval": "10s",
    "errorRate": {"max": 1},
    "invalidInputRate": {"maxIncrease": 1},
    "drift": {"enabled": False},
}


def _answering(golden: Callable[[str], QueryResult]) -> Callable[..., Measured]:
    """The measure seam: every revision scraped with 200s, golden counts per revision."""

    def measure(subject: Subject, world: World, now: datetime) -> Measured:
        needed = measurements_needed(subject, world, now, namespace_label="namespace")
        if needed.request is None:
            return Measured(gated=needed.gated)
        revision = needed.request.target.revision
        results = {}
        for key in needed.request.plan.queries:
            match key[1]:
                case Series.INFO:
                    results[key] = QueryResult.of({(): 2.0})
                case Series.GOLDEN:
                    results[key] = golden(revision)
                case _:
                    results[key] = QueryResult.of({("200",): 100.0})
        return Measured(True, needed.request, Observations(results))

    return measure


def test_a_canary_whose_golden_answers_mismatch_is_rolled_back() -> None:
    driver = Driver(analysis=GOLDEN_ONLY)
    driver.until("Stable")
    stable = driver.status.stable_revision
    driver.measure = _answering(
        lambda rev: _counts(match=20) if rev == stable else _counts(match=5, mismatch=2)
    )
    driver.change(image=V2)
    driver.run(60, step=5)
    assert driver.phase() == "RolledBack"
    assert driver.status.stable_revision == stable
    assert driver.events().count("AnalysisFailed") == 1  # final at once


def test_a_stable_whose_golden_answers_change_is_degraded_with_an_event() -> None:
    driver = Driver(analysis=GOLDEN_ONLY)
    driver.until("Stable")
    changed: list[bool] = [False]
    driver.measure = _answering(
        lambda rev: _counts(match=9, mismatch=3) if changed[0] else _counts(match=12)
    )
    driver.run(30, step=5)
    assert driver.condition("Degraded") == ("False", "AsExpected")
    changed[0] = True
    driver.run(30, step=5)
    assert driver.phase() == "Degraded"
    assert driver.condition("Degraded") == ("True", "AnalysisFailed")
    assert driver.condition("Ready") == ("True", "StableServing")  # never rolled back
    assert "AnalysisFailed" in driver.events()
    last = driver.status.last_analysis
    assert last is not None
    assert [(c.name, c.verdict) for c in last.checks] == [(GOLDEN, "fail")]
