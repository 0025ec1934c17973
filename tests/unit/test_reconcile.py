"""A whole reconcile, analysis included, as one pure function: what was measured in, the
Plan (verdict, transition, status, every Event) out. The rollout runs on the in-memory
cluster of test_rollout_machine; Prometheus' answers come from a table."""

from datetime import datetime

import pytest
from test_rollout_machine import V2, Driver

from modeldeploy.analysis.config import Observations, QueryPlan
from modeldeploy.analysis.data import QueryResult
from modeldeploy.analysis.queries import Series
from modeldeploy.reconcile import Measured, measurements_needed
from modeldeploy.rollout import Subject, World

pytestmark = pytest.mark.unit

ANALYSIS = {
    "interval": "10s",
    "latency": {"p95Ms": 50},
    "errorRate": {"max": 1},
    "invalidInputRate": {"maxIncrease": 1},
    "drift": {"enabled": False},
    "golden": {"enabled": False},
}
FAST = {"0.025": 900.0, "0.05": 1000.0, "+Inf": 1000.0}
SLOW = {"0.025": 0.0, "0.05": 300.0, "0.1": 1000.0, "+Inf": 1000.0}
THIN = {"0.025": 5.0, "0.05": 5.0, "+Inf": 5.0}


def answer(plan: QueryPlan, latency: dict[str, float]) -> Observations:
    """Prometheus' answers by series: every revision scraped, 200s only, this latency."""
    results = {}
    for key in plan.queries:
        match key[1]:
            case Series.INFO:
                results[key] = QueryResult.of({(): 2.0})
            case Series.REQUESTS:
                results[key] = QueryResult.of({("200",): max(latency.values())})
            case Series.LATENCY:
                results[key] = QueryResult.of({(le,): n for le, n in latency.items()})
            case _:
                results[key] = QueryResult.of({})
    return Observations(results)


class Prometheus:
    """The measure seam: the queries the pure step asks for, answered from the table."""

    def __init__(self, latency: dict[str, float]) -> None:
        self.latency = latency
        self.latency_queries: list[str] = []
        self.since: list[datetime | None] = []

    def __call__(self, subject: Subject, world: World, now: datetime) -> Measured:
        needed = measurements_needed(subject, world, now, namespace_label="namespace")
        if needed.request is None:
            return Measured(gated=needed.gated)
        latency = next(q for k, q in needed.request.plan.queries.items() if k[1] is Series.LATENCY)
        self.latency_queries.append(latency.promql)
        self.since.append(needed.request.since)
        return Measured(True, needed.request, answer(needed.request.plan, self.latency))


def canary(prometheus: Prometheus) -> Driver:
    """A stable, then a new image: the canary at its first step, analysed every round."""
    driver = Driver(analysis=ANALYSIS)
    driver.until("Stable")
    driver.measure = prometheus
    driver.change(image=V2)
    driver.reconcile()
    return driver


def test_a_slow_canary_is_rolled_back_by_the_round_that_found_it() -> None:
    driver = canary(Prometheus(SLOW))
    for _ in range(5):
        driver.reconcile()
    assert driver.phase() == "RolledBack"
    events = driver.events()
    assert events.count("AnalysisFailed") == 1  # final at once: no failureLimit rounds
    assert events.index("AnalysisFailed") < events.index("RolledBack")
    last = driver.status.last_analysis
    assert last is not None
    assert (last.verdict, last.waiting) == ("fail", None)
    assert last.since is not None


def test_the_evidence_grows_from_the_first_round_and_passes_carry_the_rollout() -> None:
    prometheus = Prometheus(FAST)
    driver = canary(prometheus)
    driver.run(120, step=5)
    assert driver.phase() in ("Promoting", "Stable")
    assert "AnalysisPassed" in driver.events()
    # One test from the canary's first round on: its counters' totals, not a window.
    assert all("[" not in promql for promql in prometheus.latency_queries)
    assert prometheus.since[0] is not None
    assert set(prometheus.since) == {prometheus.since[0]}


def test_rounds_without_a_verdict_are_said_once_per_change() -> None:
    driver = canary(Prometheus(THIN))
    driver.run(60, step=10)
    assert driver.events().count("AnalysisInconclusive") == 1
    assert driver.status.last_analysis is not None
    assert driver.status.last_analysis.waiting == "samples"
    assert driver.phase() == "Progressing"  # thin data holds the step: never a pass


def test_without_prometheus_a_rollout_says_so_when_it_starts() -> None:
    driver = Driver(analysis=ANALYSIS)
    driver.until("Stable")
    driver.measure = lambda subject, world, now: Measured(disabled="no Prometheus")
    driver.change(image=V2)
    driver.run(10, step=1)
    events = driver.events()
    assert events.count("AnalysisDisabled") == 1
    assert events.index("AnalysisDisabled") == events.index("RolloutStarted") + 1
    driver.run(120, step=5)
    assert driver.phase() == "Stable"  # steps advance on time only
    assert driver.events().count("AnalysisDisabled") == 1
