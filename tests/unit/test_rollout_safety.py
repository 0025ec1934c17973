"""Multi-tenant safety of the pure core: objects the ModelDeployment does not control are never
written, and no crash between two writes of a plan puts a removed revision in traffic next to
the new one."""

import copy
from typing import Any

import pytest
from test_rollout_machine import NAME, UID, V2, V3, Driver, FakeCluster, rev, stable_driver
from test_rollout_pods import kubelet_pod

from modeldeploy.resources.names import (
    LABEL_NAME,
    LABEL_REVISION,
    LABEL_TRACK,
    deployment_name,
    revision_selector,
)
from modeldeploy.rollout import Plan, observe
from modeldeploy.rollout.world import ForeignObject

pytestmark = pytest.mark.unit


def foreign_service(name: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Service someone else made, as the apiserver returns it."""
    meta: dict[str, Any] = {"name": name, "namespace": "ml", "uid": "theirs"}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": {"app": "legacy"}, "ports": [{"port": 80}]},
    }


def unchecked_driver(**overrides: Any) -> Driver:
    """A driver that does not check warm pods behind the client Service (it is not ours)."""
    driver = Driver(**overrides)
    driver.check_warm = lambda: None  # type: ignore[method-assign]
    return driver


# --- objects the ModelDeployment does not control ---------------------------------------------


def test_observe_records_objects_it_does_not_control_with_their_controller() -> None:
    other_md = {"kind": "ModelDeployment", "name": NAME, "uid": "old", "controller": True}
    world = observe(UID, [foreign_service(NAME), foreign_service(f"{NAME}-stable", other_md)])
    assert world.get("Service", NAME) is None
    assert world.foreign[("Service", NAME)] == ForeignObject("Service", NAME, None)
    assert str(world.foreign[("Service", f"{NAME}-stable")]) == (
        f"Service/{NAME}-stable (controlled by ModelDeployment/{NAME})"
    )
    assert list(world.refs()) == []  # never deleted either


def test_a_foreign_client_service_is_never_written_and_degrades_once() -> None:
    d = unchecked_driver()
    d.cluster.objects[("Service", NAME)] = foreign_service(NAME)
    before = copy.deepcopy(d.cluster.objects[("Service", NAME)])
    for _ in range(5):
        result = d.reconcile()
        assert all((b["kind"], b["metadata"]["name"]) != ("Service", NAME) for b in result.apply)
        assert all((r.kind, r.name) != ("Service", NAME) for r in result.delete)
    assert d.cluster.objects[("Service", NAME)] == before
    assert d.condition("Degraded") == ("True", "ObjectNotOwned")
    assert d.condition("Stalled") == ("True", "ObjectNotOwned")
    message = next(c.message for c in d.status.conditions if c.type == "Degraded")
    assert f"Service/{NAME} (with no controller)" in message
    assert d.events().count("ObjectNotOwned") == 1
    # Everything else is made: the stable runs warm.
    assert d.cluster.get("Deployment", deployment_name(NAME, rev()))["status"]["readyReplicas"] == 2


def test_the_rollout_holds_while_its_client_service_is_foreign_then_goes_on() -> None:
    d = unchecked_driver()
    d.until("Stable")
    d.cluster.objects[("Service", NAME)] = foreign_service(NAME)  # replaced behind its back
    d.change(image=V2)
    d.run(120)
    assert d.status.canary_revision == rev(V2)
    assert d.status.step == 0  # never advanced: its traffic runs through the foreign Service
    assert "StepAdvanced" not in d.events()
    assert d.condition("Degraded") == ("True", "ObjectNotOwned")
    del d.cluster.objects[("Service", NAME)]  # the owner removed it
    d.until("Stable")
    assert d.status.stable_revision == rev(V2)
    assert d.client_selector() == revision_selector(NAME, rev(V2))
    assert d.condition("Degraded") == ("False", "AsExpected")


def test_a_foreign_deployment_named_like_the_canary_gets_no_traffic() -> None:
    d = stable_driver()
    r2 = rev(V2)
    labels = {LABEL_NAME: NAME, LABEL_REVISION: r2}  # its pods would be behind `<name>`
    theirs = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(NAME, r2),
            "namespace": "ml",
            "labels": {**labels, LABEL_TRACK: "theirs"},
        },
        "spec": {"replicas": 1, "template": {"metadata": {"labels": labels}}},
    }
    d.cluster.objects[("Deployment", deployment_name(NAME, r2))] = theirs
    d.change(image=V2)
    d.run(120)
    assert d.status.canary_revision == r2
    assert d.status.step == 0
    assert d.client_selector() == revision_selector(NAME, rev())
    assert d.cluster.get("Deployment", deployment_name(NAME, r2))["spec"] == theirs["spec"]
    assert d.condition("Degraded") == ("True", "ObjectNotOwned")


def test_a_rollback_still_acts_while_an_object_is_foreign() -> None:
    d = unchecked_driver()
    d.until("Stable")
    d.change(image=V2)
    d.reconcile()
    d.cluster.objects[("Service", NAME)] = foreign_service(NAME)
    d.annotations["modeldeploy.io/abort"] = rev(V2)
    d.reconcile()
    assert d.status.failed_revision == rev(V2)
    assert ("Deployment", deployment_name(NAME, rev(V2))) not in d.cluster.objects


# --- write order --------------------------------------------------------------------------------


def writes_one_by_one(cluster: FakeCluster, result: Plan) -> list[FakeCluster]:
    """The cluster after each write of the plan, in the order the operator makes them (a
    crash may stop it after any one)."""
    after = []
    state = copy.deepcopy(cluster)
    for body in result.apply:
        state.apply(Plan(status=result.status, apply=(body,)))
        after.append(copy.deepcopy(state))
    for ref in result.delete:
        state.apply(Plan(status=result.status, delete=(ref,)))
        after.append(copy.deepcopy(state))
    return after


def serving_revisions(cluster: FakeCluster) -> set[str]:
    """Revisions with Ready pods behind the client Service."""
    selector = cluster.get("Service", NAME)["spec"]["selector"]
    return {
        body["metadata"]["labels"][LABEL_REVISION]
        for body in cluster.deployments().values()
        if body["status"].get("readyReplicas", 0) > 0
        and selector.items() <= body["spec"]["template"]["metadata"]["labels"].items()
    }


def assert_never_together(d: Driver, removed: str, new: str) -> None:
    """Reconcile until settled; after every single write, `removed` and `new` never both
    serve behind the client Service."""
    for _ in range(10):
        before = d.cluster
        result = d.reconcile()
        for state in writes_one_by_one(before, result):
            assert {removed, new} - serving_revisions(state), serving_revisions(state)


def test_a_superseded_canary_goes_before_the_new_one_takes_traffic() -> None:
    d = stable_driver()
    r1, r2, r3 = rev(), rev(V2), rev(V3)
    d.change(image=V2)
    d.run(3)
    assert d.client_selector() == {"modeldeploy.io/name": NAME}  # both serve at 10 %
    d.change(image=V3)
    superseding = copy.deepcopy(d.cluster)
    result = d.reconcile()
    canary = next(b for b in result.apply if b["metadata"]["name"] == deployment_name(NAME, r3))
    assert canary["spec"]["replicas"] == 0  # until the superseded canary is gone
    assert [r.name for r in result.delete] == [deployment_name(NAME, r2)]
    for state in writes_one_by_one(superseding, result):
        assert r2 not in serving_revisions(state) or r3 not in serving_revisions(state)
    assert_never_together(d, r2, r3)
    assert d.cluster.get("Deployment", deployment_name(NAME, r3))["spec"]["replicas"] == 1
    assert serving_revisions(d.cluster) == {r1, r3}


def test_a_new_rollout_ends_the_bake_before_its_canary_takes_traffic() -> None:
    d = stable_driver()
    r1, r2, r3 = rev(), rev(V2), rev(V3)
    d.change(image=V2)
    for _ in range(300):
        if d.status.previous_stable_revision == r1:
            break
        d.reconcile()
    assert d.status.previous_stable_revision == r1  # baking
    d.change(image=V3)
    ending = copy.deepcopy(d.cluster)
    result = d.reconcile()
    assert "BakeEnded" in [e.reason for e in result.events]
    assert [r.name for r in result.delete] == [deployment_name(NAME, r1)]
    for state in writes_one_by_one(ending, result):
        # The previous revision (Ready, warm) never joins the client Service.
        assert r1 not in serving_revisions(state)
    assert_never_together(d, r1, r3)
    assert serving_revisions(d.cluster) == {r2, r3}


def test_pods_of_a_deleted_revision_hold_the_new_canary_until_they_are_gone() -> None:
    d = stable_driver()
    r2, r3 = rev(V2), rev(V3)
    d.change(image=V2)
    d.run(3)
    d.change(image=V3)
    d.reconcile()
    # Its Deployment is deleted; the garbage collector has not removed its pods yet.
    d.cluster.pods["leftover"] = kubelet_pod(r2, "leftover", ready=True)
    d.run(5)
    assert d.cluster.get("Deployment", deployment_name(NAME, r3))["spec"]["replicas"] == 0
    assert d.client_selector() == revision_selector(NAME, rev())
    del d.cluster.pods["leftover"]
    d.reconcile()
    assert d.cluster.get("Deployment", deployment_name(NAME, r3))["spec"]["replicas"] == 1
    assert d.client_selector() == {"modeldeploy.io/name": NAME}
