"""Canary pods that cannot start, on a real control plane: the test writes the canary pods'
status as a kubelet would (kwok runs no containers; once a pod is Running it leaves its
status alone, as the pod runner's Ready conditions show) or lets the real scheduler find no
node, and the operator reads it from the pods within a reconcile or two: an unpullable image
or a crash loop (an error exit or an OOM kill) at the restart limit rolls the canary back with
the pod, reason and message in status, history and the RolledBack Event; an unschedulable pod
is reported, not rolled back. A real model whose golden request fails, run by the pod runner,
exits with that reason as its termination message, which the operator reports and rolls back
with."""

import json
from collections.abc import Iterator
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
from podrunner_harness import WRONG_GOLDEN_IMAGE, write_image_map, wrong_golden_model

from modeldeploy.api import GROUP, MAX_POD_MESSAGE, PLURAL
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.imagemap import ImageMap
from modeldeploy.devenv.podrunner import PodRunner, RunnerConfig
from modeldeploy.resources.deployment import CONTAINER_NAME
from modeldeploy.resources.names import LABEL_REVISION
from modeldeploy.serving.server import BROKEN_IMAGE_EXIT_CODE

pytestmark = pytest.mark.integration

NAMESPACE = "op-podfailures"
PULL_MESSAGE = 'Back-off pulling image "registry.example/churn:2": not found'
Body = dict[str, Any]


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    with operator_in(kube, NAMESPACE, tmp_path_factory.mktemp(NAMESPACE)) as op:
        yield op


@pytest.fixture
def churn(
    request: pytest.FixtureRequest,
    kube: KwokCluster,
    reader: ClusterReader,
    operator: OperatorProcess,
) -> Iterator[str]:
    """A Ready ModelDeployment of its own per test (and parameter); its canary holds at the
    first step."""
    test = request.node.originalname.removeprefix("test_")[:20]
    name = f"churn-{test.replace('_', '-').rstrip('-')}"
    if callspec := getattr(request.node, "callspec", None):
        name += f"-{callspec.id}"
    rollout = {"canary": {"steps": [25, 50]}, "stepInterval": "10m", "bakeTime": "5s"}
    apply_object(
        kube, model_deployment(name, NAMESPACE, "registry.example/churn:1", rollout=rollout)
    )
    wait_for(lambda: reader.is_true(NAMESPACE, name, "Ready"), timeout=60, what=f"{name} Ready")
    yield name
    kubectl(kube, "delete", f"{PLURAL}.{GROUP}", name, "-n", NAMESPACE, "--wait=false")


def status(reader: ClusterReader, name: str) -> Body:
    return reader.status(NAMESPACE, name)


def canary_pods(reader: ClusterReader, name: str) -> list[str]:
    """Names of the canary's pods, once the operator made a canary and it has pods."""
    revision = status(reader, name).get("canaryRevision")
    if not revision:
        return []
    pods = reader.items(f"/api/v1/namespaces/{NAMESPACE}/pods", name)
    return sorted(
        p["metadata"]["name"]
        for p in pods
        if p["metadata"]["labels"].get(LABEL_REVISION) == revision
    )


def roll_out(
    kube: KwokCluster,
    reader: ClusterReader,
    name: str,
    image: str = "registry.example/churn:2",
    **spec: Any,
) -> tuple[str, str]:
    """Start a rollout of `image` (plus `spec`); (canary revision, its first pod)."""
    patch_model_deployment(kube, NAMESPACE, name, {"spec": {"image": image, **spec}})
    pods = wait_for(lambda: canary_pods(reader, name), timeout=30, what=f"{name} canary pods")
    return str(status(reader, name)["canaryRevision"]), pods[0]


def kubelet_reports(kube: KwokCluster, pod: str, container: Body) -> None:
    """PATCH the pod's status subresource as the kubelet would for a container that does not
    start: its state (the running state removed), not ready, the pod not Ready."""
    not_ready = {
        "status": "False",
        "reason": "ContainersNotReady",
        "message": f"containers with unready status: [{CONTAINER_NAME}]",
    }
    patch = {
        "status": {
            "conditions": [
                {"type": "Ready", **not_ready},
                {"type": "ContainersReady", **not_ready},
            ],
            "containerStatuses": [
                {"name": CONTAINER_NAME, "ready": False, "started": False, **container}
            ],
        }
    }
    kubectl(
        kube, "patch", "pod", pod, "-n", NAMESPACE, "--subresource=status", "--type=strategic",
        "-p", json.dumps(patch),
    )  # fmt: skip


def events(kube: KwokCluster, name: str, reason: str) -> list[Body]:
    items: list[Body] = kube.get_json("events", "-n", NAMESPACE)["items"]
    return [e for e in items if e["involvedObject"]["name"] == name and e["reason"] == reason]


def problems(reader: ClusterReader, name: str) -> list[Body]:
    listed: list[Body] = status(reader, name).get("podProblems") or []
    return listed


def assert_rolled_back(
    kube: KwokCluster, reader: ClusterReader, name: str, revision: str, why: str
) -> None:
    """Rolled back with `why` in history, the Degraded condition and the RolledBack Event."""
    wait_for(lambda: status(reader, name).get("phase") == "RolledBack", timeout=30, what="rollback")
    current = status(reader, name)
    assert current["failedRevision"] == revision
    assert "canaryRevision" not in current
    last = current["history"][-1]
    assert (last["revision"], last["event"]) == (revision, "RolledBack")
    assert last["reason"].startswith(why), last["reason"]
    degraded = reader.condition(NAMESPACE, name, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "PodsFailing")
    assert why in degraded["message"]
    assert reader.condition(NAMESPACE, name, "Stalled")["status"] == "True"
    rolled_back = wait_for(lambda: events(kube, name, "RolledBack"), timeout=15, what="Event")
    assert why in rolled_back[0]["message"]
    assert rolled_back[0]["type"] == "Warning"
    wait_for(
        lambda: f"{name}-{revision}" not in reader.deployments(NAMESPACE, name),
        timeout=30,
        what="canary Deployment removed",
    )


def test_image_pull_backoff_rolls_back_at_once(
    kube: KwokCluster, reader: ClusterReader, churn: str
) -> None:
    revision, pod = roll_out(kube, reader, churn)
    state = {"running": None, "waiting": {"reason": "ImagePullBackOff", "message": PULL_MESSAGE}}
    kubelet_reports(kube, pod, {"state": state})
    assert_rolled_back(
        kube, reader, churn, revision, f"pods cannot start: {pod}: ImagePullBackOff: {PULL_MESSAGE}"
    )


@pytest.mark.parametrize(
    ("terminated", "ended"),
    [
        ({"reason": "Error", "exitCode": 1}, "Error (exit code 1)"),
        # The kernel killed it at its memory limit; restarted, it backs off like any crash.
        ({"reason": "OOMKilled", "exitCode": 137}, "OOMKilled (exit code 137)"),
    ],
    ids=["error", "oom"],
)
def test_crash_loop_is_reported_then_rolled_back_at_three_restarts(
    kube: KwokCluster, reader: ClusterReader, churn: str, terminated: Body, ended: str
) -> None:
    revision, pod = roll_out(kube, reader, churn)
    last = {"terminated": terminated}

    def crash_loop(restarts: int) -> Body:
        message = (
            f"back-off {10 * 2 ** (restarts - 1)}s restarting failed container={CONTAINER_NAME}"
        )
        waiting = {"reason": "CrashLoopBackOff", "message": message}
        return {
            "state": {"running": None, "waiting": waiting},
            "lastState": last,
            "restartCount": restarts,
        }

    kubelet_reports(kube, pod, crash_loop(1))
    reported = wait_for(lambda: problems(reader, churn), timeout=30, what="pod problem in status")
    assert [(p["pod"], p["reason"], p["restarts"]) for p in reported] == [
        (pod, "CrashLoopBackOff", 1)
    ]
    assert reported[0]["message"] == (
        f"last exit: {ended}; {crash_loop(1)['state']['waiting']['message']}"
    )
    assert status(reader, churn)["canaryRevision"] == revision  # not certain yet
    # kwok leaves the status of a Running pod as written (its pod-ready stage is done).
    written = reader.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}")
    container = written["status"]["containerStatuses"][0]
    assert container["state"] == {"waiting": crash_loop(1)["state"]["waiting"]}
    assert container["restartCount"] == 1
    (event,) = wait_for(lambda: events(kube, churn, "PodProblem"), timeout=15, what="PodProblem")
    assert event["type"] == "Warning"
    assert f"canary {revision}: {pod}: CrashLoopBackOff" in event["message"]
    kubelet_reports(kube, pod, crash_loop(3))
    why = f"pods cannot start: {pod}: CrashLoopBackOff: last exit: {ended}"
    assert_rolled_back(kube, reader, churn, revision, why)
    assert "(3 restarts)" in status(reader, churn)["history"][-1]["reason"]
    assert len(events(kube, churn, "PodProblem")) == 1  # reported once, not per reconcile


def test_unschedulable_canary_is_reported_not_rolled_back(
    kube: KwokCluster, reader: ClusterReader, churn: str, operator: OperatorProcess
) -> None:
    """The real scheduler finds no node for the canary's nodeSelector and says so."""
    template = {"nodeSelector": {"modeldeploy.io/test-pool": "nowhere"}}
    revision, pod = roll_out(kube, reader, churn, template=template)
    reported = wait_for(lambda: problems(reader, churn), timeout=30, what="pod problem in status")
    assert {(p["revision"], p["reason"]) for p in reported} == {(revision, "Unschedulable")}
    assert "node" in reported[0]["message"]  # the scheduler's words, e.g. "0/2 nodes are ..."
    progressing = reader.condition(NAMESPACE, churn, "Progressing")
    assert progressing["status"] == "True"
    assert f"{pod}: Unschedulable" in progressing["message"]
    (event,) = wait_for(lambda: events(kube, churn, "PodProblem"), timeout=15, what="PodProblem")
    assert "Unschedulable" in event["message"]
    # Several reconciles later (the liveness counters lag by up to 10 s; on a loaded machine
    # the passes come slower): still a canary, still reported once.
    since = int(operator.stats()["reconciles"])
    wait_for(lambda: int(operator.stats()["reconciles"]) >= since + 5, timeout=180, interval=1)
    current = status(reader, churn)
    assert current["phase"] == "Progressing"
    assert current["canaryRevision"] == revision
    assert "failedRevision" not in current
    assert len(events(kube, churn, "PodProblem")) == 1
    assert events(kube, churn, "RolledBack") == []


@pytest.fixture
def golden_failing_runner(kube: KwokCluster, tmp_path: Path) -> Iterator[PodRunner]:
    """The pod runner (process mode) for this namespace, serving only the image of a model
    whose golden request fails: the stable's image is not in its map, so kwok's Ready stands."""
    model_dir = wrong_golden_model(tmp_path / "wrong-golden")
    image_map = write_image_map(
        tmp_path / "images.yaml", {WRONG_GOLDEN_IMAGE: {"modelDir": str(model_dir)}}
    )
    config = RunnerConfig(ImageMap.load(image_map), tmp_path / "runner", namespace=NAMESPACE)
    with PodRunner(config, str(kube.kubeconfig), say=print) as runner:
        yield runner


def test_a_model_failing_its_golden_request_is_rolled_back_with_its_own_reason(
    kube: KwokCluster, reader: ClusterReader, churn: str, golden_failing_runner: PodRunner
) -> None:
    """The runtime exits with the failed golden request as its termination message
    (FallbackToLogsOnError), the runner reports it as a kubelet would, and the operator
    carries it into status.podProblems, the PodProblem Event and the rollback's reason."""
    revision, pod = roll_out(kube, reader, churn, WRONG_GOLDEN_IMAGE)
    exited = f"last exit: Error (exit code {BROKEN_IMAGE_EXIT_CODE}): golden request failed: row-"
    reported = wait_for(
        lambda: [p for p in problems(reader, churn) if p["reason"] == "CrashLoopBackOff"],
        timeout=60, what="the crash loop in status.podProblems",
    )  # fmt: skip
    assert reported[0]["pod"] == pod
    assert reported[0]["message"].startswith(exited)
    assert "output 'label'[0] is " in reported[0]["message"]
    assert len(reported[0]["message"]) <= MAX_POD_MESSAGE
    why = f"pods cannot start: {pod}: CrashLoopBackOff: {exited}"
    assert_rolled_back(kube, reader, churn, revision, why)
    assert any(
        f"{pod}: CrashLoopBackOff: {exited}" in e["message"]
        for e in events(kube, churn, "PodProblem")
    )
