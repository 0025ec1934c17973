"""Chaos on the real cluster with analysis on (real Prometheus, real model servers behind
kwok pods, client traffic through the `<name>` Service):

- the operator SIGKILLed at random moments, at least 30 times, across promotions of
  healthy canaries and rollbacks of bad ones (slow, skewed);
- Prometheus stopped in the middle of a canary's analysis and started again;
- the whole control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)
  restarted in the middle of a rollout.

Each asserts the end states (0 stuck rollouts, 0 wrong outcomes, 0 orphaned objects,
minWarm Ready pods never breached while sampled, every history entry there once) and
prints its figures.
"""

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from analysis_stack import (
    ANALYSIS,
    MIN_WARM,
    NAME,
    SKEWED,
    SLOW,
    V1,
    V3,
    AnalysisStack,
    Body,
    Sample,
    Timeline,
    printed_section,
    stable_stack,
)
from operator_harness import OperatorKiller, WarmWatcher, wait_for

from modeldeploy.devenv import testruns
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.tools import Toolchain
from modeldeploy.resources.names import LABEL_REVISION

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

NAMESPACE = "chaos"
RATE = 40.0  # requests/s through the Service
KILLS = 30
ROUNDS = 3  # of the four variants, at most: rollouts go on until the last kill
SEED = 17
# One step: the canary gets half the pods (and of the traffic) at once, so that each
# rollout's analysis is short and the kills land in every phase of many rollouts.
ROLLOUT: Body = {"canary": {"steps": [50]}, "stepInterval": "4s", "bakeTime": "5s"}
# Latency judged with room (a loaded 2-core machine: a healthy server's p95 can pass 40 ms),
# but for the slow variant: its 60 ms is judged against the tests' 40 ms.
ROOMY: Body = {**ANALYSIS, "latency": {"p95Ms": 1000}}
PROMOTION_TIMEOUT = 420.0  # a healthy canary's analysis, with the operator down at times
ROLLBACK_TIMEOUT = 240.0


@dataclass(frozen=True)
class Change:
    what: str
    image: str
    version: str
    healthy: bool

    @property
    def analysis(self) -> Body:
        return ANALYSIS if self.image == SLOW else ROOMY


# Each round rolls every variant once: bad, healthy, bad, healthy (back to v1's image).
VARIANTS = (
    ("slow", SLOW, "4", False),
    ("healthy v3", V3, "3", True),
    ("skewed", SKEWED, "2", False),
    ("healthy v1", V1, "1", True),
)


def changes() -> list[Change]:
    """The variants in turn, ROUNDS times; a new model version each time makes a new
    revision of the same image."""
    return [
        Change(what, image, f"{version}-r{round_}", healthy)
        for round_ in range(1, ROUNDS + 1)
        for what, image, version, healthy in VARIANTS
    ]


@dataclass(frozen=True)
class Outcome:
    change: Change
    canary: str
    end: str  # "promoted", "rolled back" or "stuck"
    seconds: float
    history: list[Body]  # this revision's entries

    @property
    def right(self) -> bool:
        return self.end == ("promoted" if self.change.healthy else "rolled back")


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster,
    private_prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with stable_stack(
        kube, private_prometheus, workdir, NAMESPACE, rollout=ROLLOUT, analysis=ROOMY
    ) as s:
        yield s


def roll_out(stack: AnalysisStack, change: Change) -> Outcome:
    """Apply `change`; wait for its canary and its end (promoted or rolled back)."""
    before = stack.status()
    started = time.monotonic()
    stack.deploy(change.image, change.version, rollout=ROLLOUT, analysis=change.analysis)

    def new_canary() -> str | None:
        canary: str | None = stack.status().get("canaryRevision")
        return canary if canary not in (None, before.get("canaryRevision")) else None

    canary: str = wait_for(new_canary, timeout=120, what=f"{change.what}: a canary")
    return await_end(stack, change, canary, before["stableRevision"], started)


def await_end(
    stack: AnalysisStack, change: Change, canary: str, stable: str, started: float
) -> Outcome:
    """Until `canary` is no longer the canary: promoted, rolled back (the stable kept), or
    "stuck" when neither comes within the change's timeout."""

    def end() -> str | None:
        status = stack.status()
        if status.get("canaryRevision") == canary:
            return None
        if status.get("stableRevision") == canary:
            return "promoted"
        if status.get("failedRevision") == canary and status.get("stableRevision") == stable:
            return "rolled back"
        return f"neither: {status.get('phase')}, stable {status.get('stableRevision')}"

    limit = PROMOTION_TIMEOUT if change.healthy else ROLLBACK_TIMEOUT
    try:
        ended: str = wait_for(end, timeout=limit, interval=0.5, what=f"{change.what}: the end")
    except TimeoutError:
        ended = "stuck"
    history = [h for h in stack.status().get("history", []) if h["revision"] == canary]
    return Outcome(change, canary, ended, time.monotonic() - started, history)


def history_as_expected(outcome: Outcome) -> bool:
    """The revision's history: one Started, then one Promoted or RolledBack."""
    closing = "Promoted" if outcome.end == "promoted" else "RolledBack"
    return [h["event"] for h in outcome.history] == ["Started", closing]


def settled_owned(stack: AnalysisStack) -> dict[str, Body]:
    """Once the bake is over: the owned objects, when only the stable's (and shared ones,
    without a revision) are left; else nothing."""
    stable = stack.status()["stableRevision"]
    owned = stack.reader.owned(NAMESPACE, NAME)
    revisions = {(b["metadata"].get("labels") or {}).get(LABEL_REVISION) for b in owned.values()}
    return owned if revisions <= {stable, None, "fallback"} else {}


def assert_no_orphans(stack: AnalysisStack, outcomes: list[Outcome]) -> dict[str, Body]:
    owned: dict[str, Body] = wait_for(
        lambda: settled_owned(stack), timeout=120, what="only the stable's objects left"
    )
    uid = stack.reader.model_deployment(NAMESPACE, NAME)["metadata"]["uid"]
    unowned = [
        key
        for key, body in owned.items()
        if uid not in {r["uid"] for r in body["metadata"].get("ownerReferences") or []}
    ]
    assert not unowned, f"objects without the ModelDeployment as owner: {unowned}"
    gone = {o.canary for o in outcomes} - {stack.status()["stableRevision"]}
    for kind in ("deployments", "services", "hpas", "pdbs"):
        listed = getattr(stack.reader, kind)(NAMESPACE, NAME)
        assert not [n for n in listed if any(rev in n for rev in gone)], (kind, listed)
    return owned


def events_per_transition(stack: AnalysisStack, outcomes: list[Outcome]) -> dict[str, int]:
    """How many Events each history transition got (Started -> RolloutStarted): 1 each
    when none was lost or posted twice."""
    reasons = {"Started": "RolloutStarted", "Promoted": "Promoted", "RolledBack": "RolledBack"}
    posted = {reason: [e["message"] for e in stack.events(reason)] for reason in reasons.values()}

    def reason(entry: Body) -> str:
        return reasons[entry["event"]]

    return {
        # Their messages start with the revision they are about (others may name it later).
        f"{h['event']} {o.canary}": sum(m.startswith(o.canary) for m in posted[reason(h)])
        for o in outcomes
        for h in o.history
    }


def phase_now(stack: AnalysisStack) -> str:
    status = stack.status()
    if status.get("canaryRevision"):
        return f"{status.get('phase')} (canary at {status.get('canaryWeight', 0)}%)"
    return str(status.get("phase"))


def summary(outcomes: list[Outcome]) -> list[str]:
    return [
        f"  {o.change.what:11} {o.canary}: {o.end} in {o.seconds:5.1f}s, history "
        f"{[h['event'] for h in o.history]}: {o.history[-1]['reason'][:90] if o.history else ''}"
        for o in outcomes
    ]


def test_operator_killed_30_times_across_promotions_and_rollbacks(stack: AnalysisStack) -> None:
    rng = random.Random(SEED)
    outcomes: list[Outcome] = []
    with printed_section(f"{KILLS}+ operator SIGKILLs (seed {SEED})") as lines:
        with (
            WarmWatcher(stack.reader, NAMESPACE, NAME, min_warm=MIN_WARM) as warm,
            OperatorKiller(stack.operator, rng, lambda: phase_now(stack), KILLS) as killer,
        ):
            # Every variant once, then on until the last kill (no kill after it: the rollout
            # under way ends in peace, or is stuck).
            for number, change in enumerate(changes(), start=1):
                if number > len(VARIANTS) and killer.done:
                    break
                with stack.traffic(RATE, seed=number):  # bounded: 900 s at most
                    outcomes.append(roll_out(stack, change))
                if outcomes[-1].end == "stuck":
                    break
        owned = assert_no_orphans(stack, outcomes)
        events = events_per_transition(stack, outcomes)
        wrong_events = {t: n for t, n in events.items() if n != 1}
        kills_in = Counter(seen.split(" ")[0] for seen in killer.kills)
        lines.append(f"{len(killer.kills)} SIGKILLs over {len(outcomes)} rollouts, by phase "
                     f"at the kill: {dict(kills_in)}")  # fmt: skip
        lines.extend(summary(outcomes))
        lines.append(f"stuck {sum(o.end == 'stuck' for o in outcomes)}, wrong end "
                     f"{sum(not o.right for o in outcomes)}, lowest Ready stable pods "
                     f"{warm.lowest_stable} (minWarm {MIN_WARM}), lowest behind the Service "
                     f"{warm.lowest_serving}, over {warm.samples} samples "
                     f"({warm.failed_samples} failed reads)")  # fmt: skip
        lines.append(f"left: {sorted(owned)}")
        lines.append(f"history transitions {len(events)}, of them without exactly one Event: "
                     f"{len(wrong_events)} {wrong_events}")  # fmt: skip
    assert len(killer.kills) >= KILLS
    assert all(o.end != "stuck" for o in outcomes), summary(outcomes)
    assert all(o.right for o in outcomes), summary(outcomes)
    assert all(history_as_expected(o) for o in outcomes), summary(outcomes)
    assert not wrong_events  # none lost, none posted twice (the status outbox)
    warm.assert_never_below()


def canary_with_traffic(stack: AnalysisStack, timeline: Timeline, change: Change) -> Sample:
    """Apply `change`; the first sample where its canary takes traffic."""
    before = stack.status().get("canaryRevision")
    stack.deploy(change.image, change.version, rollout=ROLLOUT, analysis=change.analysis)
    return timeline.wait(
        lambda s: s.canary not in (None, before) and s.weight > 0, 120, "a canary with traffic"
    )


def test_prometheus_down_and_back_holds_then_promotes(
    stack: AnalysisStack, private_prometheus: PrometheusServer
) -> None:
    change = Change("healthy v3", V3, "3-prometheus", True)
    stable = stack.status()["stableRevision"]
    with printed_section("Prometheus down and back mid-analysis") as lines, stack.traffic(RATE):
        with stack.timeline() as timeline:
            started = canary_with_traffic(stack, timeline, change)
            canary = started.canary
            assert canary is not None
            timeline.wait(lambda s: s.analysed(canary), 60, "a round", after=started.t)
            private_prometheus.stop()
            stopped, stopped_at = time.monotonic(), datetime.now(UTC)

            def without_data(s: Sample) -> bool:
                ran = s.analysis.get("time")
                return (
                    s.analysed(canary) and bool(ran) and datetime.fromisoformat(ran) >= stopped_at
                    and s.analysis.get("waiting") == "no-data"
                    and bool(s.status.get("noDataSince"))
                )  # fmt: skip

            held = timeline.wait(without_data, 60, "a round without data", after=stopped)
            time.sleep(10)  # more rounds without data: several analysis intervals
            private_prometheus.start()
            back = time.monotonic()
            outcome = await_end(stack, change, canary, stable, back)
        down = [s for s in timeline.snapshot() if stopped <= s.t <= back]
        lines.append(f"down {back - stopped:.1f}s; first round without data "
                     f"{held.t - stopped:.1f}s after the stop, waiting "
                     f"{held.analysis.get('waiting')}: {sorted(held.checks())}")  # fmt: skip
        lines.append(f"back -> {outcome.end} in {outcome.seconds:.1f}s, history "
                     f"{[h['event'] for h in outcome.history]}")  # fmt: skip
    assert all(s.canary == canary for s in down), "promoted or rolled back without data"
    assert all(c.get("value") is None for c in held.checks().values())
    assert outcome.end == "promoted", outcome
    assert history_as_expected(outcome)
    assert not stack.status().get("noDataSince")


@pytest.fixture(scope="module")
def restarting(
    tools: Toolchain, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KwokCluster, AnalysisStack]]:
    """A cluster of its own (kwok leaves new pods unready for minutes after a restart of the
    control plane: the session's cluster must not see one) with a stack on it."""
    cluster = testruns.own_cluster(tools, "restart")
    testruns.create_cluster(cluster)
    try:
        workdir = tmp_path_factory.mktemp(f"{NAMESPACE}-restart")
        with stable_stack(
            cluster, prometheus, workdir, NAMESPACE, rollout=ROLLOUT, analysis=ROOMY
        ) as s:
            yield cluster, s
    finally:
        cluster.delete()


def test_control_plane_restarted_mid_rollout(
    restarting: tuple[KwokCluster, AnalysisStack],
) -> None:
    """A bad canary at its step when etcd, the apiserver and the controllers all restart:
    the same operator process (its watches reconnect) rolls it back, nothing left over."""
    kube, stack = restarting
    change = Change("slow", SLOW, "4-restart", False)
    stable = stack.status()["stableRevision"]
    operator = stack.operator.process
    assert operator is not None
    with printed_section("control plane restarted mid-rollout") as lines, stack.traffic(RATE):
        with stack.timeline() as timeline:
            started = canary_with_traffic(stack, timeline, change)
            canary = started.canary
            assert canary is not None
            restarting = time.monotonic()
            kube.restart_control_plane(down=5)
            ready = time.monotonic()
            outcome = await_end(stack, change, canary, stable, ready)
        owned = assert_no_orphans(stack, [outcome])
        lines.append(f"apiserver down and back in {ready - restarting:.1f}s; then "
                     f"{outcome.end} in {outcome.seconds:.1f}s; history "
                     f"{[h['event'] for h in outcome.history]}; left {sorted(owned)}")  # fmt: skip
    assert operator.poll() is None, "the operator exited on the restart"
    assert outcome.end == "rolled back", outcome
    assert history_as_expected(outcome)
