"""The state machine with traffic.mode gatewayAPI: the weights on the user's HTTPRoute
follow the steps exactly, never reach a canary that cannot carry them, drop to 0 in the
plan that rolls back, and status reports what the route carries."""

from typing import Any

import pytest
from test_rollout_machine import V2, Driver, FakeCluster, rev, stable_driver
from test_routing import backend, patched, user_route, weights

from modeldeploy.api import ANNOTATION_ABORT
from modeldeploy.resources.names import LABEL_FALLBACK, LABEL_NAME, LABEL_REVISION
from modeldeploy.rollout import Plan
from modeldeploy.rollout.state import State

pytestmark = pytest.mark.unit

TRAFFIC = {"mode": "gatewayAPI", "httpRoute": "churn-route"}
ROUTE = ("HTTPRoute", "churn-route")


class RouteCluster(FakeCluster):
    """The fake cluster with the user's HTTPRoute, patched as the apiserver would."""

    def __init__(self) -> None:
        super().__init__()
        self.objects[ROUTE] = user_route()
        self.route_writes = 0

    def apply(self, result: Plan) -> None:
        if result.route is not None:
            self.objects[ROUTE] = patched(self.objects[ROUTE], result.route)
            self.route_writes += 1
        super().apply(result)


def gateway_driver(**rollout: Any) -> Driver:
    d = Driver(rollout={"canary": {"steps": [10, 50]}, "stepInterval": "30s", "bakeTime": "1m",
                        "traffic": TRAFFIC, **rollout})  # fmt: skip
    d.cluster = RouteCluster()
    d.until("Stable")
    return d


def route_weights(d: Driver) -> dict[str, int]:
    """The weights of the route's weighted rule (the first that is no cohort rule)."""
    body = d.cluster.get(*ROUTE)
    rules = body["spec"]["rules"]
    weighted = next(i for i, r in enumerate(rules) if "cohort" not in r.get("name", ""))
    return weights(body, weighted)


def scale_stable(d: Driver, replicas: int) -> None:
    d.cluster.get("Deployment", f"churn-{rev()}")["spec"]["replicas"] = replicas
    d.cluster.settle()


def test_a_stable_model_gets_all_of_the_routes_weight() -> None:
    d = gateway_driver()
    assert route_weights(d) == {"churn-stable": 100, "churn-canary": 0}
    assert d.status.canary_weight == 0
    writes = d.cluster.route_writes
    d.reconcile()
    assert d.cluster.route_writes == writes  # written only when it differs


def test_weights_follow_each_step_exactly_and_promotion_leaves_all_on_the_new_stable() -> None:
    d = gateway_driver()
    r1, r2 = rev(), rev(V2)
    scale_stable(d, 10)
    d.change(image=V2)
    d.reconcile()
    # The canary's pods follow its load (10% of 10 stable pods), not a replica ratio; the
    # client Service keeps the stable (in-cluster clients that bypass the gateway).
    assert d.cluster.get("Deployment", f"churn-{r2}")["spec"]["replicas"] == 1
    assert d.client_selector() == {LABEL_NAME: "churn", LABEL_REVISION: r1}
    assert route_weights(d)["churn-canary"] == 0  # created now: not Ready yet
    d.reconcile()
    assert route_weights(d) == {"churn-stable": 90, "churn-canary": 10}
    d.reconcile()
    assert d.status.canary_weight == 10  # read back from the route
    assert d.status.requested_weight == 10
    assert "CoarseTrafficSplit" not in d.events()
    # The pods for 50% warm slowly: the route keeps the 10% the Ready one carries.
    d.cluster.unready[f"churn-{r2}"] = 1
    d.run(30)
    assert d.status.step == 1
    assert d.cluster.get("Deployment", f"churn-{r2}")["spec"]["replicas"] == 5
    d.run(5)
    assert route_weights(d) == {"churn-stable": 90, "churn-canary": 10}
    assert d.status.canary_weight == 10
    d.cluster.unready.pop(f"churn-{r2}")
    d.cluster.settle()
    d.reconcile()
    assert route_weights(d) == {"churn-stable": 50, "churn-canary": 50}
    d.reconcile()
    assert d.status.canary_weight == 50
    d.until("Stable")
    assert d.status.stable_revision == r2
    assert route_weights(d) == {"churn-stable": 100, "churn-canary": 0}
    assert d.service_revision("churn-stable") == r2
    assert d.service_revision("churn-canary") == r2  # no canary: the stable's pods


def test_no_weight_before_the_canary_carries_its_share() -> None:
    d = gateway_driver()
    r2 = rev(V2)
    scale_stable(d, 10)
    d.cluster.unready[f"churn-{r2}"] = 0
    d.change(image=V2)
    d.run(5)
    assert route_weights(d)["churn-canary"] == 0
    assert d.status.canary_weight == 0
    d.cluster.unready.pop(f"churn-{r2}")
    d.cluster.settle()
    d.reconcile()
    assert route_weights(d)["churn-canary"] == 10


def test_rollback_takes_the_weight_from_the_canary_in_the_same_plan() -> None:
    d = gateway_driver()
    r2 = rev(V2)
    d.change(image=V2)
    d.run(3)
    assert route_weights(d)["churn-canary"] == 10
    d.annotations[ANNOTATION_ABORT] = r2
    result = d.reconcile()
    assert result.route is not None
    assert {"op": "replace", "path": "/spec/rules/0/backendRefs",
            "value": [backend("churn-stable", 100), backend("churn-canary", 0)]} in list(
        result.route.operations
    )  # fmt: skip
    assert ("Deployment", f"churn-{r2}") in {(ref.kind, ref.name) for ref in result.delete}
    assert d.phase() == "RolledBack"


def test_the_kill_switch_takes_the_weight_from_the_canary() -> None:
    d = gateway_driver()
    d.change(image=V2)
    d.run(3)
    d.change(killSwitch={"engaged": True, "mode": "scaleToZero"})
    d.reconcile()
    assert route_weights(d)["churn-canary"] == 0
    d.reconcile()
    assert d.status.canary_weight == 0


def test_a_replica_mode_plan_never_writes_a_route() -> None:
    d = stable_driver()
    d.change(image=V2)
    d.run(3)
    assert all(p.route is None for p in d.plans)
    assert d.status.canary_weight > 0


def test_the_kill_switch_fallback_takes_the_stable_backends_place() -> None:
    fallback = {"image": "registry.example/static@sha256:" + "f" * 64, "replicas": 1}
    d = Driver(rollout={"traffic": TRAFFIC}, fallback=fallback)
    d.cluster = RouteCluster()
    d.until("Stable")
    stable = d.cluster.get("Service", "churn-stable")["spec"]["selector"]
    d.change(killSwitch={"engaged": True, "mode": "fallback"})
    d.reconcile()
    assert d.cluster.get("Service", "churn-stable")["spec"]["selector"] == {LABEL_FALLBACK: "churn"}
    assert route_weights(d) == {"churn-stable": 100, "churn-canary": 0}
    d.change(killSwitch={"engaged": False, "mode": "fallback"})
    d.reconcile()
    assert d.cluster.get("Service", "churn-stable")["spec"]["selector"] == stable


# --- the cohort phase ----------------------------------------------------------------------

COHORT = {"header": {"name": "x-canary", "value": "true"}}


def cohort_driver(**rollout: Any) -> Driver:
    return gateway_driver(canary={"steps": [10, 50], "cohort": COHORT}, **rollout)


def route_rules(d: Driver) -> list[dict[str, Any]]:
    return list(d.cluster.get(*ROUTE)["spec"]["rules"])


def cohort_backends(d: Driver) -> list[list[str]]:
    """The backends of the route's cohort rules."""
    return [
        [ref["name"] for ref in rule["backendRefs"]]
        for rule in route_rules(d)
        if rule.get("name", "").startswith("modeldeploy-cohort-")
    ]


def test_the_cohort_phase_comes_before_the_weighted_steps_and_survives_a_restart() -> None:
    d = cohort_driver()
    r2 = rev(V2)
    d.change(image=V2)
    d.reconcile()
    assert (d.status.step, d.status.cohort) == (None, "header x-canary=true")
    assert cohort_backends(d) == []  # the canary has no Ready pod yet
    d.reconcile()
    assert cohort_backends(d) == [["churn-canary"]]
    assert route_weights(d) == {"churn-stable": 100, "churn-canary": 0}  # everyone else
    assert (d.status.canary_weight, d.status.requested_weight) == (0, 0)
    assert d.condition("Progressing") == ("True", "CohortPhase")
    assert "cohort phase (header x-canary=true" in d.status.message
    # What the operator remembers is in status: a new State from it is in the same phase.
    assert State.of(d.status).cohort == "header x-canary=true"
    assert State.of(d.status).step is None
    d.run(28)
    assert d.status.cohort is not None  # held for stepInterval
    d.run(2)
    assert (d.status.step, d.status.cohort) == (0, None)
    assert cohort_backends(d) == []  # the rule went with the phase ...
    assert route_weights(d) == {"churn-stable": 90, "churn-canary": 10}  # ... the weights came
    assert len(route_rules(d)) == 1
    d.until("Stable")
    assert d.status.stable_revision == r2
    assert d.status.cohort is None
    assert route_rules(d)[0]["backendRefs"] == [backend("churn-stable", 100),
                                                backend("churn-canary", 0)]  # fmt: skip
    assert len(route_rules(d)) == 1


def test_a_rollback_in_the_cohort_phase_removes_the_rule_in_the_same_plan() -> None:
    d = cohort_driver()
    r2 = rev(V2)
    d.change(image=V2)
    d.run(3)
    assert cohort_backends(d) == [["churn-canary"]]
    d.annotations[ANNOTATION_ABORT] = r2
    result = d.reconcile()
    assert result.route is not None
    assert ("Deployment", f"churn-{r2}") in {(ref.kind, ref.name) for ref in result.delete}
    assert cohort_backends(d) == []
    assert route_weights(d) == {"churn-stable": 100, "churn-canary": 0}
    assert d.phase() == "RolledBack"
    assert d.status.cohort is None


def test_the_cohort_phase_follows_the_shadow_phase() -> None:
    d = cohort_driver(shadow={"percent": 20})
    d.change(image=V2)
    d.reconcile()
    assert (d.status.step, d.status.cohort) == (None, None)  # shadowing first
    d.run(32)
    assert d.status.cohort == "header x-canary=true"
    assert "CohortStarted" in d.events()
    assert d.status.step is None
    d.run(32)
    assert d.status.step == 0
