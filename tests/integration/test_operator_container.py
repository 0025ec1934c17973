"""The operator image, run by podman against the session cluster the way a pod runs it.

The chart is installed for its ServiceAccount and RBAC, and rendered with the local registry
(`image.registry`) and the build's digest (`image.digest`); the container runs the rendered
Deployment's image, command, args and env, under its restrictions (read-only root filesystem
with only /tmp writable, no capabilities, no privilege escalation, the image's own non-root
user), with the ServiceAccount token, the cluster's CA and the namespace where the kubelet
mounts them and KUBERNETES_SERVICE_HOST/PORT set. It gets no kubeconfig: it finds and
authenticates to the apiserver by in-cluster config, as in a cluster.

It reconciles a ModelDeployment to Ready, rolls a new image out through a 50% step to
promotion, and rolls a third one back on the abort command, with no request refused.
"""

import json
import os
import secrets
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from chart_release import (
    ChartRelease,
    denials,
    installed_release,
    rendered,
    token_kubeconfig,
    whoami,
)
from operator_harness import (
    WRITE_MARK,
    ClusterReader,
    annotate,
    apply_object,
    kubectl,
    lease_holder,
    model_deployment,
    patch_model_deployment,
    wait_for,
)

from modeldeploy import __version__
from modeldeploy.api import ANNOTATION_ABORT
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.images import BuiltImage
from modeldeploy.devenv.registry import RegistryServer
from modeldeploy.devenv.tools import free_port

pytestmark = pytest.mark.integration

RELEASE = "mdpod"  # cluster-scoped roles are named after it: unique among the test modules
SYSTEM_NS = "chart-pod-system"
NAMESPACE = "chart-pod-a"
NAME = "churn"
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
STEP = 50
# Each rollout waits at its step until the test moves on (a shorter stepInterval to
# promote, the abort command): no race between the test's reads and a short interval.
HELD = "1h"
Body = dict[str, Any]


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


# --- what the pod would get -----------------------------------------------------------------


@dataclass(frozen=True)
class Apiserver:
    host: str
    port: int
    ca: Path


def apiserver_of(kube: KwokCluster) -> Apiserver:
    """The apiserver and its CA as the session cluster's kubeconfig names them."""
    (cluster,) = yaml.safe_load(kube.kubeconfig.read_text())["clusters"]
    url = urlsplit(cluster["cluster"]["server"])
    assert (url.scheme, url.hostname) == ("https", "127.0.0.1"), url
    assert url.port, url
    ca = cluster["cluster"].get("certificate-authority")
    assert ca, f"kwokctl's kubeconfig used to name its CA file: {cluster}"
    return Apiserver(url.hostname, url.port, Path(ca))


def assert_serving_cert_names(server: Apiserver) -> None:
    """In-cluster config dials https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT and
    verifies the serving certificate against ca.crt, host name included. kwokctl's apiserver
    certificate has the IP SAN 127.0.0.1 (its own kubeconfig uses https://127.0.0.1:port), so
    KUBERNETES_SERVICE_HOST=127.0.0.1 verifies; this handshake shows it before the operator
    depends on it."""
    context = ssl.create_default_context(cafile=str(server.ca))
    with (
        socket.create_connection((server.host, server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server.host) as tls,
    ):
        assert tls.getpeercert(), "no verified certificate"


@dataclass(frozen=True)
class OperatorPod:
    """The operator's pod as the chart renders it: what the container runs."""

    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    user: int
    group: int

    @classmethod
    def rendered(cls, objects: list[Body], name: str) -> "OperatorPod":
        """The pod as the kubelet would run it under `name` in the release namespace (the
        downward API's metadata.name and metadata.namespace resolved)."""
        (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        fields = {"metadata.name": name, "metadata.namespace": SYSTEM_NS}

        def value(env: Body) -> str:
            if "value" in env:
                return str(env["value"])
            return fields[env["valueFrom"]["fieldRef"]["fieldPath"]]  # nothing else here

        return cls(
            image=container["image"],
            command=container["command"],
            args=container["args"],
            env={e["name"]: value(e) for e in container["env"]},
            user=pod["securityContext"]["runAsUser"],
            group=pod["securityContext"]["runAsGroup"],
        )


def service_account_files(directory: Path, token: str, ca: Path, pod: OperatorPod) -> Path:
    """token, ca.crt and namespace, as the kubelet projects them, readable by the pod's user
    only (the kubelet gives them to the pod's user and fsGroup)."""
    directory.mkdir()
    files = {"token": token, "ca.crt": ca.read_text(), "namespace": SYSTEM_NS}
    for name, content in files.items():
        path = directory / name
        path.write_text(content)
        path.chmod(0o400)
        os.chown(path, pod.user, pod.group)
    directory.chmod(0o500)
    os.chown(directory, pod.user, pod.group)
    return directory


def on_loopback(args: list[str]) -> list[str]:
    """The chart's liveness endpoint listens on every address of the pod's network; sharing
    the host's network, the container listens on loopback only."""
    wildcard, loopback = "--liveness=http://0.0.0.0:", "--liveness=http://127.0.0.1:"
    assert any(a.startswith(wildcard) for a in args), args
    return [loopback + a.removeprefix(wildcard) if a.startswith(wildcard) else a for a in args]


def podman_run(name: str, pod: OperatorPod, account: Path, server: Apiserver) -> list[str]:
    """`podman run` of the pod: its command (entrypoint) and args, its env plus what the
    kubelet adds for in-cluster config, the chart's securityContext, the image's user."""
    env = {
        **pod.env,
        "KUBERNETES_SERVICE_HOST": server.host,
        "KUBERNETES_SERVICE_PORT": str(server.port),
    }
    return [
        "podman", "run", "--detach", "--name", name, "--pull=never", "--network", "host",
        # readOnlyRootFilesystem with the chart's emptyDir /tmp, and nothing else writable.
        "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--volume", f"{account}:{SERVICE_ACCOUNT_MOUNT}:ro",
        *(f"--env={key}={value}" for key, value in env.items()),
        "--entrypoint", json.dumps(pod.command),
        pod.image, *on_loopback(pod.args),
    ]  # fmt: skip


# --- the container --------------------------------------------------------------------------


class OperatorContainer:
    """A detached container from `podman run` argv, live once Kopf's /healthz answers;
    removed on exit, also when the test fails."""

    def __init__(self, name: str, argv: list[str], liveness_url: str) -> None:
        self.name = name
        self.argv = argv
        self.liveness_url = liveness_url

    def running(self) -> bool:
        state = run("podman", "inspect", "--format", "{{.State.Running}}", self.name)
        return state.stdout.strip() == "true"

    def logs(self) -> str:
        # The operator logs to stderr; podman replays the two streams separately.
        result = run("podman", "logs", self.name)
        return result.stdout + result.stderr

    def inspect(self) -> Body:
        (info,) = json.loads(run("podman", "inspect", self.name).stdout)
        return dict(info)

    def user(self) -> dict[str, str]:
        """The operator process's user and group, inside and on the host."""
        top = run("podman", "top", self.name, "user", "group", "huser", "hgroup")
        assert top.returncode == 0, top.stderr
        header, process = top.stdout.splitlines()[:2]
        return dict(zip(header.split(), process.split(), strict=True))

    def wait_live(self) -> None:
        with httpx.Client(trust_env=False, timeout=1) as http:

            def live() -> bool:
                if not self.running():
                    raise RuntimeError(f"the operator container exited:\n{self.logs()}")
                try:
                    return http.get(self.liveness_url).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(live, timeout=120, interval=0.5, what="the operator container live")

    def remove(self) -> None:
        tail = "\n".join(self.logs().splitlines()[-40:])
        print(f"[container {self.name}] last log lines:\n{tail}")
        run("podman", "rm", "--force", "--time", "5", self.name)

    def __enter__(self) -> "OperatorContainer":
        try:
            started = run(*self.argv)
            assert started.returncode == 0, started.stderr
            self.wait_live()
        except BaseException:
            self.remove()  # __exit__ runs only after a successful __enter__
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@dataclass(frozen=True)
class Deployed:
    release: ChartRelease
    pod: OperatorPod
    reference: str  # the operator image as built and pushed, by digest
    server: Apiserver
    container: OperatorContainer


@pytest.fixture(scope="module")
def deployed(
    kube: KwokCluster,
    images: dict[str, BuiltImage],
    registry: RegistryServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployed]:
    server = apiserver_of(kube)
    assert_serving_cert_names(server)
    built = images["operator"]
    reference = built.reference(registry.host)
    pulled = run("podman", "pull", "--tls-verify=false", reference, timeout=300)
    assert pulled.returncode == 0, pulled.stderr
    health_port = free_port()
    flags = (
        "--set", f"image.registry={registry.host}", "--set", f"image.digest={built.digest}",
        "--set", "reconcileInterval=1", "--set", "metricsPort=0",
        "--set", f"healthPort={health_port}",
    )  # fmt: skip
    name = f"md-test-operator-{os.getpid()}-{secrets.token_hex(3)}"
    pod = OperatorPod.rendered(rendered(kube, RELEASE, SYSTEM_NS, NAMESPACE, *flags), name)
    assert pod.image == reference  # the chart names exactly the image that was pushed
    workdir = Path(tmp_path_factory.mktemp(NAMESPACE))
    with installed_release(kube, RELEASE, SYSTEM_NS, NAMESPACE, *flags) as release:
        token = release.token(kube)
        config = token_kubeconfig(kube, token, NAMESPACE, workdir / "token.kubeconfig")
        assert whoami(kube, config) == release.username  # only to check; never mounted
        account = service_account_files(workdir / "serviceaccount", token, server.ca, pod)
        argv = podman_run(name, pod, account, server)
        liveness = f"http://127.0.0.1:{health_port}/healthz"
        with OperatorContainer(name, argv, liveness) as container:
            yield Deployed(release, pod, reference, server, container)


# --- the scenario ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    ready: Body
    at_step: Body  # the second image at its step
    promoted: Body
    aborted_at_step: Body  # the third image at its step, before the abort
    rolled_back: Body


def rollout(step_interval: str) -> Body:
    return {"canary": {"steps": [STEP]}, "stepInterval": step_interval, "bakeTime": "1s"}


def held_at_step(status: Body) -> bool:
    at_step = (status.get("step"), status.get("canaryWeight")) == (0, STEP)
    return at_step and bool(status.get("canaryRevision"))


@pytest.fixture(scope="module")
def scenario(kube: KwokCluster, deployed: Deployed) -> Scenario:
    """create -> Ready; image 2 held at the step, then promoted through it; image 3 held at
    the step, then aborted."""
    reader = ClusterReader(kube)

    def status_when(holds: Callable[[Body], bool]) -> Callable[[], Body | None]:
        def check() -> Body | None:
            status = reader.status(NAMESPACE, NAME)
            return status if holds(status) else None

        return check

    def roll_out(image: str, step_interval: str) -> None:
        spec = {"image": image, "rollout": rollout(step_interval)}
        patch_model_deployment(kube, NAMESPACE, NAME, {"spec": spec})

    body = model_deployment(NAME, NAMESPACE, "registry.example/churn:1", rollout=rollout(HELD))
    apply_object(kube, body)
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, what="Ready")
    ready = reader.status(NAMESPACE, NAME)

    roll_out("registry.example/churn:2", HELD)
    second = wait_for(status_when(held_at_step), timeout=60, what=f"image 2 at {STEP}%")
    roll_out("registry.example/churn:2", "1s")  # the step has been held longer than that
    promoted_second = status_when(
        lambda s: s["phase"] == "Stable" and s["stableRevision"] == second["canaryRevision"]
    )
    promoted = wait_for(promoted_second, timeout=60, what="image 2 promoted")

    roll_out("registry.example/churn:3", HELD)
    third = wait_for(status_when(held_at_step), timeout=60, what=f"image 3 at {STEP}%")
    annotate(kube, NAMESPACE, NAME, ANNOTATION_ABORT, third["canaryRevision"])
    rolled_back = wait_for(
        status_when(lambda s: s["phase"] == "RolledBack"), timeout=30, what="RolledBack"
    )
    wait_for(
        lambda: not reader.by_track(NAMESPACE, NAME, "canary"), timeout=30,
        what="the aborted canary's Deployment removed",
    )  # fmt: skip
    return Scenario(ready, second, promoted, third, rolled_back)


def history(status: Body) -> list[tuple[str, str]]:
    return [(entry["event"], entry["revision"]) for entry in status["history"]]


# --- tests ----------------------------------------------------------------------------------


def test_chart_renders_the_pushed_image_and_runs_it(deployed: Deployed, kube: KwokCluster) -> None:
    assert deployed.pod.image == deployed.reference
    # The settings the container runs with come from the chart's own values.
    assert f"--namespace={NAMESPACE}" in deployed.pod.args
    assert deployed.pod.env["MODELDEPLOY_RECONCILE_INTERVAL"] == "1"
    assert deployed.pod.env["MODELDEPLOY_METRICS_PORT"] == "0"

    # The chart's leader election, with its Lease RBAC: the container (named as its pod)
    # holds the release's Lease.
    def holder() -> str:
        return lease_holder(kube, SYSTEM_NS, deployed.release.service_account)

    wait_for(lambda: holder() == deployed.container.name, timeout=30, what="Lease held")
    installed = json.loads(
        kubectl(kube, "get", "deployment", deployed.release.service_account, "-n", SYSTEM_NS,
                "-o", "json")
    )  # fmt: skip
    (installed_container,) = installed["spec"]["template"]["spec"]["containers"]
    assert installed_container["image"] == deployed.reference
    info = deployed.container.inspect()
    assert info["ImageName"] == deployed.reference


def test_the_registry_value_alone_pulls_from_the_local_registry(
    kube: KwokCluster, images: dict[str, BuiltImage], registry: RegistryServer
) -> None:
    """Only image.registry overridden: the tag is the chart's appVersion, which the image
    build pushes as the moving tag of the package version, so they must be one version."""
    flags = ("--set", f"image.registry={registry.host}")
    pod = OperatorPod.rendered(rendered(kube, RELEASE, SYSTEM_NS, NAMESPACE, *flags), "pod")
    assert pod.image == f"{registry.host}/{images['operator'].repository}:{__version__}"
    inspected = run("skopeo", "inspect", "--tls-verify=false", f"docker://{pod.image}")
    assert inspected.returncode == 0, inspected.stderr


def test_runs_as_the_non_root_user_of_the_image_and_chart(deployed: Deployed) -> None:
    info = deployed.container.inspect()
    assert info["Config"]["User"] == f"{deployed.pod.user}:{deployed.pod.group}"  # the image's
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    user = str(deployed.pod.user)
    group = str(deployed.pod.group)
    assert deployed.container.user() == {
        "USER": user,
        "GROUP": group,
        "HUSER": user,
        "HGROUP": group,
    }


def test_in_cluster_config_and_no_kubeconfig(deployed: Deployed) -> None:
    env = dict(item.split("=", 1) for item in deployed.container.inspect()["Config"]["Env"])
    assert "KUBECONFIG" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    server = f"https://127.0.0.1:{deployed.server.port}"
    started = f"API server {server} (in-cluster service account), due reconciles every 1.0s"
    assert started in deployed.container.logs()


def test_ready_then_promoted_through_the_step_then_aborted(scenario: Scenario) -> None:
    ready = scenario.ready
    first = ready["stableRevision"]
    assert (ready["phase"], ready["canaryWeight"]) == ("Stable", 0)
    assert history(ready) == [("Started", first)]

    second = scenario.at_step["canaryRevision"]
    assert scenario.at_step["phase"] == "Progressing"
    assert scenario.at_step["stableRevision"] == first
    assert second != first

    promoted = scenario.promoted
    assert (promoted["stableRevision"], promoted["canaryWeight"]) == (second, 0)
    assert not promoted.get("canaryRevision")
    assert history(promoted) == [("Started", first), ("Started", second), ("Promoted", second)]

    third = scenario.aborted_at_step["canaryRevision"]
    assert scenario.aborted_at_step["stableRevision"] == second
    rolled_back = scenario.rolled_back
    assert rolled_back["stableRevision"] == second
    assert rolled_back["failedRevision"] == third
    assert rolled_back["canaryWeight"] == 0
    assert not rolled_back.get("canaryRevision")
    assert history(rolled_back)[-2:] == [("Started", third), ("Aborted", third)]


def test_no_request_was_refused(deployed: Deployed, scenario: Scenario) -> None:
    log = deployed.container.logs()
    denied = denials(log)
    assert not denied, "\n".join(denied[:20])
    writes = [line for line in log.splitlines() if f" {WRITE_MARK}" in line]
    for call in ("PATCH /apis/apps/v1", "DELETE /apis/apps/v1", "PUT /apis/modeldeploy.io"):
        assert any(call in line for line in writes), f"no {call}: the scenario did not write"
