"""The Kopf glue without Kopf: reading a stored status, noticing what changed, deciding a
rollback again on a fresh read when the watch cache may be stale, a create that finds its
name taken, what the periodic pass reconciles."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import Mock

import kopf
import pytest
from test_rollout_machine import NAME, UID, base_spec, rev
from test_rollout_pods import kubelet_pod, rolling_out, waiting

from modeldeploy import handlers
from modeldeploy.api import GROUP, VERSION, ModelDeploymentSpec, PendingEvent, to_wire
from modeldeploy.handlers import Reconciler, on_route_event, read_status
from modeldeploy.kube import Conflict, KubeError
from modeldeploy.resources.kinds import OWNED_KINDS
from modeldeploy.rollout import Event, Subject, refuse_privileges
from modeldeploy.watchcache import LAST_APPLIED, Snapshot, WatchCache, slim

pytestmark = pytest.mark.unit


def test_read_status_tolerates_foreign_keys_and_garbage() -> None:
    status, note = read_status({"phase": "Stable", "stableRevision": "abc", "kopf": {"x": 1}})
    assert (status.phase, status.stable_revision, note) == ("Stable", "abc", None)
    status, note = read_status({"phase": "Nonsense"})
    assert status.phase == "Pending"
    assert note is not None
    assert "unreadable" in note
    assert read_status(None)[0].stable_revision is None


def test_only_spec_and_command_changes_trigger_an_immediate_reconcile() -> None:
    reconciler = Reconciler(kube=Mock())
    key = ("ml", "churn")
    body = {"metadata": {"generation": 1, "annotations": {"other": "x"}}, "status": {}}
    assert reconciler.changed(key, body)
    assert not reconciler.changed(key, {**body, "status": {"phase": "Stable"}})
    promoted = {"metadata": {"generation": 1, "annotations": {"modeldeploy.io/promote": "r"}}}
    assert reconciler.changed(key, promoted)
    assert reconciler.changed(key, {"metadata": {"generation": 2, "annotations": {}}})
    assert not reconciler.changed(key, {"metadata": {"generation": 2, "annotations": {}}})
    reconciler.forget(key)
    assert reconciler.changed(key, {"metadata": {"generation": 2, "annotations": {}}})


# --- a stale watch cache never deletes or rolls back on its own --------------------------


class FakeApiserver:
    """What `Reconciler` asks of `Kube`, over one ModelDeployment and its objects."""

    def __init__(self, body: dict[str, Any], owned: list[dict[str, Any]]) -> None:
        self.body = body
        self.owned = owned
        self.statuses: list[dict[str, Any]] = []
        self.writes = 0
        self.applied: list[dict[str, Any]] = []
        self.unlabelled: dict[str, dict[str, Any]] = {}
        """Objects without the label the cache watches by, by the end of their path."""
        self.reads: list[str] = []
        self.events: list[Event] = []
        self.event_names: list[str] = []
        self.created: list[tuple[str, str]] = []
        """Every create asked for, refused ones too."""
        self.removed: list[str] = []
        """Command annotations removed."""

    def get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        name = query["fieldSelector"].removeprefix("metadata.name=")
        read = f"{path}/{name}"
        self.reads.append(read)
        return {"items": [b for end, b in self.unlabelled.items() if read.endswith(end)]}

    def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return self.body

    def list_owned(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.owned

    def replace_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(status)
        version = str(5 + len(self.statuses))
        return {**body, "metadata": {**body["metadata"], "resourceVersion": version}}

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        self.writes += 1
        self.applied.append(body)
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "7"}}

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append((body["kind"], body["metadata"]["name"]))
        plural = OWNED_KINDS[body["kind"]].plural
        if f"{plural}/{body['metadata']['name']}" in self.unlabelled:
            raise Conflict(409, "the object has been modified")
        return self.apply(body)

    def delete(self, namespace: str, ref: Any) -> None:
        self.writes += 1

    def remove_annotations(self, namespace: str, name: str, keys: Any) -> dict[str, Any]:
        self.writes += 1
        self.removed.extend(keys)
        return {**self.body, "metadata": {**self.body["metadata"], "resourceVersion": "8"}}

    def post_event(
        self,
        involved: dict[str, Any],
        event: Event | PendingEvent,
        now: datetime,
        name: str | None = None,
    ) -> None:
        if name is not None and name in self.event_names:
            raise Conflict(409, f'events "{name}" already exists')
        self.events.append(event)
        self.event_names.append(name or f"random-{len(self.events)}")


def model_deployment(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": "ml", "uid": UID, "generation": 1,
                     "resourceVersion": "5"},
        "spec": spec,
        "status": status,
    }  # fmt: skip


def canary_with_a_pod_that_cannot_pull(
    pod_in_the_apiserver: bool,
) -> tuple[Reconciler, FakeApiserver, Snapshot]:
    d, r2 = rolling_out()
    pod = kubelet_pod(r2, f"churn-{r2}-x", state=waiting("ImagePullBackOff", "not found"))
    objects = [*d.cluster.objects.values(), *d.cluster.pods.values()]
    body = model_deployment(d.spec_raw, to_wire(d.status))
    body["metadata"]["generation"] = d.generation
    api = FakeApiserver(body, [*objects, pod] if pod_in_the_apiserver else objects)
    return Reconciler(kube=api), api, Snapshot(body, (*objects, pod))  # type: ignore[arg-type]


@pytest.mark.parametrize("real", [True, False])
def test_a_rollback_is_decided_again_on_a_fresh_read(real: bool) -> None:
    reconciler, api, cached = canary_with_a_pod_that_cannot_pull(pod_in_the_apiserver=real)
    written = reconciler.reconcile(("ml", NAME), cached).written
    assert reconciler.fresh_reads == 1
    phases = [status.get("phase") for status in api.statuses]
    if real:
        assert phases == ["RolledBack", "RolledBack"]  # with its Events pending, then posted
        assert ("ModelDeployment", NAME, "7") in written
    else:  # the pod was gone: the cache was stale, nothing is rolled back
        assert "RolledBack" not in phases


def test_a_name_taken_by_an_unlabelled_object_is_created_never_applied_and_read_until_free() -> (
    None
):
    api = FakeApiserver(model_deployment(base_spec(), {}), [])
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "uid": "x"}}
    api.unlabelled[f"services/{NAME}"] = foreign
    reconciler = Reconciler(kube=api)  # type: ignore[arg-type]
    key, deployment = ("ml", NAME), ("Deployment", f"{NAME}-{rev()}")
    first = reconciler.reconcile(key, Snapshot(api.body, ()))
    assert api.reads == []  # nothing is read before a create
    assert api.created == [deployment, ("Service", NAME)]  # refused; nothing after it
    assert [(b["kind"], b["metadata"]["name"]) for b in api.applied] == [deployment]
    assert first.again  # the plan again at once, knowing what holds the name
    # The next reconcile reads the taken name, leaves it alone and makes everything else.
    api.body = model_deployment(base_spec(), api.statuses[-1])
    owned = tuple({**b, "status": {"readyReplicas": 2}} for b in api.applied)
    second = reconciler.reconcile(key, Snapshot(api.body, owned))
    assert api.reads == [f"/api/v1/namespaces/ml/services/{NAME}"]
    assert api.created.count(("Service", NAME)) == 1
    assert {k for k, _ in api.created} == {"Deployment", "Service", "HorizontalPodAutoscaler",
                                          "PodDisruptionBudget"}  # fmt: skip
    degraded = next(c for c in api.statuses[-1]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ObjectNotOwned"
    assert "Service/churn (with no controller)" in degraded["message"]
    assert not second.again
    assert second.due is not None  # the name is not watched: read again at the next pass
    # Free again: read once more, then created.
    del api.unlabelled[f"services/{NAME}"]
    api.body = model_deployment(base_spec(), api.statuses[-1])
    owned = tuple({**b, "status": {"readyReplicas": 2}} for b in api.applied)
    reconciler.reconcile(key, Snapshot(api.body, owned))
    assert api.created.count(("Service", NAME)) == 2
    assert len(api.reads) == 2
    assert key not in reconciler.held


# --- what the periodic pass reconciles ------------------------------------------------------


class Queued:
    """The work queue's `add`, recorded."""

    def __init__(self) -> None:
        self.keys: list[tuple[tuple[str, str], bool]] = []

    def add(self, key: tuple[str, str], *, urgent: bool = True) -> None:
        self.keys.append((key, urgent))


def test_the_periodic_pass_takes_what_is_due_or_unplanned_and_the_resync_all() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    names = ("due", "later", "on-change", "unplanned")
    bodies = {("ml", n): [model_deployment(base_spec(), {})] for n in names}
    reconciler = Reconciler(kube=Mock(), cache=WatchCache(bodies, ()))
    reconciler.planned = {
        ("ml", "due"): now,
        ("ml", "later"): now + timedelta(seconds=1),
        ("ml", "on-change"): None,
    }
    queued = Queued()
    reconciler.queue = queued  # type: ignore[assignment]
    reconciler.schedule_due(now)
    assert queued.keys == [(("ml", "due"), False), (("ml", "unplanned"), False)]
    queued.keys.clear()
    reconciler.schedule_all()
    assert [key for key, _ in queued.keys] == sorted(bodies)


def test_an_idle_reconcile_is_due_on_a_change_only_and_a_failed_one_at_the_next_pass() -> None:
    api = FakeApiserver(model_deployment(base_spec(), {}), [])
    reconciler = Reconciler(kube=api)  # type: ignore[arg-type]
    key = ("ml", NAME)
    created = reconciler.reconcile(key, Snapshot(api.body, ()))
    owned = tuple({**b, "status": {"readyReplicas": 2}} for b in api.applied)
    api.body = model_deployment(base_spec(), api.statuses[-1])
    assert created.due is None  # a first revision: nothing waits for the clock
    stable = reconciler.reconcile(key, Snapshot(api.body, owned))
    api.body = model_deployment(base_spec(), api.statuses[-1])
    assert stable.due is None
    idle = reconciler.reconcile(key, Snapshot(api.body, owned))
    assert (idle.written, idle.due) == ([], None)
    api.apply = Mock(side_effect=KubeError(500, "etcd timeout"))  # type: ignore[method-assign]
    lost = tuple(b for b in owned if b["kind"] != "PodDisruptionBudget")
    failed = reconciler.reconcile(key, Snapshot(api.body, lost))
    assert failed.due is not None


# --- privileged model pods only where the operator allows them -------------------------

PRIVILEGED_TEMPLATE = {"securityProfile": "privileged", "securityContext": {"privileged": True}}


def privileged_body() -> dict[str, Any]:
    spec = {
        "model": {"name": "churn", "version": "1"},
        "image": "registry.example/churn:1",
        "imagePolicy": "allowTags",
        "template": PRIVILEGED_TEMPLATE,
        "fallback": {
            "image": "registry.example/rules:1",
            "template": {"securityProfile": "privileged", "podSecurityContext": {"runAsUser": 0}},
        },
    }
    return {"metadata": {"name": NAME, "namespace": "ml", "uid": UID}, "spec": spec}


def test_a_privileged_spec_names_what_it_asks_for() -> None:
    body = privileged_body()
    spec = ModelDeploymentSpec.model_validate(body["spec"])
    assert spec.privileges() == (
        "template.securityContext.privileged",
        "fallback.template.podSecurityContext.runAsUser",
    )
    restricted = {"securityProfile": "privileged", "securityContext": {"runAsUser": 1000}}
    assert (
        ModelDeploymentSpec.model_validate(
            {**body["spec"], "template": restricted, "fallback": None}
        ).privileges()
        == ()
    )


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def test_privileged_pods_are_refused_in_status_once_and_cleared_by_a_fixed_spec() -> None:
    body = model_deployment(privileged_body()["spec"], {})
    api = FakeApiserver(body, [])
    key = ("ml", NAME)
    refusing = Reconciler(kube=api)  # type: ignore[arg-type]
    refusing.reconcile(key, Snapshot(body, ()))
    written, status = api.statuses  # with the Event pending, then without (posted)
    assert [e["reason"] for e in written["pendingEvents"]] == ["PrivilegedNotAllowed"]
    assert "pendingEvents" not in status
    assert api.applied == []  # nothing is built
    assert conditions(status) == {
        "Ready": ("False", "PrivilegedNotAllowed"),
        "Degraded": ("True", "PrivilegedNotAllowed"),
        "Stalled": ("True", "PrivilegedNotAllowed"),
    }
    assert "spec.template.securityContext.privileged" in status["message"]
    assert "--allow-privileged-models" in status["message"]
    (event,) = api.events
    assert (event.type, event.reason, event.message) == (
        "Warning", "PrivilegedNotAllowed", status["message"],
    )  # fmt: skip
    # Status says so: the next reconcile, also a restarted operator's, writes and posts nothing.
    refused = model_deployment(privileged_body()["spec"], status)
    Reconciler(kube=api).reconcile(key, Snapshot(refused, ()))  # type: ignore[arg-type]
    assert (len(api.statuses), len(api.events)) == (2, 1)
    # The operator allowing privileges (or a fixed spec) builds it and clears the refusal.
    allowing = Reconciler(kube=api, allow_privileged_models=True)  # type: ignore[arg-type]
    allowing.reconcile(key, Snapshot(refused, ()))
    assert api.applied
    assert conditions(api.statuses[-1])["Degraded"] == ("False", "AsExpected")
    assert conditions(api.statuses[-1])["Stalled"] == ("False", "NotStalled")
    fixed = model_deployment(base_spec(), status)
    refusing.reconcile(key, Snapshot(fixed, ()))
    assert conditions(api.statuses[-1])["Degraded"] == ("False", "AsExpected")
    assert [e.reason for e in api.events].count("PrivilegedNotAllowed") == 1


def test_an_external_server_without_a_proxy_image_is_refused_never_half_built() -> None:
    spec = {**base_spec(), "externalServer": {"port": 9000}}
    body = model_deployment(spec, {})
    api = FakeApiserver(body, [])
    key = ("ml", NAME)
    Reconciler(kube=api).reconcile(key, Snapshot(body, ()))  # type: ignore[arg-type]
    written, status = api.statuses
    assert [e["reason"] for e in written["pendingEvents"]] == ["ProxyImageNotConfigured"]
    assert api.applied == []  # not the server without its proxy, nor anything else
    assert conditions(status) == {
        "Ready": ("False", "ProxyImageNotConfigured"),
        "Degraded": ("True", "ProxyImageNotConfigured"),
        "Stalled": ("True", "ProxyImageNotConfigured"),
    }
    assert "--proxy-image" in status["message"]
    # An operator with a proxy image builds the server and the proxy in one pod.
    proxy = "registry.example/modeldeploy/operator:0.1.0"
    serving = Reconciler(kube=api, proxy_image=proxy)  # type: ignore[arg-type]
    serving.reconcile(key, Snapshot(model_deployment(spec, status), ()))
    deployment = next(b for b in api.applied if b["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert [(c["name"], c["image"]) for c in pod["containers"]] == [
        ("model", spec["image"]), ("proxy", proxy),
    ]  # fmt: skip
    assert conditions(api.statuses[-1])["Stalled"] == ("False", "NotStalled")


def test_a_refusal_keeps_the_rollout_it_interrupts() -> None:
    d, canary = rolling_out()
    spec = ModelDeploymentSpec.model_validate(privileged_body()["spec"])
    subject = Subject(NAME, "ml", UID, d.generation + 1, spec, d.status)
    decided = refuse_privileges(subject, spec.privileges(), datetime.now(UTC))
    assert (decided.apply, decided.delete) == ((), ())
    kept = {"phase", "canary_revision", "stable_revision", "step", "history"}
    assert decided.status.model_dump(include=kept) == d.status.model_dump(include=kept)
    assert decided.status.canary_revision == canary
    assert decided.status.observed_generation == d.generation + 1
    ready = next(c for c in decided.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.observed_generation) == (
        "False", "PrivilegedNotAllowed", d.generation + 1,
    )  # fmt: skip


# --- the Event outbox: written with the transition, posted, cleared ----------------------


def test_a_transitions_events_are_written_with_it_posted_then_cleared_and_idle_writes_nothing() -> (
    None
):
    api = FakeApiserver(model_deployment(base_spec(), {}), [])
    reconciler = Reconciler(kube=api)  # type: ignore[arg-type]
    key = ("ml", NAME)
    reconciler.reconcile(key, Snapshot(api.body, ()))
    with_events, cleared = api.statuses
    pending = with_events["pendingEvents"]
    assert [(e["reason"], e["type"]) for e in pending] == [("Deploying", "Normal")]
    assert [e["history"] for e in (with_events, cleared)] == [with_events["history"]] * 2
    assert api.event_names == [pending[0]["name"]]
    assert [e.message for e in api.events] == [pending[0]["message"]]
    assert {k: v for k, v in with_events.items() if k != "pendingEvents"} == cleared
    # Nothing changed since: no status write, no Event.
    owned = tuple(api.applied)
    reconciler.reconcile(key, Snapshot(model_deployment(base_spec(), cleared), owned))
    assert (len(api.statuses), len(api.events)) == (2, 1)


@pytest.mark.parametrize("posted_before_the_kill", [False, True])
def test_a_restarted_operator_posts_what_was_left_pending_once(
    posted_before_the_kill: bool,
) -> None:
    api = FakeApiserver(model_deployment(base_spec(), {}), [])
    key = ("ml", NAME)
    Reconciler(kube=api).reconcile(key, Snapshot(api.body, ()))  # type: ignore[arg-type]
    left = api.statuses[0]  # as an operator killed right after the status write left it
    if not posted_before_the_kill:
        api.events.clear()
        api.event_names.clear()
    api.statuses.clear()
    restarted = Reconciler(kube=api)  # type: ignore[arg-type]
    restarted.reconcile(key, Snapshot(model_deployment(base_spec(), left), tuple(api.applied)))
    assert [e.reason for e in api.events] == ["Deploying"]  # once: a second post is refused
    assert api.event_names == [left["pendingEvents"][0]["name"]]
    (cleared,) = api.statuses
    assert "pendingEvents" not in cleared


# --- a user's HTTPRoute changed ----------------------------------------------------------


def test_a_route_changed_by_someone_else_reconciles_its_model_deployments_at_once() -> None:
    def routed(route: str) -> dict[str, Any]:
        traffic = {"mode": "gatewayAPI", "httpRoute": route}
        return {"spec": {"rollout": {"traffic": traffic}}}

    reconciler = Reconciler(kube=Mock())
    reconciler.cache = WatchCache(
        {("ml", "churn"): [routed("web")], ("ml", "api"): [routed("api")]}, ()
    )
    scheduled: list[tuple[str, str]] = []
    reconciler.schedule = scheduled.append  # type: ignore[method-assign]
    memo = kopf.Memo(reconciler=reconciler)

    def event(kind: str, version: str) -> None:
        body = kopf.Body({"metadata": {"name": "web", "resourceVersion": version}})
        raw = kopf.RawEvent(type=kind, object=dict(body))  # type: ignore[typeddict-item]
        asyncio.run(on_route_event(raw, body, namespace="ml", name="web", memo=memo))

    event("MODIFIED", "7")  # a hand edit
    assert scheduled == [("ml", "churn")]
    reconciler.route_writes["ml", "web"] = "8"  # the operator's own patch made version 8
    event("MODIFIED", "8")
    assert scheduled == [("ml", "churn")]  # nothing to do for its own write
    event("DELETED", "8")  # gone, whoever deleted it
    assert scheduled == [("ml", "churn"), ("ml", "churn")]


# --- what the watch streams keep is what a reconcile reads ---------------------------------


def as_applied_by_kubectl(body: dict[str, Any]) -> dict[str, Any]:
    """`body` as the apiserver serves it after a client-side `kubectl apply`: managedFields
    and the last-applied copy, the parts `slim` drops."""
    meta = body["metadata"]
    annotations = {**(meta.get("annotations") or {}), LAST_APPLIED: json.dumps(body)}
    managed = [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
    return {**body, "metadata": {**meta, "annotations": annotations, "managedFields": managed}}


class Frozen(datetime):
    """The reconcile's clock, at one instant for both runs."""

    @classmethod
    def now(cls, tz: Any = None) -> "Frozen":
        return cls(2026, 11, 20, 12, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("pulls", [True, False])
def test_a_reconcile_on_slimmed_objects_writes_what_it_writes_on_whole_ones(
    pulls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch streams hand Kopf `slim` objects (`kopf_transform`): the reconcile, its fresh
    read on a destructive step, its status, Events and applies must not change."""
    monkeypatch.setattr(handlers, "datetime", Frozen)
    runs = []
    for slimmed in (False, True):
        d, r2 = rolling_out()
        state = None if pulls else waiting("ImagePullBackOff", "not found")
        pod = kubelet_pod(r2, f"churn-{r2}-x", state=state, ready=pulls)
        pod["spec"] = {"containers": [{"name": "model", "image": "churn@sha256:2"}]}
        body = model_deployment(d.spec_raw, to_wire(d.status))
        body["metadata"]["generation"] = d.generation
        body["metadata"]["annotations"] = {"modeldeploy.io/abort": "nothing-of-ours"}
        served = [as_applied_by_kubectl(o) for o in (*d.cluster.objects.values(), pod)]
        served_body = as_applied_by_kubectl(body)
        cached = [slim(o) for o in served] if slimmed else served
        cached_body = slim(served_body) if slimmed else served_body
        assert slimmed == all("managedFields" not in o["metadata"] for o in cached)
        api = FakeApiserver(served_body, served)
        reconciler = Reconciler(kube=api)  # type: ignore[arg-type]
        reconciled = reconciler.reconcile(("ml", NAME), Snapshot(cached_body, tuple(cached)))
        writes = (api.statuses, api.applied, api.events, api.removed)
        runs.append((reconciled, *writes, reconciler.fresh_reads))
    assert runs[0] == runs[1]
    _, statuses, _, events, removed, fresh_reads = runs[1]
    assert removed == ["modeldeploy.io/abort"]
    assert statuses  # it decided something: the stale abort was consumed at least
    assert any(e.reason == "CommandIgnored" for e in events)
    assert fresh_reads == (0 if pulls else 1)
