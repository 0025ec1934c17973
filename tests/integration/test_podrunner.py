"""The pod runner and the load generator on the real cluster and a real Prometheus.

A plain Deployment (no operator) whose pods carry the modeldeploy labels, env and the churn
example's v1 image: `modeldeploy dev pod-runner` runs one real `modeldeploy serve` per pod on
127.0.0.1, reflects its readiness onto the pod, publishes it to Prometheus with the pod's
labels; the load generator spreads bounded traffic uniformly; a crashed process is
restarted; scaling down stops processes and withdraws targets; an unknown image starts
nothing. In container mode the pods' own images run under podman, pulled from the local
registry by digest, and failures show on the pods as a kubelet shows them. Only 127.0.0.1
is ever dialled.
"""

import functools
import json
import os
import re
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import kubectl, wait_for
from podrunner_harness import (
    IMAGE_MAP,
    V1,
    WRONG_GOLDEN_IMAGE,
    RunnerProcess,
    container_status,
    pods,
    runner_containers,
    write_image_map,
    wrong_golden_model,
)

from modeldeploy import contract as c
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.endpoints import Endpoint, read_endpoints, read_published
from modeldeploy.devenv.imagemap import ImageMap, default_build_root
from modeldeploy.devenv.images import BuiltImage
from modeldeploy.devenv.loadgen import EndpointSource, LoadSpec, run_load
from modeldeploy.devenv.podrunner import ENDPOINTS_FILE
from modeldeploy.devenv.pods import NOT_READY_REASON, READY_REASON
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.registry import RegistryServer
from modeldeploy.devenv.traffic import Row, read_rows
from modeldeploy.profile_schema import FeatureProfile, Profile
from modeldeploy.resources.names import LABEL_NAME, LABEL_REVISION
from modeldeploy.serving.process import modeldeploy_command
from modeldeploy.serving.server import BROKEN_IMAGE_EXIT_CODE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REVISION = "v1rev"
BAD_SETTING = {"name": c.ENV_WARMUP_MAX_LATENCY_MS, "value": "soon"}
Body = dict[str, Any]


def deployment(
    name: str, md_name: str, image: str, replicas: int, env: list[Body], **container: Any
) -> Body:
    """`container`: more fields of the model container (e.g. terminationMessagePolicy)."""
    labels = {LABEL_NAME: md_name, LABEL_REVISION: REVISION}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "model",
                            "image": image,
                            "env": env,
                            "readinessProbe": {
                                "httpGet": {"path": f"/v2/models/{md_name}/ready", "port": 8080}
                            },
                            **container,
                        }
                    ]
                },
            },
        },
    }


MODEL_ENV: list[Body] = [
    {"name": c.ENV_MODEL_NAME, "value": "churn"},
    {"name": c.ENV_MODEL_VERSION, "value": "2026-11-20"},
    {"name": c.ENV_REVISION, "value": REVISION},
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    {"name": c.ENV_SHADOW_URL, "value": "http://churn-canary.ns.svc"},
]


@pytest.fixture
def namespace(kube: KwokCluster) -> Iterator[str]:
    name = f"podrunner-{uuid.uuid4().hex[:6]}"
    kubectl(kube, "create", "namespace", name)
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def runner(
    kube: KwokCluster, prometheus: PrometheusServer, namespace: str, tmp_path: Path
) -> Iterator[RunnerProcess]:
    process = RunnerProcess(kube, prometheus, namespace, tmp_path / "runner")
    try:
        yield process
    finally:
        process.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent has not reaped it yet).
    return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[-1][:4]


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def ready_condition(pod: Body) -> Body:
    return next(x for x in pod["status"]["conditions"] if x["type"] == "Ready")


def query(prometheus: PrometheusServer, promql: str) -> dict[str, float]:
    """pod label -> value of an instant query."""
    return {r["metric"].get("pod", ""): float(r["value"][1]) for r in prometheus.query(promql)}


def service(name: str, selector: dict[str, str]) -> Body:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {LABEL_NAME: "churn"}},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
    }


class ReadyHistory:
    """Every Ready status each pod of `md_name` had, in order, as a watch delivers them
    (consecutive repeats folded)."""

    def __init__(self, kube: KwokCluster, namespace: str, md_name: str) -> None:
        from kubernetes import client, config, watch

        api = client.CoreV1Api(config.new_client_from_config(str(kube.kubeconfig)))
        self._watch = watch.Watch()
        self._events = functools.partial(
            self._watch.stream, api.list_namespaced_pod, namespace,
            label_selector=f"{LABEL_NAME}={md_name}", timeout_seconds=240,
        )  # fmt: skip
        self.statuses: dict[str, list[str]] = {}
        self._stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for event in self._events():
                pod = event["object"]
                conditions = pod.status.conditions or ()
                ready = next((c.status for c in conditions if c.type == "Ready"), None)
                seen = self.statuses.setdefault(pod.metadata.name, [])
                if ready is not None and (not seen or seen[-1] != ready):
                    seen.append(ready)
        except Exception:
            # Stopped, the stream ends whenever the next event or the apiserver's end comes.
            if not self._stopped.is_set():
                raise

    def stop(self) -> dict[str, list[str]]:
        self._stopped.set()
        self._watch.stop()
        return {name: list(seen) for name, seen in self.statuses.items()}


def test_pods_are_served_scraped_loaded_restarted_and_stopped(
    kube: KwokCluster, prometheus: PrometheusServer, namespace: str, runner: RunnerProcess
) -> None:
    runner.wait_started()
    history = ReadyHistory(kube, namespace, "churn")
    kubectl(kube, "apply", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [
            deployment("churn-v1rev", "churn", V1, 3, MODEL_ENV),
            deployment("other-x", "other", "registry.example/unknown:1", 1, MODEL_ENV[:3]),
            service("churn", {LABEL_NAME: "churn"}),
            service("churn-lane-a", {LABEL_NAME: "churn", "lane": "a"}),
        ]}))  # fmt: skip
    served = served_and_ready(kube, namespace, runner)
    # The runner's kwok Stage starts its pods unready: Ready only once the server answers,
    # never the moment kwok starts the pod (a ReplicaSet would count that one).
    statuses = history.stop()
    assert len(statuses) == 3, statuses
    assert all(seen == ["False", "True"] for seen in statuses.values()), statuses
    unknown_image_starts_nothing(kube, namespace, runner)
    scraped_with_pod_labels(prometheus, namespace, runner, served)
    example = example_rows()
    load_is_uniform_and_counted(prometheus, namespace, runner, served, example)
    load_follows_the_service_selector(kube, namespace, runner, served[1], example)
    command_line_load_with_drift(prometheus, namespace, runner)
    crashed_process_restarts(kube, namespace, runner, served[0])
    kept = scale_down_stops_processes(kube, prometheus, namespace, runner)
    # SIGTERM: every process stops, the targets and endpoints are withdrawn.
    assert runner.stop() == 0, runner.log()
    wait_for(lambda: not pid_alive(kept.pid), timeout=10, what="the last process stopped")
    assert runner.targets() == []
    assert read_endpoints(runner.state / ENDPOINTS_FILE) == []


def served_and_ready(kube: KwokCluster, namespace: str, runner: RunnerProcess) -> list[Endpoint]:
    """Three real servers, Ready once warm (the runner owns the pods' Ready condition),
    started with the pod's env resolved (see `assert_pod_env`)."""
    served: list[Endpoint] = wait_for(
        lambda: (e := runner.endpoints()) and len(e) == 3 and all(x.ready for x in e) and e,
        timeout=120, what="3 ready local servers",
    )  # fmt: skip
    wait_for(
        lambda: all(
            ready_condition(p)["status"] == "True" and ready_condition(p).get("reason")
            == READY_REASON for p in pods(kube, namespace, "churn")
        ),
        timeout=30, what="pods Ready by the runner's readiness",
    )  # fmt: skip
    names = sorted(p["metadata"]["name"] for p in pods(kube, namespace, "churn"))
    assert sorted(e.pod for e in served) == names
    assert all(e.address.startswith("127.0.0.1:") for e in served)
    env = process_env(served[0].pid)
    assert_pod_env(env, {served[0].pod})
    return served


def assert_pod_env(env: dict[str, str], pods: set[str]) -> None:
    """fieldRef to the pod's name resolved; no pod IP or secret; the shadow URL (an
    in-cluster name) on the runner's local forwarder of that Service."""
    assert env[c.ENV_REVISION] == REVISION
    assert env["POD_NAME"] in pods
    assert not {"POD_IP", "API_KEY"} & set(env)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", env[c.ENV_SHADOW_URL]), env[c.ENV_SHADOW_URL]


def unknown_image_starts_nothing(kube: KwokCluster, namespace: str, runner: RunnerProcess) -> None:
    """No process, and the pod keeps kwok's status."""
    assert runner.endpoints("other") == []
    (other,) = pods(kube, namespace, "other")
    assert ready_condition(other)["status"] == "True"
    assert ready_condition(other).get("reason") != READY_REASON
    assert "no entry for image registry.example/unknown:1" in runner.log()


def scraped_with_pod_labels(
    prometheus: PrometheusServer, namespace: str, runner: RunnerProcess, served: list[Endpoint]
) -> None:
    info = f'{c.MODEL_INFO}{{job="{runner.job}", namespace="{namespace}", md_name="churn"}}'
    wait_for(lambda: len(query(prometheus, info)) == 3, timeout=30, what="3 scraped pods")
    assert set(query(prometheus, info)) == {e.pod for e in served}


Example = tuple[list[Row], list[FeatureProfile]]  # as run_load takes them


def example_rows() -> Example:
    """The v1 build's held-out rows and its profile's features (built when missing)."""
    image = ImageMap.load(IMAGE_MAP).prepare(default_build_root(), print)[V1]
    assert image.model_dir is not None
    assert image.data_dir is not None
    profile = Profile.model_validate_json((image.model_dir / "profile.json").read_bytes())
    return read_rows(image.data_dir / "holdout.csv", profile.features), profile.features


def load_is_uniform_and_counted(
    prometheus: PrometheusServer,
    namespace: str,
    runner: RunnerProcess,
    served: list[Endpoint],
    example: Example,
) -> None:
    """Bounded load from the example's held-out rows, spread uniformly over the Ready pods
    behind the Service; Prometheus counts exactly what the generator reports per pod."""
    source = EndpointSource(runner.state / ENDPOINTS_FILE, namespace, "churn")
    report = run_load(LoadSpec(rate=100, count=300, duration=30), *example, source)
    assert report.by_code == {"200": 300}, report.summary()
    assert set(report.by_revision) == {REVISION}
    per_pod = {key.split("/")[1]: counts["200"] for key, counts in report.by_pod.items()}
    assert set(per_pod) == {e.pod for e in served}
    assert all(60 <= n <= 140 for n in per_pod.values()), per_pod  # 100 ± 5 sd
    requests = (
        f'sum by (pod) ({c.REQUESTS_TOTAL}{{job="{runner.job}", code="200", md_name="churn"}})'
    )
    wait_for(lambda: query(prometheus, requests) == per_pod, timeout=30, what="scraped counts")


def load_follows_the_service_selector(
    kube: KwokCluster,
    namespace: str,
    runner: RunnerProcess,
    chosen: Endpoint,
    example: Example,
) -> None:
    """A Service picking one pod by an extra label gets all its traffic to that pod."""
    kubectl(kube, "label", "pod", "-n", namespace, chosen.pod, "lane=a")
    path = runner.state / ENDPOINTS_FILE
    wait_for(
        lambda: read_published(path).ready_behind(namespace, "churn-lane-a") == [chosen],
        timeout=20, what="the labelled pod behind churn-lane-a",
    )  # fmt: skip
    spec = LoadSpec(rate=100, count=60, duration=10)
    lane = run_load(spec, *example, EndpointSource(path, namespace, "churn-lane-a"))
    assert dict(lane.by_pod) == {f"{namespace}/{chosen.pod}": {"200": 60}}


def command_line_load_with_drift(
    prometheus: PrometheusServer, namespace: str, runner: RunnerProcess
) -> None:
    """`modeldeploy dev load` over every pod (via pods), with unseen categories and a share
    of malformed requests: the runtime counts both, Prometheus sees them."""
    data = ImageMap.load(IMAGE_MAP).launch(V1).data_dir
    assert data is not None
    result = subprocess.run(
        [
            *modeldeploy_command(), "dev", "load", "--name", "churn", "-n", namespace,
            "--data", str(data / "holdout.csv"), "--via", "pods",
            "--endpoints", str(runner.state / ENDPOINTS_FILE),
            "--rate", "100", "--count", "120", "--duration", "20", "--progress", "0",
            "--unseen", "contract=0.5", "--malformed", "0.1", "--seed", "3", "--json",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sent"] == 120
    assert set(report["by_code"]) == {"200", "400"}, report
    assert len(report["by_pod"]) == 3
    selector = f'job="{runner.job}", namespace="{namespace}"'
    bad_shape = f'sum({c.INVALID_REQUESTS_TOTAL}{{{selector}, reason="bad_shape"}})'
    unseen = f'sum({c.FEATURE_BIN_TOTAL}{{{selector}, feature="contract", bin="other"}})'
    wait_for(
        lambda: query(prometheus, bad_shape) == {"": report["by_code"]["400"]}
        and query(prometheus, unseen).get("", 0) > 0,
        timeout=30, what="malformed and unseen counted",
    )  # fmt: skip


def crashed_process_restarts(
    kube: KwokCluster, namespace: str, runner: RunnerProcess, victim: Endpoint
) -> None:
    """A process that dies is started again (fresh port); its pod is NotReady meanwhile."""
    os.kill(victim.pid, signal.SIGKILL)
    seen: set[tuple[str, str | None, bool]] = set()  # Ready, its reason, container ready

    def restarted() -> list[Endpoint]:
        (pod,) = [p for p in pods(kube, namespace, "churn") if p["metadata"]["name"] == victim.pod]
        ready = ready_condition(pod)
        container = pod["status"]["containerStatuses"][0]["ready"]
        seen.add((ready["status"], ready.get("reason"), container))
        return [e for e in runner.endpoints() if e.pod == victim.pod and e.pid != victim.pid
                and e.ready]  # fmt: skip

    wait_for(restarted, timeout=60, what="a restarted, ready process")
    assert ("False", NOT_READY_REASON, False) in seen, seen  # kubectl shows READY 0/1


def scale_down_stops_processes(
    kube: KwokCluster, prometheus: PrometheusServer, namespace: str, runner: RunnerProcess
) -> Endpoint:
    """The processes of deleted pods stop and their targets go; returns the one left."""
    before = {e.pod: e for e in runner.endpoints()}
    kubectl(kube, "scale", "-n", namespace, "deployment/churn-v1rev", "--replicas=1")
    (kept,) = wait_for(
        lambda: (e := runner.endpoints()) and len(e) == 1 and e, timeout=60,
        what="one local server left",
    )  # fmt: skip
    gone = [e.pid for pod, e in before.items() if pod != kept.pod]
    wait_for(lambda: not any(pid_alive(p) for p in gone), timeout=20, what="stopped processes")
    assert [g["labels"]["pod"] for g in runner.targets()] == [kept.pod]
    up = f'up{{job="{runner.job}"}}'
    wait_for(lambda: list(query(prometheus, up)) == [kept.pod], timeout=30, what="one target")
    published = read_published(runner.state / ENDPOINTS_FILE)
    assert published.ready_behind(namespace, "churn") == [kept]
    return kept


def test_a_new_runner_reaps_the_processes_of_a_killed_one(
    kube: KwokCluster, prometheus: PrometheusServer, namespace: str, tmp_path: Path
) -> None:
    kubectl(kube, "apply", "-n", namespace, "-f", "-",
            input=json.dumps(deployment("churn-v1rev", "churn", V1, 1, MODEL_ENV[:3])))  # fmt: skip
    first = RunnerProcess(kube, prometheus, namespace, tmp_path / "runner")
    try:
        (orphan,) = wait_for(
            lambda: (e := first.endpoints()) and all(x.ready for x in e) and e,
            timeout=60, what="a ready local server",
        )  # fmt: skip
        rival = RunnerProcess(kube, prometheus, namespace, tmp_path / "runner")
        assert rival.process.wait(timeout=60) == 2  # one runner per state directory
        assert f"another pod runner (pid {first.process.pid})" in rival.log()
        assert pid_alive(orphan.pid)  # the rival reaped nothing
        assert [e.pid for e in first.endpoints()] == [orphan.pid]  # nor withdrew anything
        first.process.kill()  # no cleanup: its child lives on, in its own session
        first.process.wait(timeout=10)
        assert pid_alive(orphan.pid)
        second = RunnerProcess(kube, prometheus, namespace, tmp_path / "runner")
        try:
            wait_for(lambda: not pid_alive(orphan.pid), timeout=20, what="the orphan reaped")
            wait_for(
                lambda: [e for e in second.endpoints() if e.ready and e.pid != orphan.pid],
                timeout=60, what="a new ready server",
            )  # fmt: skip
            assert "reaped 1 orphaned process(es) of a previous runner" in second.log()
        finally:
            assert second.stop() == 0
    finally:
        first.stop()


def crash_looping(kube: KwokCluster, namespace: str, md_name: str) -> Body | None:
    """The container status of the pod of `md_name`, once it is in CrashLoopBackOff after
    two restarts."""
    (status,) = container_status(kube, namespace, md_name)
    waiting = status["state"].get("waiting") or {}
    looping = waiting.get("reason") == "CrashLoopBackOff" and status["restartCount"] >= 2
    return status if looping else None


def test_a_server_that_exits_leaves_its_termination_message_as_a_kubelet_would(
    kube: KwokCluster, prometheus: PrometheusServer, namespace: str, tmp_path: Path
) -> None:
    """Process mode: a model whose golden request fails exits and says why in the file the
    runner hands it (terminationMessagePolicy File); a crash that says nothing there leaves
    its log's end, with FallbackToLogsOnError."""
    crash = "registry.example/ml/crash:1"
    image_map = write_image_map(tmp_path / "images.yaml", {
        WRONG_GOLDEN_IMAGE: {"modelDir": str(wrong_golden_model(tmp_path / "wrong-golden"))},
        crash: {"command": ["python3", "-c", "import sys; sys.exit('cannot load weights.bin')"]},
    })  # fmt: skip
    runner = RunnerProcess(
        kube, prometheus, namespace, tmp_path / "runner", "--image-map", str(image_map)
    )
    try:
        kubectl(kube, "apply", "-n", namespace, "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": [
                deployment("wrong-v1rev", "wrong", WRONG_GOLDEN_IMAGE, 1, MODEL_ENV[:3]),
                deployment("crash-v1rev", "crash", crash, 1, MODEL_ENV[:3],
                           terminationMessagePolicy="FallbackToLogsOnError"),
            ]}))  # fmt: skip
        wrong = wait_for(lambda: crash_looping(kube, namespace, "wrong"), timeout=120,
                         what="the wrong model in CrashLoopBackOff")  # fmt: skip
        terminated = wrong["lastState"]["terminated"]
        assert (terminated["reason"], terminated["exitCode"]) == ("Error", BROKEN_IMAGE_EXIT_CODE)
        assert terminated["message"].startswith("golden request failed: row-")
        assert "output 'label'[0] is " in terminated["message"]
        crashed = wait_for(lambda: crash_looping(kube, namespace, "crash"), timeout=60,
                           what="the crashing command in CrashLoopBackOff")  # fmt: skip
        assert crashed["lastState"]["terminated"]["exitCode"] == 1
        assert crashed["lastState"]["terminated"]["message"] == "cannot load weights.bin\n"
    finally:
        assert runner.stop() == 0, runner.log()


def test_container_mode_runs_the_pods_images_and_reports_failures_like_a_kubelet(
    *,
    kube: KwokCluster,
    prometheus: PrometheusServer,
    namespace: str,
    tmp_path: Path,
    images: dict[str, BuiltImage],
    registry: RegistryServer,
) -> None:
    """A pod of the churn image (by digest) is served by its own container and Ready after
    its golden requests; a crashing image goes into CrashLoopBackOff with restart counts and
    its exit, its log's end as the message (FallbackToLogsOnError); the churn image told a
    bad setting writes why to the termination log mounted where the pod says; an image the
    registry does not have shows ImagePullBackOff."""
    healthy = images["churn-v1"].reference(registry.host)
    crashing = images["crashloop"].reference(registry.host)
    missing = f"{registry.host}/ml/churn@sha256:{'0' * 64}"
    state = tmp_path / "runner"
    runner = RunnerProcess(kube, prometheus, namespace, state, "--containers")
    try:
        kubectl(kube, "apply", "-n", namespace, "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": [
                deployment("churn-v1rev", "churn", healthy, 2, MODEL_ENV),
                deployment("crash-v1rev", "crash", crashing, 1, MODEL_ENV[:3],
                           terminationMessagePolicy="FallbackToLogsOnError"),
                deployment("unset-v1rev", "unset", healthy, 1, [*MODEL_ENV[:3], BAD_SETTING]),
                deployment("gone-v1rev", "gone", missing, 1, MODEL_ENV[:3]),
                service("churn", {LABEL_NAME: "churn"}),
            ]}))  # fmt: skip
        served: list[Endpoint] = wait_for(
            lambda: (e := runner.endpoints()) and len(e) == 2 and all(x.ready for x in e) and e,
            timeout=180, what="2 ready model containers",
        )  # fmt: skip
        wait_for(
            lambda: all(s["ready"] and "running" in s["state"] and s["restartCount"] == 0
                        for s in container_status(kube, namespace, "churn")),
            timeout=30, what="churn containers running and ready on the pods",
        )  # fmt: skip
        # The container got the pod's env.
        (inspected,) = json.loads(subprocess.run(
            ["podman", "inspect", runner_containers(state)[0]["Id"]],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout)  # fmt: skip
        env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
        assert_pod_env(env, {e.pod for e in served})
        assert inspected["Config"]["User"] == "65532:65532"
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        source = EndpointSource(state / ENDPOINTS_FILE, namespace, "churn")
        report = run_load(LoadSpec(rate=50, count=40, duration=20), *example_rows(), source)
        assert report.by_code == {"200": 40}, report.summary()

        status = wait_for(lambda: crash_looping(kube, namespace, "crash"), timeout=120,
                          what="CrashLoopBackOff with restarts")  # fmt: skip
        assert status["lastState"]["terminated"]["exitCode"] == 1
        assert status["lastState"]["terminated"]["message"] == (
            "cannot load /model/model.joblib: no such file\n"
        )
        assert not status["ready"]
        status = wait_for(lambda: crash_looping(kube, namespace, "unset"), timeout=120,
                          what="the misconfigured churn container in CrashLoopBackOff")  # fmt: skip
        assert status["lastState"]["terminated"]["exitCode"] == 2
        assert status["lastState"]["terminated"]["message"] == (
            f"cannot serve /model: {c.ENV_WARMUP_MAX_LATENCY_MS}='soon' is not a positive number"
        )

        def backing_off() -> Body | None:
            (status,) = container_status(kube, namespace, "gone")
            waiting = status["state"].get("waiting") or {}
            return waiting if waiting.get("reason") == "ImagePullBackOff" else None

        waiting = wait_for(backing_off, timeout=120, what="ImagePullBackOff")
        assert missing in waiting["message"]
        assert runner.endpoints("gone") == []
        assert f"pulling {missing} for {namespace}/" in runner.log()
    finally:
        assert runner.stop() == 0, runner.log()
    assert runner_containers(state) == []  # every container removed with the runner
