"""When a plan is due again on time alone (`Plan.due`): the moment each clock comparison of the
machine and the analysis flips, and that a plan made at that moment acts, so a rollout driven
only by its due times and the watch events of its own writes never waits for the resync."""

from datetime import datetime, timedelta

import pytest
from test_reconcile import ANALYSIS, FAST, Prometheus
from test_rollout_machine import V2, Driver, rev, stable_driver
from test_rollout_pods import canary_pod, rolling_out, stamp

from modeldeploy.analysis.config import Observations
from modeldeploy.analysis.data import QueryResult
from modeldeploy.api import to_wire
from modeldeploy.reconcile import Measured, measurements_needed
from modeldeploy.rollout import Plan, Subject, World
from modeldeploy.rollout.machine import READINESS_GRACE

pytestmark = pytest.mark.unit

SECOND = timedelta(seconds=1)
STEP_INTERVAL = timedelta(seconds=30)  # test_rollout_machine.base_spec
BAKE = timedelta(minutes=1)


def at(d: Driver, when: datetime) -> Plan:
    return d.reconcile(after=when - d.now)


def on_time_only(d: Driver, limit: int = 100) -> list[datetime]:
    """Reconcile as the operator does without outside changes: a second after a plan that
    wrote (the watch events of its own writes), else at the plan's due time; stop when
    nothing is due. Returns the reconcile times."""
    times: list[datetime] = []
    after = SECOND
    for _ in range(limit):
        before = to_wire(d.status)
        result = d.reconcile(after=after)
        times.append(d.now)
        if result.apply or result.delete or result.events or to_wire(result.status) != before:
            after = SECOND
        elif result.due is None:
            return times
        else:
            assert result.due > d.now
            after = result.due - d.now
    raise AssertionError(f"still due after {limit} reconciles: {d.status}")


def canary_at_its_first_step() -> tuple[Driver, datetime]:
    d = stable_driver()
    d.change(image=V2)
    d.reconcile()
    assert d.status.step == 0
    assert d.status.step_started_at is not None
    return d, d.status.step_started_at


# --- the machine's timers -------------------------------------------------------------------


def test_an_idle_stable_is_never_due() -> None:
    d = stable_driver()
    assert d.reconcile().due is None


def test_a_step_is_due_when_its_interval_ends_and_advances_then() -> None:
    d, started = canary_at_its_first_step()
    due = d.reconcile().due
    assert due == started + STEP_INTERVAL
    assert at(d, due - SECOND).due == due  # one second early: still waiting
    assert d.status.step == 0
    after = at(d, due)
    assert d.status.step == 1
    assert after.due == due + STEP_INTERVAL


@pytest.mark.parametrize(
    "change",
    [{"killSwitch": {"engaged": True}}, {"rollout": {"stepInterval": "30s", "paused": True}}],
)
def test_a_frozen_step_is_not_due(change: dict[str, object]) -> None:
    d, _ = canary_at_its_first_step()
    d.change(**change)
    d.reconcile()
    assert d.reconcile().due is None


def test_the_bake_is_due_when_it_ends_and_removes_the_previous_revision_then() -> None:
    d, _ = canary_at_its_first_step()
    d.until("Stable")
    bake_until = d.status.bake_until
    assert bake_until is not None
    assert d.status.previous_stable_revision is not None
    due = d.reconcile().due
    assert due == bake_until
    at(d, due - SECOND)
    assert d.status.previous_stable_revision is not None
    after = at(d, due)
    assert "BakeComplete" in [e.reason for e in after.events]
    assert d.status.previous_stable_revision is None
    assert d.reconcile().due is None


def test_a_pod_not_ready_is_due_when_its_grace_ends_and_reported_then() -> None:
    d, r2 = rolling_out()
    since = d.now
    pod = canary_pod(d, r2)
    d.cluster.pods[pod]["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "ModelNotServing",
         "lastTransitionTime": stamp(since)}
    ]  # fmt: skip
    due = d.reconcile().due
    assert due == since + READINESS_GRACE  # before the step's end (30 s after it began)
    at(d, due - SECOND)
    assert d.status.pod_problems == []
    at(d, due)
    assert [p.reason for p in d.status.pod_problems] == ["NotReady"]


# --- the analysis round ---------------------------------------------------------------------


def test_the_next_round_is_due_an_interval_after_the_last_and_runs_then() -> None:
    prometheus = Prometheus(FAST)
    d = Driver(analysis=ANALYSIS)
    d.until("Stable")
    d.measure = prometheus
    d.change(image=V2)
    d.reconcile()  # the canary is created; its first round once a pod is Ready
    first = d.reconcile()
    assert first.round is not None
    assert d.status.last_analysis is not None
    assert first.due == d.status.last_analysis.time + timedelta(seconds=10)
    rounds = len(prometheus.latency_queries)
    at(d, first.due - SECOND)
    assert len(prometheus.latency_queries) == rounds
    at(d, first.due)
    assert len(prometheus.latency_queries) == rounds + 1


def test_without_prometheus_no_round_is_ever_due() -> None:
    d = Driver(analysis=ANALYSIS)
    d.until("Stable")
    d.measure = lambda subject, world, now: Measured(disabled="no Prometheus")
    assert d.reconcile().due is None


def test_a_measurement_that_failed_is_due_again_at_once() -> None:
    d = Driver(analysis=ANALYSIS)
    d.until("Stable")
    d.measure = lambda subject, world, now: Measured(gated=True)  # Measure's holding answer
    d.change(image=V2)
    d.reconcile()
    assert d.reconcile().due == d.now


class Silent(Prometheus):
    """A Prometheus with no series at all (every query answered empty)."""

    def __init__(self) -> None:
        super().__init__(FAST)

    def __call__(self, subject: Subject, world: World, now: datetime) -> Measured:
        needed = measurements_needed(subject, world, now, namespace_label="namespace")
        if needed.request is None:
            return Measured(gated=needed.gated)
        empty = {key: QueryResult.of({}) for key in needed.request.plan.queries}
        return Measured(True, needed.request, Observations(empty))


def test_no_data_rolls_back_at_the_first_round_after_the_no_data_timeout() -> None:
    d = Driver(analysis={**ANALYSIS, "onNoData": "rollback", "noDataTimeout": "25s"})
    d.until("Stable")
    d.measure = Silent()
    d.change(image=V2)
    on_time_only(d)
    assert d.phase() == "RolledBack"
    rolled_back = next(h.time for h in d.status.history if h.event == "RolledBack")
    first_round = next(p.round.time for p in d.plans if p.round and p.round.revision == rev(V2))
    # Rounds every 10 s from the first: the timeout (25 s) is read at the round of 30 s.
    assert rolled_back == first_round + timedelta(seconds=30)


# --- a whole rollout on due times alone -----------------------------------------------------


@pytest.mark.parametrize("analysed", [False, True])
def test_a_rollout_completes_on_due_times_and_its_own_writes_alone(analysed: bool) -> None:
    d = Driver(analysis=ANALYSIS) if analysed else Driver()
    d.until("Stable")
    if analysed:
        d.measure = Prometheus(FAST)
    d.change(image=V2)
    start = d.now
    times = on_time_only(d)
    assert d.phase() == "Stable"
    assert d.status.previous_stable_revision is None  # baked and removed
    assert "BakeComplete" in d.events()
    # Two steps of 30 s and a bake of 1 min, each acted on when due: never a resync late.
    assert times[-1] - start <= 2 * STEP_INTERVAL + BAKE + timedelta(seconds=20)
