"""The rollout state machine, driven through whole scenarios against an in-memory cluster
that behaves like the kwok test cluster (pods Ready as soon as they exist)."""

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeploy import contract
from modeldeploy.api import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    ANNOTATION_RETRY,
    HISTORY_LIMIT,
    GateAnswer,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    to_wire,
)
from modeldeploy.reconcile import Measured
from modeldeploy.reconcile import plan as plan_reconcile
from modeldeploy.resources.names import (
    LABEL_FALLBACK,
    LABEL_NAME,
    LABEL_REVISION,
    LABEL_TRACK,
)
from modeldeploy.resources.revision import revision_of
from modeldeploy.rollout import (
    NO_ANALYSIS,
    AnalysisInput,
    AnalysisSignal,
    Plan,
    Subject,
    World,
    observe,
    plan,
)
from modeldeploy.rollout.webhooks import GateAsk
from modeldeploy.routing.replicas import replica_ratio_weight, stable_replicas_for

pytestmark = pytest.mark.unit

Measure = Callable[[Subject, World, datetime], Measured]
Gates = Callable[[tuple[GateAsk, ...], datetime], tuple[GateAnswer, ...]]

UID = "uid-1"
NAME = "churn"
T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
V1 = "registry.example/churn@sha256:" + "1" * 64
V2 = "registry.example/churn@sha256:" + "2" * 64
V3 = "registry.example/churn@sha256:" + "3" * 64


class FakeCluster:
    """Objects by (kind, name); Deployments get Ready pods at once (unless told otherwise),
    HPAs hold their target between min and max as the HPA controller would."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.unready: dict[str, int] = {}  # Deployment -> Ready pods it is stuck at
        self.timed_out: set[str] = set()
        self.pods: dict[str, dict[str, Any]] = {}  # raw Pods by name, as a kubelet reports them
        self.writes = 0

    def apply(self, result: Plan) -> None:
        for body in result.apply:
            key = (body["kind"], body["metadata"]["name"])
            status = self.objects.get(key, {}).get("status", {})
            self.objects[key] = {**copy.deepcopy(body), "status": status}
            self.writes += 1
        for ref in result.delete:
            self.objects.pop((ref.kind, ref.name))
            self.writes += 1
        self.settle()

    def settle(self) -> None:
        for (kind, _), body in self.objects.items():
            if kind == "HorizontalPodAutoscaler":
                target = self.objects.get(("Deployment", body["spec"]["scaleTargetRef"]["name"]))
                spec = target["spec"] if target else None
                if spec and spec["replicas"] > 0:
                    low, high = body["spec"]["minReplicas"], body["spec"]["maxReplicas"]
                    spec["replicas"] = min(max(spec["replicas"], low), high)
        for (kind, name), body in self.objects.items():
            if kind == "Deployment":
                wanted = body["spec"]["replicas"]
                body["status"] = {"readyReplicas": min(wanted, self.unready.get(name, wanted))}
                if name in self.timed_out:
                    body["status"]["conditions"] = [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                        }
                    ]

    def world(self) -> World:
        return observe(UID, [*self.objects.values(), *self.pods.values()])

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.objects[(kind, name)]

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {n: b for (k, n), b in self.objects.items() if k == "Deployment"}

    def track(self, track: str) -> list[dict[str, Any]]:
        return [
            b for b in self.deployments().values() if b["metadata"]["labels"][LABEL_TRACK] == track
        ]

    def serving(self, selector: dict[str, str]) -> int:
        """Ready pods behind a Service selector."""
        return sum(
            b["status"].get("readyReplicas", 0)
            for b in self.deployments().values()
            if selector.items() <= b["spec"]["template"]["metadata"]["labels"].items()
        )


def base_spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"name": NAME, "version": "1"},
        "image": V1,
        "replicas": {"minWarm": 2, "max": 10},
        "rollout": {"canary": {"steps": [10, 50]}, "stepInterval": "30s", "bakeTime": "1m"},
        "analysis": {"interval": "10s"},
    }
    raw.update(overrides)
    return raw


class Driver:
    def __init__(self, **overrides: Any) -> None:
        self.spec_raw = base_spec(**overrides)
        self.generation = 1
        self.status = ModelDeploymentStatus()
        self.annotations: dict[str, str] = {}
        self.cluster = FakeCluster()
        self.now = T0
        self.plans: list[Plan] = []
        self.guard = False  # check the warm-pod invariant (after the first Ready)
        self.measure: Measure | None = None
        """When set, each reconcile measures and concludes the analysis itself, as the
        operator does (`modeldeploy.reconcile.plan`), instead of taking a signal."""
        self.gates: Gates | None = None
        """When set, answers a plan's gate asks; the plan is made again with the answers, as
        the operator does."""

    @property
    def spec(self) -> ModelDeploymentSpec:
        return ModelDeploymentSpec.model_validate(self.spec_raw)

    def change(self, **overrides: Any) -> None:
        self.spec_raw = {**self.spec_raw, **overrides}
        self.generation += 1

    def reconcile(
        self, analysis: AnalysisInput = NO_ANALYSIS, after: timedelta = timedelta(seconds=1)
    ) -> Plan:
        self.now += after
        subject = Subject(
            NAME, "ml", UID, self.generation, self.spec, self.status, dict(self.annotations)
        )
        world = self.cluster.world()
        measured = self.measure(subject, world, self.now) if self.measure else None

        def decide(answers: tuple[GateAnswer, ...] = ()) -> Plan:
            if measured is not None:
                return plan_reconcile(subject, world, measured, self.now, answers=answers)
            return plan(subject, world, analysis, self.now, answers=answers)

        result = decide()
        if result.asks and self.gates is not None:
            result = decide(self.gates(result.asks, self.now))
        # Through the wire form, as the apiserver stores it.
        self.status = ModelDeploymentStatus.model_validate(to_wire(result.status))
        self.cluster.apply(result)
        for key in result.remove_annotations:
            self.annotations.pop(key, None)
        self.plans.append(result)
        self.check_warm()
        return result

    def run(self, seconds: int, step: int = 1, analysis: AnalysisInput = NO_ANALYSIS) -> None:
        for _ in range(seconds // step):
            self.reconcile(analysis, timedelta(seconds=step))

    def until(self, phase: str, limit: int = 300) -> None:
        for _ in range(limit):
            if self.status.phase == phase:
                return
            self.reconcile()
        raise AssertionError(f"never reached {phase}; at {self.status.phase}: {self.status}")

    def check_warm(self) -> None:
        if self.spec.kill_switch.engaged:
            return
        min_warm = self.spec.replicas.min_warm
        if self.guard:
            stable = self.cluster.track("stable")
            assert stable, "no stable Deployment"
            assert max(b["status"]["readyReplicas"] for b in stable) >= min_warm
            client = self.cluster.get("Service", NAME)["spec"]["selector"]
            assert self.cluster.serving(client) >= min_warm, client
        elif self.status.phase == "Stable":
            self.guard = True

    def phase(self) -> str:
        return self.status.phase

    def events(self) -> list[str]:
        return [e.reason for p in self.plans for e in p.events]

    def condition(self, kind: str) -> tuple[str, str]:
        cond = next(c for c in self.status.conditions if c.type == kind)
        return cond.status, cond.reason

    def client_selector(self) -> dict[str, str]:
        return dict(self.cluster.get("Service", NAME)["spec"]["selector"])

    def service_revision(self, name: str) -> str:
        return str(self.cluster.get("Service", name)["spec"]["selector"][LABEL_REVISION])


def rev(image: str = V1, version: str = "1") -> str:
    raw = {"model": {"name": NAME, "version": version}, "image": image}
    return revision_of(ModelDeploymentSpec.model_validate(raw))


def services(d: Driver) -> list[str]:
    return sorted(n for k, n in d.cluster.objects if k == "Service")


def stable_driver(**overrides: Any) -> Driver:
    driver = Driver(**overrides)
    driver.until("Stable")
    return driver


# --- first deployment and idleness ---------------------------------------------------------


def test_create_deploys_min_warm_pods_and_the_objects_around_them() -> None:
    d = Driver()
    first = d.reconcile()
    r1 = rev()
    kinds = sorted((b["kind"], b["metadata"]["name"]) for b in first.apply)
    assert kinds == [
        ("Deployment", f"churn-{r1}"),
        ("HorizontalPodAutoscaler", "churn-stable"),
        ("PodDisruptionBudget", "churn-stable"),
        ("Service", "churn"),
    ]
    assert first.apply[0]["kind"] == "Deployment"
    assert first.status.stable_revision == r1
    assert first.status.history[-1].event == "Started"
    # The pods turn Ready (in the fake cluster at once): Stable on the next reconcile.
    assert d.phase() == "Pending"
    d.reconcile()
    assert d.phase() == "Stable"
    assert d.condition("Ready") == ("True", "StableServing")
    assert d.condition("Progressing") == ("False", "Complete")
    assert d.condition("Reconciling") == ("False", "Settled")
    assert d.cluster.get("Deployment", f"churn-{r1}")["spec"]["replicas"] == 2
    hpa = d.cluster.get("HorizontalPodAutoscaler", "churn-stable")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert hpa["scaleTargetRef"]["name"] == f"churn-{r1}"
    assert d.cluster.get("PodDisruptionBudget", "churn-stable")["spec"]["minAvailable"] == 2
    assert d.client_selector() == {LABEL_NAME: NAME, LABEL_REVISION: r1}
    assert all(c.observed_generation == 1 for c in d.status.conditions)


def test_idle_resource_plans_nothing() -> None:
    d = stable_driver()
    status = to_wire(d.status)
    for _ in range(20):
        result = d.reconcile(after=timedelta(minutes=7))
        assert not result.apply
        assert not result.delete
        assert not result.events
        assert to_wire(result.status) == status


def test_hpa_owns_the_stable_replica_count() -> None:
    d = stable_driver()
    stable = d.cluster.get("Deployment", f"churn-{rev()}")
    stable["spec"]["replicas"] = 6  # the HPA scaled up
    d.cluster.settle()
    result = d.reconcile()
    assert not result.apply  # nothing to fight over
    # Below the floor (e.g. someone scaled it by hand): back to minWarm.
    d.cluster.objects.pop(("HorizontalPodAutoscaler", "churn-stable"))
    stable["spec"]["replicas"] = 1
    d.cluster.settle()
    d.guard = False  # this test breaks the warm-pod invariant on purpose
    result = d.reconcile()
    names = {(b["kind"], b["spec"].get("replicas")) for b in result.apply}
    assert ("Deployment", 2) in names


# --- a rollout ----------------------------------------------------------------------------


def test_rollout_goes_through_the_steps_promotes_and_bakes() -> None:
    d = stable_driver()
    r1, r2 = rev(), rev(V2)
    stable = d.cluster.get("Deployment", f"churn-{r1}")
    stable["spec"]["replicas"] = 9  # HPA-chosen size the canary is sized from
    d.cluster.settle()
    d.change(image=V2)
    d.reconcile()
    assert d.phase() == "Progressing"
    assert d.status.canary_revision == r2
    assert d.status.step == 0
    canary = d.cluster.get("Deployment", f"churn-{r2}")
    assert canary["metadata"]["labels"][LABEL_TRACK] == "canary"
    assert canary["spec"]["replicas"] == 1  # 1 / (9 + 1) = 10%, set by the operator alone
    assert ("HorizontalPodAutoscaler", "churn-canary") not in d.cluster.objects
    assert d.client_selector() == {LABEL_NAME: NAME}
    assert services(d) == ["churn"]  # no shadowing, no Gateway API: no track Services
    assert "RolloutStarted" in d.events()
    d.reconcile()
    assert d.status.canary_weight == 10
    # Held for stepInterval (30s), then 50%: as many canary pods as stable ones.
    d.run(27)
    assert d.status.step == 0
    d.run(3)
    assert d.status.step == 1
    assert d.cluster.get("Deployment", f"churn-{r2}")["spec"]["replicas"] == 9
    d.reconcile()
    assert d.status.canary_weight == 50
    d.run(30)
    assert d.phase() in ("Promoting", "Stable")
    d.until("Stable")
    assert_promoted(d, r1, r2)
    assert_baked(d, r1)


def assert_promoted(d: Driver, r1: str, r2: str) -> None:
    assert d.status.stable_revision == r2
    assert d.status.previous_stable_revision == r1
    assert d.status.canary_revision is None
    assert d.status.history[-1].event == "Promoted"
    new = d.cluster.get("Deployment", f"churn-{r2}")
    assert new["metadata"]["labels"][LABEL_TRACK] == "stable"
    assert new["spec"]["replicas"] == 9  # pre-scaled to the old stable's count
    old = d.cluster.get("Deployment", f"churn-{r1}")
    assert old["metadata"]["labels"][LABEL_TRACK] == "previous"
    assert old["spec"]["replicas"] == 9  # kept warm
    assert d.client_selector() == {LABEL_NAME: NAME, LABEL_REVISION: r2}
    hpa = d.cluster.get("HorizontalPodAutoscaler", "churn-stable")["spec"]
    assert hpa["scaleTargetRef"]["name"] == f"churn-{r2}"
    assert hpa["minReplicas"] == 2
    assert ("HorizontalPodAutoscaler", "churn-canary") not in d.cluster.objects
    pdb = d.cluster.get("PodDisruptionBudget", "churn-stable")["spec"]
    assert pdb["selector"]["matchLabels"][LABEL_REVISION] == r2


def assert_baked(d: Driver, r1: str) -> None:
    """The old revision goes after bakeTime (1m)."""
    d.run(55)
    assert ("Deployment", f"churn-{r1}") in d.cluster.objects
    d.run(6)
    assert ("Deployment", f"churn-{r1}") not in d.cluster.objects
    assert d.status.previous_stable_revision is None
    assert "BakeComplete" in d.events()
    assert d.condition("Ready") == ("True", "StableServing")


def test_promotion_waits_until_the_new_revision_is_ready_at_full_size() -> None:
    d = stable_driver(rollout={"canary": {"percent": 10}, "stepInterval": "10s", "bakeTime": "0s"})
    r1, r2 = rev(), rev(V2)
    d.cluster.get("Deployment", f"churn-{r1}")["spec"]["replicas"] = 4
    d.cluster.settle()
    d.cluster.unready[f"churn-{r2}"] = 1
    d.change(image=V2)
    d.run(12)
    d.until("Promoting")
    d.run(20)
    assert d.phase() == "Promoting"
    assert d.status.stable_revision == r1
    assert d.cluster.get("Deployment", f"churn-{r2}")["spec"]["replicas"] == 4
    del d.cluster.unready[f"churn-{r2}"]
    d.cluster.settle()
    d.reconcile()
    assert d.phase() == "Stable"
    assert d.status.stable_revision == r2
    # bakeTime 0s: the old revision goes at once.
    assert ("Deployment", f"churn-{r1}") not in d.cluster.objects


def test_a_full_step_moves_traffic_only_once_the_canary_can_carry_it() -> None:
    """Steps [100]: the canary is sized like the stable at once, but `<name>` selects it
    alone only when that many of its pods are Ready; the driver checks after every reconcile
    that minWarm Ready pods are behind `<name>`."""
    d = stable_driver(rollout={"canary": {"steps": [100]}, "stepInterval": "10s"})
    r1, r2 = rev(), rev(V2)
    d.cluster.unready[f"churn-{r2}"] = 0
    d.change(image=V2)
    d.run(5)
    assert d.cluster.get("Deployment", f"churn-{r2}")["spec"]["replicas"] == 2
    assert d.client_selector() == {LABEL_NAME: NAME}  # the stable serves on
    assert d.status.canary_weight == 0
    d.cluster.unready[f"churn-{r2}"] = 1
    d.cluster.settle()
    d.run(5)
    assert d.client_selector() == {LABEL_NAME: NAME}
    assert d.status.canary_weight == 33  # 1 canary pod beside 2 stable ones
    assert d.status.stable_revision == r1
    del d.cluster.unready[f"churn-{r2}"]
    d.cluster.settle()
    d.reconcile()
    assert d.client_selector() == {LABEL_NAME: NAME, LABEL_REVISION: r2}
    assert d.status.canary_weight == 100


def test_a_full_step_after_a_small_one_keeps_min_warm_pods_serving() -> None:
    """Steps [10, 100] with minWarm 4: the one canary pod of the first step never serves
    alone while the three it needs more warm up."""
    d = stable_driver(
        replicas={"minWarm": 4, "max": 10},
        rollout={"canary": {"steps": [10, 100]}, "stepInterval": "10s", "bakeTime": "0s"},
    )
    r2 = rev(V2)
    d.cluster.unready[f"churn-{r2}"] = 1
    d.change(image=V2)
    d.run(30)
    assert d.status.step == 1
    assert d.cluster.get("Deployment", f"churn-{r2}")["spec"]["replicas"] == 4
    assert d.client_selector() == {LABEL_NAME: NAME}
    assert d.cluster.serving(d.client_selector()) == 5
    assert d.status.canary_weight == 20
    del d.cluster.unready[f"churn-{r2}"]
    d.cluster.settle()
    d.reconcile()
    assert d.client_selector() == {LABEL_NAME: NAME, LABEL_REVISION: r2}
    d.until("Stable")
    assert d.status.stable_revision == r2


def test_a_step_waits_for_warm_canary_pods() -> None:
    d = stable_driver()
    r2 = rev(V2)
    d.cluster.unready[f"churn-{r2}"] = 0
    d.change(image=V2)
    d.run(120)
    assert d.status.step == 0
    assert d.condition("Progressing") == ("True", "WarmingUp")
    assert d.condition("Reconciling") == ("True", "WarmingUp")  # kstatus: in progress
    assert d.condition("Stalled") == ("False", "NotStalled")
    assert d.status.canary_weight == 0
    del d.cluster.unready[f"churn-{r2}"]
    d.run(2)
    assert d.status.step == 1


# --- rollback, abort, retry --------------------------------------------------------------


def signal(revision: str, verdict: str, when: datetime, *, rollback: bool = False) -> AnalysisInput:
    return AnalysisInput(
        gated=True,
        signal=AnalysisSignal(
            revision=revision,
            verdict=verdict,  # type: ignore[arg-type]
            time=when,
            rollback=rollback,
            reason=f"latency-p99: 720ms > max 600ms, n=812 ({verdict})",
            samples=812,
            consecutive_failures=2 if rollback else 0,
        ),
    )


def test_analysis_gates_each_step_and_rolls_back() -> None:
    d = stable_driver()
    r1, r2 = rev(), rev(V2)
    d.change(image=V2)
    gated = AnalysisInput(gated=True)
    d.reconcile(gated)
    d.run(60, analysis=gated)
    assert d.status.step == 0  # no passing round yet
    d.reconcile(signal(r2, "pass", d.now))
    assert d.status.step == 1
    assert d.status.last_analysis is not None
    assert d.status.last_analysis.verdict == "pass"
    assert "AnalysisPassed" in d.events()
    d.reconcile(signal(r2, "fail", d.now))
    assert d.phase() == "Progressing"
    d.reconcile(signal(r2, "fail", d.now, rollback=True))
    assert d.phase() == "RolledBack"
    assert d.status.failed_revision == r2
    assert d.status.canary_revision is None
    assert d.status.canary_weight == 0
    assert d.status.history[-1].event == "RolledBack"
    assert "latency-p99" in d.status.history[-1].reason
    assert d.client_selector() == {LABEL_NAME: NAME, LABEL_REVISION: r1}
    assert ("Deployment", f"churn-{r2}") not in d.cluster.objects
    failed = d.status.failed_analysis
    assert failed is not None
    assert (failed.revision, failed.verdict) == (r2, "fail")
    # The stable's next round replaces lastAnalysis; the round that failed r2 stays.
    d.reconcile(signal(r1, "pass", d.now))
    assert d.status.last_analysis is not None
    assert d.status.last_analysis.revision == r1
    assert d.status.failed_analysis == failed
    assert d.condition("Degraded") == ("True", "RolledBack")
    assert d.condition("Ready") == ("False", "RolledBack")
    # kstatus (Flux's default health): a rollback is a failure, not "current".
    assert d.condition("Stalled") == ("True", "RolledBack")
    assert d.condition("Reconciling") == ("False", "Settled")
    # Not retried by itself.
    d.run(120)
    assert d.status.canary_revision is None
    assert d.phase() == "RolledBack"


def test_abort_then_retry() -> None:
    d = stable_driver()
    r2 = rev(V2)
    d.change(image=V2)
    d.run(5)
    d.annotations[ANNOTATION_ABORT] = "not-the-canary"
    d.reconcile()
    assert d.status.canary_revision == r2
    assert ANNOTATION_ABORT not in d.annotations
    assert "CommandIgnored" in d.events()
    d.annotations[ANNOTATION_ABORT] = r2
    d.reconcile()
    assert d.phase() == "RolledBack"
    assert d.status.history[-1].event == "Aborted"
    assert d.status.failed_analysis is None  # no failing round of r2: another cause
    assert ANNOTATION_ABORT not in d.annotations
    d.annotations[ANNOTATION_RETRY] = r2
    d.reconcile()
    assert d.status.canary_revision == r2
    assert d.status.failed_revision is None
    assert d.phase() == "Progressing"


def test_warmup_timeout_rolls_back() -> None:
    d = stable_driver()
    r2 = rev(V2)
    d.cluster.unready[f"churn-{r2}"] = 0
    d.cluster.timed_out.add(f"churn-{r2}")
    d.change(image=V2)
    d.reconcile()
    d.reconcile()
    assert d.phase() == "RolledBack"
    assert "warm-up timeout" in d.status.history[-1].reason


def test_first_revision_that_never_warms_up_is_degraded() -> None:
    d = Driver()
    r1 = rev()
    d.cluster.unready[f"churn-{r1}"] = 0
    d.reconcile()
    d.cluster.timed_out.add(f"churn-{r1}")
    d.cluster.settle()
    d.reconcile()
    assert d.phase() == "Pending"
    assert d.condition("Degraded") == ("True", "WarmupTimeout")


def test_reverting_the_spec_cancels_the_rollout_without_blaming_the_revision() -> None:
    d = stable_driver()
    r2 = rev(V2)
    d.change(image=V2)
    d.run(3)
    d.change(image=V1)
    d.reconcile()
    assert d.phase() == "Stable"
    assert d.status.failed_revision is None
    assert ("Deployment", f"churn-{r2}") not in d.cluster.objects
    assert "RolloutCancelled" in d.events()


def test_a_newer_revision_supersedes_the_canary() -> None:
    d = stable_driver()
    r2, r3 = rev(V2), rev(V3)
    d.change(image=V2)
    d.run(3)
    d.change(image=V3)
    d.reconcile()
    assert d.status.canary_revision == r3
    assert d.status.step == 0
    assert ("Deployment", f"churn-{r2}") not in d.cluster.objects
    assert d.status.history[-2].event == "Aborted"
    assert d.status.failed_revision is None


def test_bake_rollback_returns_to_the_warm_previous_revision() -> None:
    d = stable_driver(rollout={"canary": {"percent": 10}, "stepInterval": "10s", "bakeTime": "5m"})
    r1, r2 = rev(), rev(V2)
    d.change(image=V2)
    d.run(15)
    d.until("Stable")
    assert d.status.previous_stable_revision == r1
    d.reconcile(signal(r2, "fail", d.now, rollback=True))
    assert d.status.stable_revision == r1
    assert d.status.failed_revision == r2
    assert d.phase() == "RolledBack"
    assert d.client_selector() == {LABEL_NAME: NAME, LABEL_REVISION: r1}
    assert d.cluster.get("Deployment", f"churn-{r1}")["metadata"]["labels"][LABEL_TRACK] == "stable"
    assert ("Deployment", f"churn-{r2}") not in d.cluster.objects


def test_stable_failing_after_bake_is_degraded_not_rolled_back() -> None:
    d = stable_driver()
    r1 = rev()
    d.reconcile(signal(r1, "fail", d.now, rollback=True))
    assert d.phase() == "Degraded"
    assert d.condition("Degraded") == ("True", "AnalysisFailed")
    assert d.condition("Ready") == ("True", "StableServing")
    d.reconcile(signal(r1, "pass", d.now))
    assert d.phase() == "Stable"


# --- approval, pause, promote -----------------------------------------------------------


def test_approval_gate_holds_at_the_last_step_until_promoted() -> None:
    d = stable_driver(
        rollout={"canary": {"steps": [10]}, "stepInterval": "10s", "requireApproval": True}
    )
    r2 = rev(V2)
    d.change(image=V2)
    d.run(60)
    assert d.phase() == "Paused"
    assert d.condition("Progressing") == ("True", "AwaitingApproval")
    assert d.events().count("AwaitingApproval") == 1
    d.annotations[ANNOTATION_PROMOTE] = r2
    d.reconcile()
    assert ANNOTATION_PROMOTE not in d.annotations
    d.until("Stable")
    assert d.status.stable_revision == r2


def test_promote_annotation_skips_the_remaining_steps() -> None:
    d = stable_driver(rollout={"canary": {"steps": [1, 5, 25]}, "stepInterval": "1h"})
    r2 = rev(V2)
    d.change(image=V2)
    d.reconcile()
    d.annotations[ANNOTATION_PROMOTE] = r2
    d.reconcile()
    d.until("Stable")
    assert d.status.stable_revision == r2


def test_paused_freezes_steps_and_new_rollouts() -> None:
    d = stable_driver()
    d.change(image=V2)
    d.reconcile()
    d.change(rollout={**d.spec_raw["rollout"], "paused": True})
    d.run(120)
    assert d.status.step == 0
    assert d.phase() == "Paused"
    assert d.condition("Progressing") == ("Unknown", "RolloutPaused")
    d.change(rollout={**d.spec_raw["rollout"], "paused": False})
    d.reconcile()
    assert d.status.step == 1  # held long enough meanwhile
    # A new revision while paused waits for the pause to end.
    d.until("Stable")
    d.change(image=V3, rollout={**d.spec_raw["rollout"], "paused": True})
    d.run(5)
    assert d.status.canary_revision is None
    assert d.phase() == "Paused"
    assert d.condition("Ready")[0] == "False"


# --- shadow -------------------------------------------------------------------------------


def test_shadow_phase_mirrors_before_any_live_traffic() -> None:
    d = stable_driver(
        rollout={"canary": {"steps": [20]}, "shadow": {"percent": 50}, "stepInterval": "10s"}
    )
    r1, r2 = rev(), rev(V2)
    d.change(image=V2)
    d.reconcile()
    assert d.status.step is None
    stable = d.cluster.get("Deployment", f"churn-{r1}")
    env = {
        e["name"]: e["value"] for e in stable["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env[contract.ENV_SHADOW_URL] == "http://churn-canary.ml.svc"
    assert env[contract.ENV_SHADOW_PERCENT] == "50"
    assert services(d) == ["churn", "churn-canary"]
    assert d.service_revision("churn-canary") == r2
    assert d.client_selector() == {LABEL_NAME: NAME, LABEL_REVISION: r1}
    assert d.cluster.get("Deployment", f"churn-{r2}")["spec"]["replicas"] == 1
    d.reconcile()  # status reports the world as it was observed: pods are Ready now
    assert d.condition("Progressing")[1] == "Shadowing"
    d.run(10)
    assert d.status.step == 0
    stable = d.cluster.get("Deployment", f"churn-{r1}")
    env_names = {e["name"] for e in stable["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert contract.ENV_SHADOW_URL not in env_names
    assert d.client_selector() == {LABEL_NAME: NAME}
    # Kept while the canary runs: the stable's pods from the shadow phase mirror until the
    # Deployment has replaced them.
    assert d.service_revision("churn-canary") == r2
    d.until("Stable")
    assert services(d) == ["churn"]


def test_gateway_api_mode_keeps_a_service_per_track() -> None:
    traffic = {"mode": "gatewayAPI", "httpRoute": "churn"}
    d = stable_driver(rollout={"canary": {"steps": [20]}, "traffic": traffic})
    r1, r2 = rev(), rev(V2)
    assert services(d) == ["churn", "churn-canary", "churn-stable"]
    # Without a canary its backend has the stable's pods, never no endpoints.
    assert d.service_revision("churn-canary") == r1
    assert d.service_revision("churn-stable") == r1
    d.change(image=V2)
    d.reconcile()
    assert d.service_revision("churn-canary") == r2
    assert d.service_revision("churn-stable") == r1


def test_dark_launch_promotes_after_the_shadow_phase() -> None:
    d = stable_driver(
        rollout={"canary": {"percent": 0}, "shadow": {"percent": 10}, "stepInterval": "10s"}
    )
    d.change(image=V2)
    d.run(15)
    d.until("Stable")
    assert d.status.stable_revision == rev(V2)


# --- kill switch ------------------------------------------------------------------------


def test_history_keeps_the_newest_entries_within_the_limit() -> None:
    d = stable_driver()
    for _ in range(HISTORY_LIMIT // 2 + 1):
        d.change(killSwitch={"engaged": True})
        d.reconcile()
        d.change(killSwitch={"engaged": False})
        d.reconcile()
    assert len(d.status.history) == HISTORY_LIMIT  # and the status went through the wire form
    assert {h.event for h in d.status.history} == {"KillSwitchEngaged", "KillSwitchReleased"}
    assert d.status.history[-1].event == "KillSwitchReleased"


def test_kill_switch_scale_to_zero_and_back() -> None:
    d = stable_driver()
    r1, r2 = rev(), rev(V2)
    d.change(image=V2)
    d.run(3)
    d.change(killSwitch={"engaged": True})
    result = d.reconcile()
    assert d.phase() == "Killed"
    assert d.condition("Killed") == ("True", "KillSwitchEngaged")
    assert d.condition("Ready") == ("False", "KillSwitchEngaged")
    assert all(b["spec"]["replicas"] == 0 for b in d.cluster.deployments().values())
    deleted = {ref.kind for ref in result.delete}
    assert deleted == {"HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert d.status.canary_revision == r2  # the rollout is kept, frozen
    assert d.status.history[-1].event == "KillSwitchEngaged"
    d.run(600)
    assert d.status.step == 0
    assert d.phase() == "Killed"
    d.change(killSwitch={"engaged": False})
    d.reconcile()
    assert d.status.history[-1].event in ("KillSwitchReleased",)
    assert d.cluster.get("Deployment", f"churn-{r1}")["spec"]["replicas"] == 2
    assert ("HorizontalPodAutoscaler", "churn-stable") in d.cluster.objects
    d.run(5)
    assert d.phase() == "Progressing"
    assert d.status.step == 0  # the step starts over after the release
    d.run(30)
    assert d.status.step == 1


def test_kill_switch_fallback_routes_to_the_fallback() -> None:
    fallback = {"image": "registry.example/static@sha256:" + "f" * 64, "replicas": 1}
    d = stable_driver(fallback=fallback)
    r1 = rev()
    assert d.cluster.get("Deployment", "churn-fallback")["spec"]["replicas"] == 1
    assert d.client_selector() == {LABEL_NAME: NAME, LABEL_REVISION: r1}
    d.change(killSwitch={"engaged": True, "mode": "fallback"})
    d.reconcile()
    assert d.client_selector() == {LABEL_FALLBACK: NAME}
    assert d.cluster.get("Deployment", f"churn-{r1}")["spec"]["replicas"] == 2  # kept warm
    assert d.phase() == "Killed"
    d.change(killSwitch={"engaged": False, "mode": "fallback"})
    d.reconcile()
    assert d.client_selector() == {LABEL_NAME: NAME, LABEL_REVISION: r1}
    d.reconcile()
    assert d.phase() == "Stable"


def test_promotion_frozen_by_the_kill_switch_resumes_after_release() -> None:
    d = stable_driver(rollout={"canary": {"percent": 10}, "stepInterval": "1h"})
    r2 = rev(V2)
    d.cluster.unready[f"churn-{r2}"] = 1
    d.change(image=V2)
    d.reconcile()
    d.annotations[ANNOTATION_PROMOTE] = r2
    d.reconcile()
    assert d.phase() == "Promoting"
    d.change(killSwitch={"engaged": True})
    d.reconcile()
    assert d.phase() == "Killed"
    d.change(killSwitch={"engaged": False})
    d.reconcile()
    assert d.phase() == "Promoting"
    del d.cluster.unready[f"churn-{r2}"]
    d.until("Stable")
    assert d.status.stable_revision == r2


# --- robustness ---------------------------------------------------------------------------


def test_lost_status_is_adopted_from_the_deployment_labels() -> None:
    d = stable_driver()
    r1 = rev()
    d.status = ModelDeploymentStatus()
    result = d.reconcile()
    assert result.status.stable_revision == r1
    assert "StatusAdopted" in [e.reason for e in result.events]
    assert not result.apply


def test_objects_of_others_are_ignored_and_stray_ones_of_ours_deleted() -> None:
    d = stable_driver()
    foreign = copy.deepcopy(d.cluster.get("Deployment", f"churn-{rev()}"))
    foreign["metadata"]["name"] = "churn-foreign"
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    stray = copy.deepcopy(d.cluster.get("Service", "churn"))
    stray["metadata"]["name"] = "churn-old"
    d.cluster.objects[("Deployment", "churn-foreign")] = foreign
    d.cluster.objects[("Service", "churn-old")] = stray
    result = d.reconcile()
    assert [str(ref) for ref in result.delete] == ["Service/churn-old"]


def test_objects_an_older_operator_made_are_deleted() -> None:
    """Up to 0.1.0 every ModelDeployment had `<name>-stable` and `<name>-canary` Services and
    a canary had a pinned HPA: the ordinary diff removes them (the autoscaler first)."""
    d = stable_driver()
    d.change(image=V2)
    d.reconcile()
    client = d.cluster.get("Service", "churn")
    for name in ("churn-stable", "churn-canary"):
        old = copy.deepcopy(client)
        old["metadata"]["name"] = name
        d.cluster.objects[("Service", name)] = old
    pinned = copy.deepcopy(d.cluster.get("HorizontalPodAutoscaler", "churn-stable"))
    pinned["metadata"]["name"] = "churn-canary"
    pinned["spec"]["scaleTargetRef"]["name"] = f"churn-{rev(V2)}"
    pinned["spec"]["minReplicas"] = pinned["spec"]["maxReplicas"] = 1
    d.cluster.objects[("HorizontalPodAutoscaler", "churn-canary")] = pinned
    result = d.reconcile()
    assert [str(ref) for ref in result.delete] == [
        "HorizontalPodAutoscaler/churn-canary",
        "Service/churn-canary",
        "Service/churn-stable",
    ]
    assert services(d) == ["churn"]


def test_unreadable_revision_source_is_a_note_not_a_crash() -> None:
    d = stable_driver()
    body = d.cluster.get("Deployment", f"churn-{rev()}")
    body["metadata"]["annotations"]["modeldeploy.io/revision-source"] = "{not json"
    world = d.cluster.world()
    assert world.notes
    d.reconcile()  # the spec still describes this revision: rebuilt from it


def test_stale_abort_without_a_canary_is_consumed() -> None:
    d = stable_driver()
    d.annotations[ANNOTATION_ABORT] = rev(V2)
    d.reconcile()
    assert ANNOTATION_ABORT not in d.annotations
    assert "CommandIgnored" in d.events()
    d.change(image=V2)
    d.run(3)
    assert d.phase() == "Progressing"


def test_unreadable_stable_during_a_rollout_changes_nothing() -> None:
    d = stable_driver()
    d.change(image=V2)
    d.run(3)
    body = d.cluster.get("Deployment", f"churn-{rev()}")
    body["metadata"]["annotations"]["modeldeploy.io/revision-source"] = "{not json"
    status = to_wire(d.status)
    result = d.reconcile()
    assert not result.apply
    assert not result.delete
    assert to_wire(result.status) == status


def test_lost_stable_deployment_makes_the_spec_revision_stable() -> None:
    d = stable_driver()
    d.change(image=V2)
    d.run(3)
    d.cluster.objects.pop(("Deployment", f"churn-{rev()}"))
    d.guard = False
    d.reconcile()
    assert d.status.stable_revision == rev(V2)
    assert d.status.canary_revision is None
    assert "StableLost" in d.events()


def test_plan_needs_an_aware_clock() -> None:
    d = Driver()
    subject = Subject(NAME, "ml", UID, 1, d.spec, d.status)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan(subject, World(), NO_ANALYSIS, datetime(2026, 1, 1))


def test_a_coarse_replica_ratio_is_shown_and_warned_once_per_step() -> None:
    """Steps [10, 50] beside 2 stable pods: the 10% step gives the canary 1 pod of 3 (33%),
    more than twice what it asks: status shows both weights, the Progressing condition says
    what to change, and one Warning Event says so when the step starts; 50% is exact."""
    d = stable_driver()
    d.change(image=V2)
    d.run(3)
    assert (d.status.requested_weight, d.status.canary_weight) == (10, 33)
    assert d.events().count("CoarseTrafficSplit") == 1
    warning = next(e for p in d.plans for e in p.events if e.reason == "CoarseTrafficSplit")
    assert warning.type == "Warning"
    assert "33% of requests for a 10% step (2 stable pods)" in warning.message
    assert "4 or more stable pods (replicas.minWarm)" in warning.message
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert "gives the canary 33% of requests for a 10% step" in progressing.message
    d.run(20)
    assert d.events().count("CoarseTrafficSplit") == 1  # not again while the step lasts
    d.run(10)  # stepInterval 30s
    assert d.status.step == 1
    assert (d.status.requested_weight, d.status.canary_weight) == (50, 50)
    assert d.events().count("CoarseTrafficSplit") == 1
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert "replica ratio" not in progressing.message
    d.until("Stable")
    assert (d.status.requested_weight, d.status.canary_weight) == (0, 0)


def test_replica_ratio_weights_and_the_stable_pods_a_step_needs() -> None:
    assert replica_ratio_weight(2, 10, 10) == 33
    assert replica_ratio_weight(2, 50, 10) == 50
    assert replica_ratio_weight(9, 10, 10) == 10
    assert replica_ratio_weight(2, 100, 10) == 100
    assert [stable_replicas_for(p) for p in (1, 5, 10, 25, 50)] == [49, 9, 4, 1, 1]
    # As many stable pods as it names bring a step within twice its share.
    for percent in (1, 5, 10, 25, 50):
        assert replica_ratio_weight(stable_replicas_for(percent), percent, 100) <= 2 * percent
