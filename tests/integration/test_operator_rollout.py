"""Rollouts on a real control plane: a new image becomes a canary at the requested share,
moves through its steps, is pre-scaled and promoted, and the old revision is removed after
bakeTime; abort goes back to the stable; the approval gate waits for a promote. A watcher
samples the cluster throughout and fails the test on any moment with fewer than minWarm
Ready stable pods (or pods behind the client Service)."""

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    WarmWatcher,
    annotate,
    kubectl,
    model_deployment,
    operator_with,
    patch_model_deployment,
    printed,
    ready,
    wait_for,
)

from modeldeploy.api import ANNOTATION_ABORT, ANNOTATION_PROMOTE
from modeldeploy.contract import ENV_SHADOW_URL
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.resources.names import LABEL_NAME, LABEL_REVISION, LABEL_TRACK
from modeldeploy.rollout.report import COARSE_SPLIT

pytestmark = pytest.mark.integration

NAMESPACE = "op-rollout"
NAME = "churn"
MIN_WARM = 2


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, reader: ClusterReader, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    body = model_deployment(NAME, NAMESPACE, "registry.example/churn:1")
    with operator_with(kube, reader, body, tmp_path_factory.mktemp(NAMESPACE)) as op:
        yield op


def status(reader: ClusterReader) -> dict[str, Any]:
    return reader.status(NAMESPACE, NAME)


def set_image(kube: KwokCluster, tag: str, **rollout: Any) -> None:
    spec: dict[str, Any] = {"image": f"registry.example/churn:{tag}"}
    if rollout:
        spec["rollout"] = rollout
    patch_model_deployment(kube, NAMESPACE, NAME, {"spec": spec})


def watcher(reader: ClusterReader) -> WarmWatcher:
    return WarmWatcher(reader, NAMESPACE, NAME, MIN_WARM)


def test_rollout_steps_promotion_and_bake(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    old = status(reader)["stableRevision"]
    # The stable at 4 pods (as if its HPA had scaled it): the canary is sized from that,
    # and pre-scaled to it before the promotion switches traffic.
    kubectl(kube, "scale", "deployment", f"{NAME}-{old}", "-n", NAMESPACE, "--replicas=4")
    wait_for(lambda: ready(reader.deployments(NAMESPACE, NAME)[f"{NAME}-{old}"]) == 4)
    with watcher(reader) as watch:
        start = time.monotonic()
        set_image(kube, "2", canary={"steps": [10, 30]})
        new = wait_for(lambda: status(reader).get("canaryRevision"), timeout=30)
        canary_name = f"{NAME}-{new}"
        wait_for(lambda: canary_name in reader.deployments(NAMESPACE, NAME), timeout=30)
        printed("image changed -> canary Deployment", time.monotonic() - start)

        # Step 1: 10% next to 4 stable pods -> ceil(4 * 10 / 90) = 1 canary pod (20%).
        canary = reader.deployments(NAMESPACE, NAME)[canary_name]
        assert canary["metadata"]["labels"][LABEL_TRACK] == "canary"
        assert canary["spec"]["replicas"] == 1
        hpas = reader.hpas(NAMESPACE, NAME)
        assert sorted(hpas) == [f"{NAME}-stable"]  # the operator alone sizes the canary
        assert hpas[f"{NAME}-stable"]["spec"]["minReplicas"] == MIN_WARM
        assert hpas[f"{NAME}-stable"]["spec"]["scaleTargetRef"]["name"] == f"{NAME}-{old}"
        services = reader.services(NAMESPACE, NAME)
        assert sorted(services) == [NAME]  # no shadowing, no Gateway API: no track Services
        assert services[NAME]["spec"]["selector"] == {LABEL_NAME: NAME}
        wait_for(lambda: status(reader).get("canaryWeight") == 20, timeout=15)
        assert status(reader)["phase"] == "Progressing"

        # Step 2: 30% -> ceil(4 * 30 / 70) = 2 canary pods (33% effective).
        wait_for(lambda: status(reader).get("step") == 1, timeout=15)
        wait_for(lambda: status(reader).get("canaryWeight") == 33, timeout=15)
        assert reader.deployments(NAMESPACE, NAME)[canary_name]["spec"]["replicas"] == 2

        # Promotion: the new revision is stable, the old one kept warm as previous.
        wait_for(lambda: status(reader).get("stableRevision") == new, timeout=30)
        promoted = time.monotonic()
        printed("image changed -> promoted", promoted - start)
        check_promoted(reader, old, new)

        # The old revision goes after bakeTime (5 s).
        wait_for(
            lambda: f"{NAME}-{old}" not in reader.deployments(NAMESPACE, NAME),
            timeout=30,
            what="old revision removed",
        )
        baked = time.monotonic() - promoted
        printed("promoted -> old revision removed (bakeTime 5s)", baked)
        assert baked >= 3  # observed from outside, 1 s reconcile interval
        assert "previousStableRevision" not in status(reader)
        assert ready(reader.deployments(NAMESPACE, NAME)[canary_name]) >= MIN_WARM
    watch.assert_never_below()
    print(f"[warm] {watch.samples} samples, lowest stable {watch.lowest_stable}, "
          f"lowest behind Service {watch.lowest_serving}")  # fmt: skip


def check_promoted(reader: ClusterReader, old: str, new: str) -> None:
    canary_name = f"{NAME}-{new}"
    done = status(reader)
    assert done["phase"] == "Stable"
    assert done["previousStableRevision"] == old
    assert "canaryRevision" not in done
    assert [h["event"] for h in done["history"]][-2:] == ["Started", "Promoted"]

    # Status records the decision first; the objects follow in the same reconcile.
    def retargeted() -> bool:
        hpa = reader.hpas(NAMESPACE, NAME)[f"{NAME}-stable"]["spec"]
        return bool(hpa["scaleTargetRef"]["name"] == canary_name)

    wait_for(retargeted, timeout=10, what="stable HPA on the new revision")
    deployments = reader.deployments(NAMESPACE, NAME)
    assert deployments[canary_name]["spec"]["replicas"] == 4  # pre-scaled
    assert ready(deployments[canary_name]) == 4
    previous = deployments.get(f"{NAME}-{old}")
    if previous is not None:  # unless the 5 s bake already ended
        assert previous["metadata"]["labels"][LABEL_TRACK] == "previous"
        assert previous["spec"]["replicas"] == 4  # kept warm
    assert reader.hpas(NAMESPACE, NAME)[f"{NAME}-stable"]["spec"]["minReplicas"] == MIN_WARM
    assert reader.services(NAMESPACE, NAME)[NAME]["spec"]["selector"] == {
        LABEL_NAME: NAME,
        LABEL_REVISION: new,
    }
    pdb = reader.pdbs(NAMESPACE, NAME)[f"{NAME}-stable"]["spec"]
    assert pdb["selector"]["matchLabels"][LABEL_REVISION] == new
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=10)
    assert reader.condition(NAMESPACE, NAME, "Degraded")["status"] == "False"


def test_abort_returns_to_the_stable(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    stable = status(reader)["stableRevision"]
    with watcher(reader) as watch:
        set_image(kube, "3")
        canary = wait_for(lambda: status(reader).get("canaryRevision"), timeout=30)
        wait_for(lambda: status(reader).get("canaryWeight", 0) > 0, timeout=30)
        start = time.monotonic()
        annotate(kube, NAMESPACE, NAME, ANNOTATION_ABORT, canary)
        wait_for(lambda: status(reader)["phase"] == "RolledBack", timeout=30)
        wait_for(lambda: f"{NAME}-{canary}" not in reader.deployments(NAMESPACE, NAME), timeout=30)
        printed("abort -> canary removed", time.monotonic() - start)
        after = status(reader)
        assert after["stableRevision"] == stable
        assert after["failedRevision"] == canary
        assert after["canaryWeight"] == 0
        assert after["history"][-1]["event"] == "Aborted"
        degraded = reader.condition(NAMESPACE, NAME, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")
        assert reader.services(NAMESPACE, NAME)[NAME]["spec"]["selector"][LABEL_REVISION] == stable
        annotations = reader.model_deployment(NAMESPACE, NAME)["metadata"].get("annotations", {})
        assert ANNOTATION_ABORT not in annotations  # consumed
        # Not retried by itself; back to the stable image -> Ready again.
        time.sleep(2)
        assert "canaryRevision" not in status(reader)
        set_image(kube, "2")
        wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=30)
    watch.assert_never_below()


def test_a_coarse_replica_split_is_shown_and_warned_of(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    """A 5% step at minWarm 2: one canary pod beside two stable ones serves a third of the
    requests. Status shows both weights; a Warning Event and the Progressing condition say
    so and what to change."""
    set_image(kube, "9", canary={"steps": [5]}, stepInterval="10m")
    wait_for(lambda: status(reader).get("requestedWeight") == 5, timeout=30)
    wait_for(lambda: status(reader).get("canaryWeight", 0) > 2 * 5, timeout=60)
    effective = status(reader)["canaryWeight"]

    def warned() -> list[dict[str, Any]]:
        listed = json.loads(kubectl(kube, "get", "events", "-n", NAMESPACE, "-o", "json"))
        return [
            e for e in listed["items"]
            if e.get("reason") == COARSE_SPLIT and e["involvedObject"]["name"] == NAME
        ]  # fmt: skip

    (event,) = wait_for(warned, timeout=30)
    assert event["type"] == "Warning"
    assert f"gives the canary {effective}% of requests for a 5% step" in event["message"]
    assert "bring it within twice the step" in event["message"]  # what to change
    progressing = reader.condition(NAMESPACE, NAME, "Progressing")
    assert event["message"] in progressing["message"]
    canary = status(reader)["canaryRevision"]
    annotate(kube, NAMESPACE, NAME, ANNOTATION_ABORT, canary)
    wait_for(lambda: status(reader)["phase"] == "RolledBack", timeout=30)
    set_image(kube, "2", canary={"steps": [25, 50]}, stepInterval="3s")
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=30)


def test_approval_gate_waits_for_promote(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    with watcher(reader) as watch:
        set_image(kube, "4", requireApproval=True, canary={"steps": [50]})
        canary = wait_for(lambda: status(reader).get("canaryRevision"), timeout=30)
        wait_for(lambda: status(reader)["phase"] == "Paused", timeout=30)
        waiting = reader.condition(NAMESPACE, NAME, "Progressing")
        assert waiting["reason"] == "AwaitingApproval"
        time.sleep(3)
        assert status(reader)["phase"] == "Paused"
        annotate(kube, NAMESPACE, NAME, ANNOTATION_PROMOTE, canary)
        wait_for(lambda: status(reader).get("stableRevision") == canary, timeout=30)
        assert status(reader)["phase"] == "Stable"
    watch.assert_never_below()


def test_shadow_phase_mirrors_to_the_canary_service(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    """`<name>-canary` exists only for a rollout that shadows, and goes with its canary."""
    stable = status(reader)["stableRevision"]
    with watcher(reader) as watch:
        # stepInterval 10m: the shadow phase holds until the promote below.
        set_image(
            kube, "5", shadow={"percent": 50}, stepInterval="10m", requireApproval=False
        )  # fmt: skip
        canary = wait_for(lambda: status(reader).get("canaryRevision"), timeout=30)

        def mirror_url() -> str:
            deployment = reader.deployments(NAMESPACE, NAME)[f"{NAME}-{stable}"]
            env = deployment["spec"]["template"]["spec"]["containers"][0].get("env") or []
            return next((e["value"] for e in env if e["name"] == ENV_SHADOW_URL), "")

        url = wait_for(mirror_url, timeout=30, what="the stable mirroring")
        assert url == f"http://{NAME}-canary.{NAMESPACE}.svc"
        services = reader.services(NAMESPACE, NAME)
        assert sorted(services) == [NAME, f"{NAME}-canary"]
        assert services[f"{NAME}-canary"]["spec"]["selector"] == {
            LABEL_NAME: NAME,
            LABEL_REVISION: canary,
        }
        assert services[NAME]["spec"]["selector"][LABEL_REVISION] == stable  # no live share
        annotate(kube, NAMESPACE, NAME, ANNOTATION_PROMOTE, canary)
        wait_for(lambda: status(reader).get("stableRevision") == canary, timeout=30)
        wait_for(
            lambda: sorted(reader.services(NAMESPACE, NAME)) == [NAME],
            timeout=10,
            what="the canary Service removed with its canary",
        )
    watch.assert_never_below()
