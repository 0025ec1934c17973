"""Multi-tenant safety on the real control plane: an object the ModelDeployment does not control
is never taken over, and no crash between two writes of a reconcile puts a removed revision
behind the client Service next to the new one."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    apply_object,
    ensure_crd,
    ensure_namespace,
    kubectl,
    model_deployment,
    patch_model_deployment,
    wait_for,
)

from modeldeploy.api import ANNOTATION_PROMOTE, ModelDeploymentSpec
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.handlers import Reconciler
from modeldeploy.kube import Kube
from modeldeploy.resources.names import LABEL_REVISION
from modeldeploy.resources.revision import revision_of
from modeldeploy.rollout import ObjectRef

pytestmark = pytest.mark.integration

Body = dict[str, Any]


# --- a Service someone else made, named like the client Service ------------------------------


def test_a_foreign_service_is_never_taken_over(
    kube: KwokCluster, reader: ClusterReader, tmp_path: Path
) -> None:
    namespace, name = "op-tenancy", "legacy"
    ensure_crd(kube)
    ensure_namespace(kube, namespace)
    theirs: Body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "legacy"}},
        "spec": {"selector": {"app": "legacy"}, "ports": [{"name": "http", "port": 80}]},
    }
    apply_object(kube, theirs)
    path = f"/api/v1/namespaces/{namespace}/services/{name}"
    before = reader.api.get(path)
    with OperatorProcess(kube, namespace, tmp_path) as op:
        apply_object(kube, model_deployment(name, namespace, "registry.example/legacy:1"))

        def not_owned() -> Body:
            degraded = reader.condition(namespace, name, "Degraded")
            return degraded if degraded.get("reason") == "ObjectNotOwned" else {}

        degraded = wait_for(not_owned, timeout=60, what="Degraded ObjectNotOwned")
        assert f"Service/{name} (with no controller)" in degraded["message"]
        # Everything else is made: the stable serves its warm pods (on its own Service, not
        # this one), and the operator keeps not writing the foreign Service.
        wait_for(lambda: reader.is_true(namespace, name, "Ready"), timeout=60, what="Ready")
        time.sleep(3)  # a few more reconciles (every second)
        # One create, refused by the apiserver (the name exists); never an apply over it.
        assert len([w for w in op.writes() if f"/services/{name}" in w]) == 1
        assert f"Service/{name} exists; planned again knowing it" in op.log()

        def events() -> list[Body]:
            listed = kube.get_json("events", "-n", namespace)["items"]
            return [e for e in listed if e.get("reason") == "ObjectNotOwned"]

        wait_for(events, timeout=30, what="ObjectNotOwned Event")
        assert len(events()) == 1
    after = reader.api.get(path)
    assert after["spec"]["selector"] == {"app": "legacy"}
    assert not after["metadata"].get("ownerReferences")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert not [f for f in after["metadata"]["managedFields"] if f["manager"] == "modeldeploy"]
    kubectl(kube, "delete", "modeldeployment", name, "-n", namespace, "--timeout=30s")
    wait_for(lambda: not reader.deployments(namespace, name), timeout=60, what="GC")
    survivor = reader.api.get(path)  # the garbage collector left it alone
    assert survivor["metadata"]["uid"] == before["metadata"]["uid"]
    assert survivor["spec"]["selector"] == {"app": "legacy"}


# --- write order, one write at a time ---------------------------------------------------------


class SteppedKube(Kube):
    """The operator's Kube that stops after each object write: `after_write` sees the cluster as
    an operator killed right after that write would leave it."""

    def __init__(self, kubeconfig: str, after_write: Callable[[str], None]) -> None:
        super().__init__(kubeconfig)
        self.after_write = after_write

    def apply(self, body: Body) -> Body:
        stored = super().apply(body)
        self.after_write(f"apply {body['kind']}/{body['metadata']['name']}")
        return stored  # Kube.create is an apply too

    def delete(self, namespace: str, ref: ObjectRef) -> None:
        super().delete(namespace, ref)
        self.after_write(f"delete {ref}")


class Tenant:
    """One ModelDeployment reconciled in this process (no operator running), with a check of
    the pods behind its client Service after every write and while the cluster settles."""

    def __init__(self, kube: KwokCluster, reader: ClusterReader, namespace: str, name: str):
        self.kube, self.reader, self.namespace, self.name = kube, reader, namespace, name
        self.key = (namespace, name)
        self.api = SteppedKube(str(kube.kubeconfig), self.after_write)
        self.reconciler = Reconciler(self.api)
        self.forbidden: set[str] = set()
        """Revisions that must never serve together (a removed one and the new one)."""
        self.writes: list[str] = []
        self.samples = 0

    def serving(self) -> set[str]:
        """Revisions with Ready, running pods behind the client Service."""
        services = self.reader.services(self.namespace, self.name)
        if self.name not in services:
            return set()
        selector = services[self.name]["spec"].get("selector") or {}
        pods = self.reader.items(f"/api/v1/namespaces/{self.namespace}/pods", self.name)
        return {
            pod["metadata"]["labels"].get(LABEL_REVISION, "")
            for pod in pods
            if not pod["metadata"].get("deletionTimestamp")
            and selector.items() <= (pod["metadata"].get("labels") or {}).items()
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            )
        }

    def check(self) -> bool:
        self.samples += 1
        serving = self.serving()
        assert not (self.forbidden and self.forbidden <= serving), (serving, self.writes)
        return True

    def settled(self) -> bool:
        """Every Deployment at its size with Ready pods; no pods left of a deleted one."""
        self.check()
        deployments = self.reader.deployments(self.namespace, self.name).values()
        for d in deployments:
            status, wanted = d.get("status") or {}, d["spec"]["replicas"]
            if status.get("observedGeneration", 0) < d["metadata"]["generation"]:
                return False
            if (status.get("replicas", 0), status.get("readyReplicas", 0)) != (wanted, wanted):
                return False
        running = {d["metadata"]["labels"][LABEL_REVISION] for d in deployments}
        pods = self.reader.items(f"/api/v1/namespaces/{self.namespace}/pods", self.name)
        return all(p["metadata"]["labels"].get(LABEL_REVISION) in running for p in pods)

    def after_write(self, write: str) -> None:
        self.writes.append(write)
        self.check()
        wait_for(self.settled, timeout=60, interval=0.1, what=f"settled after {write}")

    def reconcile(self) -> None:
        snapshot = self.reconciler.read_fresh(self.key)
        assert snapshot is not None
        self.reconciler.reconcile(self.key, snapshot)
        self.check()

    def until(self, done: Callable[[Body], bool], what: str) -> Body:
        """Reconcile (every 0.2 s, at most 300 times) until `done(status)`."""
        for _ in range(300):
            self.reconcile()
            status = self.reader.status(self.namespace, self.name)
            if done(status):
                return status
            time.sleep(0.2)
        raise TimeoutError(f"{what}: {self.reader.status(self.namespace, self.name)}")

    def change_image(self, image: str) -> str:
        """The new spec's revision."""
        patch_model_deployment(self.kube, self.namespace, self.name, {"spec": {"image": image}})
        spec = self.reader.model_deployment(self.namespace, self.name)["spec"]
        return revision_of(ModelDeploymentSpec.model_validate(spec))

    def canary_serving(self, status: Body) -> bool:
        canary = status.get("canaryRevision")
        return bool(canary) and status.get("step") == 0 and canary in self.serving()


def test_no_write_puts_a_removed_revision_behind_the_client_service_with_the_new_one(
    kube: KwokCluster, reader: ClusterReader
) -> None:
    namespace, name = "op-write-order", "order"
    ensure_crd(kube)
    ensure_namespace(kube, namespace)
    spec = {"rollout": {"canary": {"steps": [25, 50]}, "stepInterval": "1h", "bakeTime": "1h"}}
    apply_object(kube, model_deployment(name, namespace, "registry.example/order:1", **spec))
    tenant = Tenant(kube, reader, namespace, name)
    r1 = tenant.until(lambda s: s.get("phase") == "Stable", "first revision")["stableRevision"]

    # A canary at 25 %, superseded by a newer revision mid-rollout.
    tenant.change_image("registry.example/order:2")
    r2 = tenant.until(tenant.canary_serving, "canary r2 serving")["canaryRevision"]
    assert tenant.serving() == {r1, r2}
    r3 = tenant.change_image("registry.example/order:3")
    tenant.forbidden = {r2, r3}
    tenant.writes.clear()
    assert tenant.until(tenant.canary_serving, "canary r3 serving")["canaryRevision"] == r3
    print(f"[write order] superseded canary: {tenant.writes}")
    # The superseded canary is deleted before the new one gets pods.
    scaled = max(i for i, w in enumerate(tenant.writes) if w == f"apply Deployment/{name}-{r3}")
    assert tenant.writes.index(f"delete Deployment/{name}-{r2}") < scaled
    assert tenant.serving() == {r1, r3}

    # Promoted with a bake, then a new rollout ends the bake early: the previous revision
    # (warm, Ready) never joins the client Service.
    tenant.forbidden = set()
    kubectl(
        kube, "annotate", "modeldeployment", name, "-n", namespace,
        f"{ANNOTATION_PROMOTE}={r3}",
    )  # fmt: skip
    tenant.until(lambda s: s.get("previousStableRevision") == r1, "baking r3")
    tenant.forbidden = {r1}  # never serves again: its bake is ending
    r4 = tenant.change_image("registry.example/order:4")
    tenant.writes.clear()
    status = tenant.until(tenant.canary_serving, "canary r4 serving")
    print(f"[write order] bake ended early: {tenant.writes}")
    assert status.get("previousStableRevision") is None
    assert tenant.serving() == {r3, r4}
    print(f"[write order] {tenant.samples} samples of the pods behind {name}")
    kubectl(kube, "delete", "modeldeployment", name, "-n", namespace, "--timeout=30s")
