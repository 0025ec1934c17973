"""traffic.mode gatewayAPI on a real control plane with the official Gateway API CRDs: the
operator sets the weights of the user's HTTPRoute to each step exactly, reports the weight
the route carries, leaves everything else of the route alone, leaves all weight on the new
stable after promotion, and takes the weight from the canary in the reconcile that rolls it
back. No Gateway controller runs and nothing is dialled: the route's spec is the contract."""

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    annotate,
    apply_object,
    kubectl,
    model_deployment,
    operator_with,
    patch_model_deployment,
    printed,
    ready,
    wait_for,
)

from modeldeploy.api import ANNOTATION_ABORT
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.resources.names import LABEL_NAME, LABEL_REVISION

pytestmark = pytest.mark.integration

NAMESPACE = "op-gateway"
NAME = "churn"
ROUTE = "churn-route"
TRAFFIC = {"mode": "gatewayAPI", "httpRoute": ROUTE}
MATCHES = [{"path": {"type": "PathPrefix", "value": "/v2"}}]


def user_route() -> dict[str, Any]:
    """The user's route: their Gateway, hostname and matches; one backend, the stable."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": NAMESPACE, "labels": {"team": "ml"}},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["churn.example"],
            "rules": [
                {"matches": MATCHES, "backendRefs": [{"name": f"{NAME}-stable", "port": 80}]}
            ],
        },
    }


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, reader: ClusterReader, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    kube.kubectl("create", "namespace", NAMESPACE, check=False)
    apply_object(kube, user_route())
    rollout = {"canary": {"steps": [10, 50]}, "stepInterval": "6s", "bakeTime": "2s",
               "traffic": TRAFFIC}  # fmt: skip
    body = model_deployment(NAME, NAMESPACE, "registry.example/churn:1", rollout=rollout)
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    # A resync of an hour: what corrects a hand edit of the route below is its watch.
    args = ["--watch-http-routes", "--resync", "3600"]
    with operator_with(kube, reader, body, workdir, args) as op:
        yield op


def status(reader: ClusterReader) -> dict[str, Any]:
    return reader.status(NAMESPACE, NAME)


def route(kube: KwokCluster) -> dict[str, Any]:
    return kube.get_json("httproute", ROUTE, "-n", NAMESPACE)


def weights(kube: KwokCluster) -> dict[str, int]:
    refs = route(kube)["spec"]["rules"][0]["backendRefs"]
    return {r["name"]: r.get("weight", 1) for r in refs}


def split(canary: int) -> dict[str, int]:
    return {f"{NAME}-stable": 100 - canary, f"{NAME}-canary": canary}


def carried(reader: ClusterReader, percent: int) -> bool:
    """Status says the step asks for `percent` and the route carries it."""
    now = status(reader)
    return now.get("requestedWeight") == percent and now.get("canaryWeight") == percent


def set_image(kube: KwokCluster, tag: str) -> None:
    spec = {"image": f"registry.example/churn:{tag}"}
    patch_model_deployment(kube, NAMESPACE, NAME, {"spec": spec})


def test_stable_model_gets_the_whole_route(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    wait_for(lambda: weights(kube) == split(0), timeout=30, what="stable 100 on the route")
    stable = status(reader)["stableRevision"]
    services = reader.services(NAMESPACE, NAME)
    assert sorted(services) == [NAME, f"{NAME}-canary", f"{NAME}-stable"]
    only_stable = {LABEL_NAME: NAME, LABEL_REVISION: stable}
    assert services[f"{NAME}-stable"]["spec"]["selector"] == only_stable
    assert status(reader)["canaryWeight"] == 0
    # The user's parts of the route are theirs, untouched; the route is not taken over.
    body = route(kube)
    assert body["spec"]["parentRefs"][0]["name"] == "public"
    assert body["spec"]["hostnames"] == ["churn.example"]
    assert body["spec"]["rules"][0]["matches"][0]["path"] == MATCHES[0]["path"]
    assert body["metadata"]["labels"] == {"team": "ml"}
    assert not body["metadata"].get("ownerReferences")


def test_weights_follow_each_step_and_promotion(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    old = status(reader)["stableRevision"]
    kubectl(kube, "scale", "deployment", f"{NAME}-{old}", "-n", NAMESPACE, "--replicas=4")
    wait_for(lambda: ready(reader.deployments(NAMESPACE, NAME)[f"{NAME}-{old}"]) == 4)
    start = time.monotonic()
    set_image(kube, "2")
    new = wait_for(lambda: status(reader).get("canaryRevision"), timeout=30)

    # 10%: exactly 10/90 on the route; status reads it back.
    wait_for(lambda: weights(kube) == split(10), timeout=30, what="10/90 on the route")
    printed("image changed -> route 10/90", time.monotonic() - start)
    wait_for(lambda: carried(reader, 10), timeout=15, what="status: 10% carried")
    # The canary's pods follow its load (10% of 4 stable pods: 1), not a replica ratio.
    assert reader.deployments(NAMESPACE, NAME)[f"{NAME}-{new}"]["spec"]["replicas"] == 1
    services = reader.services(NAMESPACE, NAME)
    assert services[NAME]["spec"]["selector"][LABEL_REVISION] == old
    assert services[f"{NAME}-canary"]["spec"]["selector"][LABEL_REVISION] == new

    # 50%: exactly 50/50, with 2 canary pods (a replica ratio would need 4).
    wait_for(lambda: weights(kube) == split(50), timeout=30, what="50/50 on the route")
    wait_for(lambda: carried(reader, 50), timeout=15, what="status: 50% carried")
    assert reader.deployments(NAMESPACE, NAME)[f"{NAME}-{new}"]["spec"]["replicas"] == 2

    # Promotion: all weight on the stable backend, which now selects the new revision.
    wait_for(lambda: status(reader).get("stableRevision") == new, timeout=60)
    printed("image changed -> promoted", time.monotonic() - start)
    wait_for(lambda: weights(kube) == split(0), timeout=15, what="100 on the new stable")

    def stable_backend() -> str:
        selector = reader.services(NAMESPACE, NAME)[f"{NAME}-stable"]["spec"]["selector"]
        return str(selector[LABEL_REVISION])

    wait_for(lambda: stable_backend() == new, timeout=15, what="stable Service on the new one")
    assert status(reader)["canaryWeight"] == 0


def test_rollback_takes_the_weight_from_the_canary_in_one_reconcile(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    wait_for(lambda: status(reader).get("phase") == "Stable", timeout=60)
    set_image(kube, "3")
    canary = wait_for(lambda: status(reader).get("canaryRevision"), timeout=30)
    wait_for(lambda: weights(kube) == split(10), timeout=30, what="10/90 on the route")
    mark = operator.mark()
    start = time.monotonic()
    annotate(kube, NAMESPACE, NAME, ANNOTATION_ABORT, canary)
    gone = f"{NAME}-{canary}"
    wait_for(lambda: gone not in reader.deployments(NAMESPACE, NAME), timeout=30)
    # The reconcile that deleted the canary had patched the route before: no wait here.
    assert weights(kube) == split(0)
    printed("abort -> route 100/0, canary removed", time.monotonic() - start)
    writes = operator.writes(mark)
    patches = [i for i, w in enumerate(writes) if f"httproutes/{ROUTE}" in w]
    deletes = [i for i, w in enumerate(writes) if "DELETE" in w and f"deployments/{gone}" in w]
    assert patches, writes
    assert deletes, writes
    assert patches[0] < deletes[0]
    # Between them, no other reconcile: no status write (each reconcile starts with one).
    between = writes[patches[0] : deletes[0]]
    assert not [w for w in between if "/status" in w], between
    wait_for(lambda: status(reader).get("phase") == "RolledBack", timeout=15)
    assert status(reader)["canaryWeight"] == 0


def test_a_route_that_cannot_carry_the_weights_is_left_alone_and_reported(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    other = "web-route"  # the user's route to another app: no backendRef to ours
    web = user_route()
    web["metadata"]["name"] = other
    web["spec"]["rules"][0]["backendRefs"] = [{"name": "web", "port": 80}]
    apply_object(kube, web)
    before = kube.get_json("httproute", other, "-n", NAMESPACE)
    rollout = {"canary": {"steps": [50]}, "traffic": {"mode": "gatewayAPI", "httpRoute": other}}
    apply_object(
        kube, model_deployment("web", NAMESPACE, "registry.example/web:1", rollout=rollout)
    )
    wait_for(lambda: reader.is_true(NAMESPACE, "web", "Ready"), timeout=60)

    def reported() -> list[dict[str, Any]]:
        selector = "reason=RouteNotUsable,involvedObject.name=web"
        items = kube.get_json("events", "-n", NAMESPACE, "--field-selector", selector)["items"]
        return list(items)

    events = wait_for(reported, timeout=30, what="RouteNotUsable Event")
    assert "no rule with a backendRef to Service web-stable" in events[0]["message"]
    route_spec = kube.get_json("httproute", other, "-n", NAMESPACE)
    assert route_spec["spec"] == before["spec"]
    assert route_spec["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    kube.kubectl("delete", "mdep", "web", "-n", NAMESPACE, "--wait=false")


def test_a_hand_edit_of_the_weights_is_undone_at_once(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    stable = status(reader)["stableRevision"]
    set_image(kube, "2")  # back to the stable's image (the aborted 3 stays rolled back)
    wait_for(lambda: status(reader).get("phase") == "Stable", timeout=60, what="Stable")
    assert status(reader)["stableRevision"] == stable
    wait_for(lambda: weights(kube) == split(0), timeout=15, what="100 on the stable")
    # Idle: nothing is due, and the next resync is an hour away.
    mark = operator.mark()
    start = time.monotonic()
    edit = [
        {"op": "replace", "path": "/spec/rules/0/backendRefs", "value": [
            {"name": f"{NAME}-stable", "port": 80, "weight": 40},
            {"name": f"{NAME}-canary", "port": 80, "weight": 60},
        ]},
    ]  # fmt: skip
    kubectl(kube, "patch", "httproute", ROUTE, "-n", NAMESPACE, "--type=json",
            "-p", json.dumps(edit))  # fmt: skip
    wait_for(lambda: weights(kube) == split(0), timeout=20, what="the hand edit undone")
    printed("hand edit of the route -> undone", time.monotonic() - start)
    patches = [w for w in operator.writes(mark) if f"httproutes/{ROUTE}" in w]
    assert len(patches) == 1, operator.writes(mark)
