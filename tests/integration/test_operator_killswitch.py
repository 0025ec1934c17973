"""The kill switch on a real control plane: engaging it takes the model out of traffic within
one reconcile (every revision scaled to zero, or the client Service routed to the fallback),
the spec is kept, and releasing it restores the previous state."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    model_deployment,
    operator_with,
    patch_model_deployment,
    printed,
    ready,
    serving,
    wait_for,
)

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.resources.names import LABEL_FALLBACK, LABEL_NAME, LABEL_REVISION

pytestmark = pytest.mark.integration

NAMESPACE = "op-kill"
NAME = "fraud"
FALLBACK = f"{NAME}-fallback"


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, reader: ClusterReader, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    body = model_deployment(
        NAME, NAMESPACE, "registry.example/fraud:1",
        fallback={"image": "registry.example/fraud-static:1", "replicas": 1},
    )  # fmt: skip
    with operator_with(kube, reader, body, tmp_path_factory.mktemp(NAMESPACE)) as op:
        yield op


def kill_switch(kube: KwokCluster, engaged: bool, mode: str) -> None:
    patch = {"spec": {"killSwitch": {"engaged": engaged, "mode": mode}}}
    patch_model_deployment(kube, NAMESPACE, NAME, patch)


def revisions(reader: ClusterReader) -> dict[str, Any]:
    return {n: d for n, d in reader.deployments(NAMESPACE, NAME).items() if n != FALLBACK}


def client_selector(reader: ClusterReader) -> dict[str, str]:
    selector: dict[str, str] = reader.services(NAMESPACE, NAME)[NAME]["spec"]["selector"]
    return selector


def test_scale_to_zero_and_back(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    stable = reader.status(NAMESPACE, NAME)["stableRevision"]
    start = time.monotonic()
    kill_switch(kube, True, "scaleToZero")
    wait_for(
        lambda: all(d["spec"]["replicas"] == 0 for d in revisions(reader).values()),
        timeout=10, interval=0.05,
    )  # fmt: skip
    printed("kill switch (scaleToZero) -> replicas 0", time.monotonic() - start)
    wait_for(lambda: serving(revisions(reader), client_selector(reader)) == 0, timeout=30)
    printed(
        "kill switch (scaleToZero) -> no Ready pod behind the Service", time.monotonic() - start
    )
    wait_for(lambda: reader.status(NAMESPACE, NAME)["phase"] == "Killed", timeout=10)
    wait_for(lambda: not reader.hpas(NAMESPACE, NAME), timeout=10, what="HPAs deleted")
    wait_for(lambda: not reader.pdbs(NAMESPACE, NAME), timeout=10, what="PDB deleted")
    assert reader.is_true(NAMESPACE, NAME, "Killed")
    assert not reader.is_true(NAMESPACE, NAME, "Ready")
    assert reader.status(NAMESPACE, NAME)["history"][-1]["event"] == "KillSwitchEngaged"
    # The spec is kept.
    spec = reader.model_deployment(NAMESPACE, NAME)["spec"]
    assert spec["image"] == "registry.example/fraud:1"

    start = time.monotonic()
    kill_switch(kube, False, "scaleToZero")
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60)
    printed("release -> Ready again", time.monotonic() - start)
    assert ready(revisions(reader)[f"{NAME}-{stable}"]) >= 2
    hpa = reader.hpas(NAMESPACE, NAME)[f"{NAME}-stable"]["spec"]
    assert hpa["minReplicas"] == 2
    assert client_selector(reader) == {LABEL_NAME: NAME, LABEL_REVISION: stable}
    assert reader.status(NAMESPACE, NAME)["history"][-1]["event"] == "KillSwitchReleased"


def test_fallback_and_back(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    stable = reader.status(NAMESPACE, NAME)["stableRevision"]
    wait_for(lambda: ready(reader.deployments(NAMESPACE, NAME)[FALLBACK]) == 1, timeout=30)
    start = time.monotonic()
    kill_switch(kube, True, "fallback")
    wait_for(lambda: client_selector(reader) == {LABEL_FALLBACK: NAME}, timeout=10, interval=0.05)
    printed("kill switch (fallback) -> Service routes to the fallback", time.monotonic() - start)
    wait_for(lambda: reader.status(NAMESPACE, NAME)["phase"] == "Killed", timeout=10)
    deployments = reader.deployments(NAMESPACE, NAME)
    assert serving(deployments, client_selector(reader)) == 1  # only the fallback pod
    assert ready(deployments[f"{NAME}-{stable}"]) >= 2  # the model stays warm
    kill_switch(kube, False, "fallback")
    wait_for(
        lambda: client_selector(reader) == {LABEL_NAME: NAME, LABEL_REVISION: stable}, timeout=10
    )
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=30)
