"""The operator against a real control plane: create -> Ready with minWarm pods and the
objects around them, an idle resource causes no writes, deleting cleans everything up."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    apply_object,
    ensure_crd,
    ensure_namespace,
    model_deployment,
    printed,
    ready,
    wait_for,
)

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.resources.names import LABEL_NAME, LABEL_REVISION, LABEL_TRACK

pytestmark = pytest.mark.integration

NAMESPACE = "op-basic"
NAME = "churn"
IMAGE = "registry.example/churn:1"


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    ensure_crd(kube)
    ensure_namespace(kube, NAMESPACE)
    workdir = Path(tmp_path_factory.mktemp("op-basic"))
    # A full level-based pass every second: the idle test checks that it writes nothing.
    with OperatorProcess(kube, NAMESPACE, workdir, resync=1) as op:
        yield op


@pytest.fixture(scope="module")
def created(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> dict[str, float]:
    """Create the resource; measure apply -> Deployment created -> Ready."""
    start = time.monotonic()
    apply_object(kube, model_deployment(NAME, NAMESPACE, IMAGE))
    applied = time.monotonic()
    wait_for(lambda: reader.deployments(NAMESPACE, NAME), timeout=30, interval=0.05)
    deployed = time.monotonic()
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, interval=0.05)
    done = time.monotonic()
    timings = {
        "kubectl apply": applied - start,
        "apply -> Deployment created": deployed - applied,
        "apply -> Ready condition": done - applied,
    }
    for label, seconds in timings.items():
        printed(label, seconds)
    return timings


def test_create_becomes_ready_with_min_warm_pods(
    created: dict[str, float], reader: ClusterReader
) -> None:
    status = reader.status(NAMESPACE, NAME)
    assert status["phase"] == "Stable"
    revision = status["stableRevision"]
    deployments = reader.deployments(NAMESPACE, NAME)
    assert list(deployments) == [f"{NAME}-{revision}"]
    deployment = deployments[f"{NAME}-{revision}"]
    assert ready(deployment) >= 2
    assert deployment["metadata"]["labels"][LABEL_TRACK] == "stable"
    assert LABEL_TRACK not in deployment["spec"]["template"]["metadata"]["labels"]
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelDeployment", NAME, True)
    ready_condition = reader.condition(NAMESPACE, NAME, "Ready")
    md = reader.model_deployment(NAMESPACE, NAME)
    assert ready_condition["observedGeneration"] == md["metadata"]["generation"]
    assert status["observedGeneration"] == md["metadata"]["generation"]
    # Kopf left nothing of its own on the object.
    assert not md["metadata"].get("finalizers")
    assert not any("kopf" in key for key in md["metadata"].get("annotations") or {})


def test_created_objects_belong_to_the_operators_apply(
    created: dict[str, float], reader: ClusterReader
) -> None:
    """Created by a create-only server-side apply, not a POST: every field the operator set
    is its Apply's, so a later apply that leaves one out (an annotation, an env var)
    removes it."""
    owned = reader.owned(NAMESPACE, NAME)
    assert sorted(k.split("/")[0] for k in owned) == [
        "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service",
    ]  # fmt: skip
    for key, body in owned.items():
        ours = [f for f in body["metadata"]["managedFields"] if f["manager"] == "modeldeploy"]
        assert [f["operation"] for f in ours] == ["Apply"], key


def test_services_hpa_and_pdb(created: dict[str, float], reader: ClusterReader) -> None:
    revision = reader.status(NAMESPACE, NAME)["stableRevision"]
    selector = {LABEL_NAME: NAME, LABEL_REVISION: revision}
    services = reader.services(NAMESPACE, NAME)
    assert sorted(services) == [NAME]  # track Services only for shadowing or Gateway API
    assert services[NAME]["spec"]["selector"] == selector
    hpas = reader.hpas(NAMESPACE, NAME)
    assert sorted(hpas) == [f"{NAME}-stable"]
    hpa = hpas[f"{NAME}-stable"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == f"{NAME}-{revision}"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    pdb = reader.pdbs(NAMESPACE, NAME)[f"{NAME}-stable"]["spec"]
    assert pdb["minAvailable"] == 2
    assert pdb["selector"]["matchLabels"] == selector


def test_kubectl_wait_for_ready(created: dict[str, float], kube: KwokCluster) -> None:
    kube.kubectl(
        "wait", "--for=condition=Ready", f"modeldeployment/{NAME}", "-n", NAMESPACE,
        "--timeout=10s",
    )  # fmt: skip


def operator_write_time(body: dict[str, Any]) -> list[str]:
    """When the operator's field manager last changed the object."""
    fields = body["metadata"]["managedFields"]
    return [f.get("time", "") for f in fields if f.get("manager") == "modeldeploy"]


def test_idle_resource_causes_no_writes(
    created: dict[str, float], operator: OperatorProcess, reader: ClusterReader
) -> None:
    """30 s of full passes every second (`--resync 1`): no API request by the operator (it
    reconciles from its watch cache), and no object of the resource changes (resourceVersions of the
    ModelDeployment and all owned objects)."""
    time.sleep(3)  # let the controllers settle (HPA status, ReplicaSets)
    before_md = reader.model_deployment(NAMESPACE, NAME)["metadata"]["resourceVersion"]
    owned = reader.owned(NAMESPACE, NAME)
    before = {k: b["metadata"]["resourceVersion"] for k, b in owned.items()}
    ours_before = {k: operator_write_time(b) for k, b in owned.items()}
    mark = operator.mark()
    stats = operator.stats()
    time.sleep(30)
    writes = operator.writes(since=mark)
    requests = operator.requests(since=mark)
    reconciles = operator.stats()["reconciles"] - stats["reconciles"]
    after_md = reader.model_deployment(NAMESPACE, NAME)["metadata"]["resourceVersion"]
    owned = reader.owned(NAMESPACE, NAME)
    after = {k: b["metadata"]["resourceVersion"] for k, b in owned.items()}
    assert {k: operator_write_time(b) for k, b in owned.items()} == ours_before
    print(f"[idle] 30 s: {reconciles} reconciles, {len(requests)} operator API requests")
    assert reconciles >= 15  # it did look, every second (the counters lag up to 10 s)
    assert writes == []
    assert requests == []
    assert after_md == before_md
    changed = {k for k in before if after.get(k) != before[k]}
    print(f"[idle] objects whose resourceVersion changed: {sorted(changed) or 'none'}")
    # The HPA controller (not the operator) updates its HPA's status (it finds no metrics
    # API here); everything else must be untouched.
    assert {k for k in changed if not k.startswith("HorizontalPodAutoscaler/")} == set()


def test_objects_an_older_operator_made_are_deleted(
    created: dict[str, float], kube: KwokCluster, reader: ClusterReader
) -> None:
    """Up to 0.1.0 every ModelDeployment had `<name>-stable` and `<name>-canary` Services:
    after an upgrade the operator deletes what it owns and no longer wants."""
    md = reader.model_deployment(NAMESPACE, NAME)
    owner = {
        "apiVersion": md["apiVersion"],
        "kind": md["kind"],
        "name": NAME,
        "uid": md["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    revision = md["status"]["stableRevision"]
    old = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": f"{NAME}-{track}",
                "namespace": NAMESPACE,
                "labels": {LABEL_NAME: NAME},
                "ownerReferences": [owner],
            },
            "spec": {
                "selector": {LABEL_NAME: NAME, LABEL_REVISION: revision},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        }
        for track in ("stable", "canary")
    ]
    kube.apply_objects(old)
    wait_for(
        lambda: sorted(reader.services(NAMESPACE, NAME)) == [NAME],
        timeout=30,
        what="the old track Services deleted",
    )


def test_deleting_removes_everything(
    created: dict[str, float], kube: KwokCluster, reader: ClusterReader
) -> None:
    kube.kubectl("delete", "modeldeployment", NAME, "-n", NAMESPACE, "--timeout=30s")
    wait_for(lambda: not reader.owned(NAMESPACE, NAME), timeout=60, what="garbage collection")

    def no_pods() -> bool:
        pods = json.loads(kube.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)
        return not pods["items"]

    wait_for(no_pods, timeout=60, interval=1, what="pods gone")
