"""The watch cache as the reconciler reads it: one snapshot per ModelDeployment from Kopf's
indexes, what is kept of an object, and the expectations that hold a reconcile until the
cache shows the operator's own writes."""

from typing import Any

import pytest

from modeldeploy.rollout.world import essentials
from modeldeploy.watchcache import LAST_APPLIED, Expectations, WatchCache, slim

pytestmark = pytest.mark.unit

KEY = ("ml", "churn")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_snapshot_joins_the_indexes_of_one_model_deployment() -> None:
    md = {"kind": "ModelDeployment", "metadata": {"name": "churn", "resourceVersion": "3"}}
    deployment = {"kind": "Deployment", "metadata": {"name": "churn-abc", "resourceVersion": "9"}}
    pod = {"kind": "Pod", "metadata": {"name": "churn-abc-x"}}
    other = {"kind": "Deployment", "metadata": {"name": "fraud-abc"}}
    cache = WatchCache(
        {KEY: [md], ("ml", "fraud"): [{}]},
        ({KEY: [deployment], ("ml", "fraud"): [other]}, {KEY: [pod]}),
    )
    snapshot = cache.snapshot(KEY)
    assert snapshot is not None
    assert snapshot.body is md
    assert snapshot.owned == (deployment, pod)
    assert snapshot.resource_version("Deployment", "churn-abc") == "9"
    assert snapshot.resource_version("ModelDeployment", "churn") == "3"
    assert snapshot.resource_version("Service", "churn") is None
    assert cache.snapshot(("ml", "gone")) is None
    assert cache.keys() == [KEY, ("ml", "fraud")]


def routed(mode: str, route: str | None) -> dict[str, Any]:
    traffic = {"mode": mode, **({"httpRoute": route} if route else {})}
    return {"kind": "ModelDeployment", "spec": {"rollout": {"traffic": traffic}}}


def test_the_model_deployments_a_route_carries_the_weights_of() -> None:
    cache = WatchCache(
        {
            KEY: [routed("gatewayAPI", "web")],
            ("ml", "fraud"): [routed("gatewayAPI", "web")],
            ("ml", "other"): [routed("gatewayAPI", "api")],
            ("ml", "plain"): [routed("replicas", None)],
            ("ml", "bare"): [{"kind": "ModelDeployment"}],
            ("prod", "churn"): [routed("gatewayAPI", "web")],  # a route of that name elsewhere
        },
        (),
    )
    assert cache.routed_through("ml", "web") == [KEY, ("ml", "fraud")]
    assert cache.routed_through("ml", "api") == [("ml", "other")]
    assert cache.routed_through("ml", "nothing") == []
    assert cache.routed_through("prod", "web") == [("prod", "churn")]


def test_essentials_keep_what_observe_reads_and_drop_the_bulk() -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}, "managedFields": [{"x": 1}] * 50},
        "spec": {"containers": [{"name": "model", "env": [{"name": "X"}] * 50}]},
        "status": {"phase": "Running"},
    }
    kept = essentials(pod)
    assert kept == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "status": {"phase": "Running"},
    }
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"replicas": 3, "template": {"spec": {}}},
        "status": {"readyReplicas": 2},
    }
    assert essentials(deployment)["spec"] == {"replicas": 3}
    assert slim(pod) == kept  # an owned object or pod: its essentials
    assert slim(kept) == kept  # idempotent: the streams slim, then the index


def test_a_model_deployment_is_kept_but_its_managed_fields_and_last_applied_copy() -> None:
    commands = {"modeldeploy.io/promote": "abc", "team": "ml"}
    md = {
        "kind": "ModelDeployment",
        "metadata": {
            "name": "m",
            "generation": 3,
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {**commands, LAST_APPLIED: '{"spec": {}}'},
        },
        "spec": {"image": "x"},
        "status": {"phase": "Stable"},
    }
    kept = slim(md)
    assert kept == {
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "generation": 3, "annotations": commands},
        "spec": {"image": "x"},
        "status": {"phase": "Stable"},
    }
    assert LAST_APPLIED in md["metadata"]["annotations"]  # the object itself is left alone
    assert slim(kept) == kept
    applied_by_kubectl = {"kind": "Service", "metadata": {"annotations": {LAST_APPLIED: "{}"}}}
    assert slim(applied_by_kubectl)["metadata"] == {"annotations": {}}


def test_a_write_already_in_the_cache_is_not_awaited() -> None:
    expectations = Expectations()
    expectations.expect(KEY, "Deployment", "churn-abc", "9", read="8", cached="9")
    # Or a later version: a controller changed it after the write, its event came first.
    expectations.expect(KEY, "HorizontalPodAutoscaler", "churn-stable", "5", read="4", cached="6")
    expectations.expect(KEY, "Service", "churn", "1", read=None, cached="2")  # created
    assert not expectations.pending(KEY)


def test_writes_are_awaited_until_an_event_shows_each_object() -> None:
    expectations = Expectations()
    expectations.expect(KEY, "Deployment", "churn-abc", "9", read="8", cached="8")
    expectations.expect(KEY, "Service", "churn", None, read="4", cached="4")  # deleted
    assert expectations.pending(KEY)
    assert not expectations.seen(KEY, "Service", "churn", "5")  # not yet the deletion
    assert not expectations.seen(KEY, "Deployment", "churn-abc", "12")  # a later one counts
    assert expectations.pending(KEY)
    assert expectations.seen(KEY, "Service", "churn", None)  # the last one awaited
    assert not expectations.pending(KEY)
    assert not expectations.seen(KEY, "Service", "churn", None)  # nothing awaited any more


def test_a_status_written_twice_is_awaited_until_its_last_write_shows() -> None:
    """The outbox: status with the pending Events and notifications (version 5), then
    status without them (6). A cache that shows 5 must not let a reconcile deliver them
    again: 6 is still to come, and the event of 5 does not count for it."""
    expectations = Expectations()
    model = "ModelDeployment"
    expectations.expect(KEY, model, "churn", "6", read="4", cached="5", earlier=["5"])
    assert expectations.pending(KEY)
    assert not expectations.seen(KEY, model, "churn", "5")
    assert expectations.pending(KEY)
    assert expectations.seen(KEY, model, "churn", "7")  # the last write or a later one
    assert not expectations.pending(KEY)
    # Already shown, or a later change by someone else (not one of the earlier writes).
    expectations.expect(KEY, model, "churn", "6", read="4", cached="6", earlier=["5"])
    expectations.expect(KEY, model, "churn", "6", read="4", cached="8", earlier=["5"])
    assert not expectations.pending(KEY)


def test_an_expectation_not_met_in_time_is_dropped() -> None:
    clock = Clock()
    expectations = Expectations(timeout=5, clock=clock)
    expectations.expect(KEY, "Deployment", "churn-abc", "9", read="8", cached="8")
    clock.now = 1
    expectations.expect(KEY, "Service", "churn", "3", read="2", cached="2")
    clock.now = 4.9
    assert expectations.pending(KEY)
    assert expectations.remaining(KEY) == pytest.approx(1.1)  # the Service's, the last
    clock.now = 6
    assert not expectations.pending(KEY)
    expectations.expect(KEY, "Deployment", "churn-abc", "10", read="9", cached="9")
    expectations.forget(KEY)
    assert not expectations.pending(KEY)
    assert expectations.remaining(KEY) == 0
