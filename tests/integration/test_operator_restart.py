"""Level-based: the operator killed (SIGKILL) in the middle of a rollout and started again
finishes the rollout from what status and the cluster say; minWarm Ready stable pods
throughout."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    WarmWatcher,
    model_deployment,
    operator_with,
    patch_model_deployment,
    printed,
    wait_for,
)

from modeldeploy.devenv.cluster import KwokCluster

pytestmark = pytest.mark.integration

NAMESPACE = "op-restart"
NAME = "churn"


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, reader: ClusterReader, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    body = model_deployment(
        NAME, NAMESPACE, "registry.example/churn:1",
        rollout={"canary": {"steps": [25, 50]}, "stepInterval": "4s", "bakeTime": "3s"},
    )  # fmt: skip
    with operator_with(kube, reader, body, tmp_path_factory.mktemp(NAMESPACE)) as op:
        yield op


def test_killed_mid_rollout_then_restarted_finishes_it(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    def status() -> dict[str, Any]:
        return reader.status(NAMESPACE, NAME)

    old = status()["stableRevision"]
    with WarmWatcher(reader, NAMESPACE, NAME, min_warm=2) as watch:
        patch_model_deployment(
            kube, NAMESPACE, NAME, {"spec": {"image": "registry.example/churn:2"}}
        )
        new = wait_for(lambda: status().get("canaryRevision"), timeout=30)
        wait_for(lambda: status().get("canaryWeight", 0) > 0, timeout=30)
        operator.kill()
        killed_at = status()
        # Nobody reconciles: the rollout stays where it was, traffic and pods unchanged.
        time.sleep(6)
        frozen = status()
        assert frozen["stableRevision"] == old
        assert frozen.get("step") == killed_at.get("step")
        assert frozen.get("canaryRevision") == new
        start = time.monotonic()
        operator.start()
        wait_for(lambda: status().get("stableRevision") == new, timeout=60)
        printed("restart -> promoted", time.monotonic() - start)
        wait_for(
            lambda: f"{NAME}-{old}" not in reader.deployments(NAMESPACE, NAME),
            timeout=30,
            what="old revision removed after bakeTime",
        )
        assert status()["phase"] == "Stable"
        events = [h["event"] for h in status()["history"]]
        assert events[-2:] == ["Started", "Promoted"]
    watch.assert_never_below()
