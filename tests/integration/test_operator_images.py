"""The operator with real model containers: the pod runner's container mode runs each pod's
image, pulled from the local registry by the digest in the pod spec, and writes the pods'
status as a kubelet would. A canary whose image crashes at start (its last words in its
termination message), or whose digest the registry does not have, is rolled back with the
pod's real reason in status, history and the RolledBack Event, while the stable containers
keep serving."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    apply_object,
    kubectl,
    model_deployment,
    operator_in,
    patch_model_deployment,
    wait_for,
)
from podrunner_harness import RunnerProcess, container_status

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.images import BuiltImage
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.registry import RegistryServer

pytestmark = pytest.mark.integration

NAMESPACE = "op-images"
NAME = "churn"
Body = dict[str, Any]


@dataclass
class Stack:
    operator: OperatorProcess
    runner: RunnerProcess
    host: str  # the registry's, as image references name it


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster,
    prometheus: PrometheusServer,
    registry: RegistryServer,
    images: dict[str, BuiltImage],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp(NAMESPACE))
    with operator_in(kube, NAMESPACE, workdir) as operator:
        runner = RunnerProcess(kube, prometheus, NAMESPACE, workdir / "runner", "--containers")
        try:
            yield Stack(operator, runner, registry.host)
        finally:
            runner.stop()


def history(reader: ClusterReader) -> list[Body]:
    entries: list[Body] = reader.status(NAMESPACE, NAME).get("history") or []
    return entries


def rolled_back(reader: ClusterReader, revision: str) -> Body | None:
    return next(
        (e for e in history(reader) if e["revision"] == revision and e["event"] == "RolledBack"),
        None,
    )


def events(kube: KwokCluster, reason: str) -> list[str]:
    listed = json.loads(kubectl(kube, "get", "events", "-n", NAMESPACE, "-o", "json"))
    return [e["message"] for e in listed["items"] if e.get("reason") == reason]


def rolled_back_event(kube: KwokCluster, revision: str, why: str) -> bool:
    # Posted after the status write a test saw: callers wait for it.
    return any(revision in m and why in m for m in events(kube, "RolledBack"))


def roll_out(kube: KwokCluster, reader: ClusterReader, image: str) -> str:
    """Patch the image; returns the canary revision once the operator has created it."""
    before = reader.status(NAMESPACE, NAME).get("stableRevision")
    patch_model_deployment(kube, NAMESPACE, NAME, {"spec": {"image": image}})
    canary: str = wait_for(
        lambda: (r := reader.status(NAMESPACE, NAME).get("canaryRevision")) != before and r,
        timeout=60, what="a canary revision",
    )  # fmt: skip
    return canary


def test_broken_model_images_are_rolled_back_with_the_pods_reason(
    kube: KwokCluster, reader: ClusterReader, stack: Stack, images: dict[str, BuiltImage]
) -> None:
    v1 = images["churn-v1"].reference(stack.host)
    apply_object(
        kube,
        model_deployment(
            NAME, NAMESPACE, v1,
            replicas={"minWarm": 1, "max": 2},
            rollout={"canary": {"steps": [50]}, "stepInterval": "10m"},
        ),
    )  # fmt: skip
    # What counts is the v1 container passing its golden requests.
    wait_for(
        lambda: [e.ready for e in stack.runner.endpoints(NAME)] == [True],
        timeout=180, what="the v1 container Ready",
    )  # fmt: skip
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, what="v1 Ready")
    stable = reader.status(NAMESPACE, NAME)["stableRevision"]

    crashing = roll_out(kube, reader, images["crashloop"].reference(stack.host))
    entry = wait_for(lambda: rolled_back(reader, crashing), timeout=120, what="crash rollback")
    assert "pods cannot start" in entry["reason"]
    # The Deployment's FallbackToLogsOnError: the image's own last words, from its log.
    last_words = "last exit: Error (exit code 1): cannot load /model/model.joblib: no such file"
    assert f"CrashLoopBackOff: {last_words}" in entry["reason"]
    wait_for(lambda: rolled_back_event(kube, crashing, "CrashLoopBackOff"), timeout=30)
    pods = container_status(kube, NAMESPACE, NAME)
    assert all(s["restartCount"] == 0 and s["ready"] for s in pods)  # only the stable's left

    missing = f"{stack.host}/ml/churn@sha256:{'0' * 64}"
    unpullable = roll_out(kube, reader, missing)
    entry = wait_for(lambda: rolled_back(reader, unpullable), timeout=120, what="pull rollback")
    assert "ImagePullBackOff" in entry["reason"]
    assert missing in entry["reason"]
    wait_for(lambda: rolled_back_event(kube, unpullable, "ImagePullBackOff"), timeout=30)
    status = reader.status(NAMESPACE, NAME)
    assert status["stableRevision"] == stable
    assert reader.is_true(NAMESPACE, NAME, "Degraded")
    wait_for(
        lambda: [e.ready for e in stack.runner.endpoints(NAME)] == [True],
        timeout=60, what="only the stable container left, serving",
    )  # fmt: skip
