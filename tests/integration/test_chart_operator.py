"""The real operator, authenticated as the chart's ServiceAccount (a token from the
TokenRequest API, not impersonation), through create -> rollout -> promotion -> kill switch
-> paused rollout -> abort, in a namespace that enforces the restricted Pod Security level.

Shows that the namespaced install's RBAC allows every call the operator makes (no 403 in
its log, every step done), that the pods it creates are admitted as restricted, and that
the Argo CD health check gives the expected answer on every status the operator wrote.
"""

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    annotate,
    apply_object,
    model_deployment,
    patch_model_deployment,
    printed,
    wait_for,
)

from modeldeploy.api import ANNOTATION_ABORT
from modeldeploy.devenv.cluster import KwokCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "gitops" / "argocd" / "health.lua"
RELEASE = "mdo"
SYSTEM_NS = "chart-op-system"
NAMESPACE = "chart-op-a"
NAME = "churn"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
# What a ServiceAccount-token client must never see in the operator's log.
DENIALS = ("403", "Forbidden", "forbidden", "Not enough permissions")
HEALTH_BY_PHASE = {
    "Pending": "Progressing",
    "Progressing": "Progressing",
    "Promoting": "Progressing",
    "Stable": "Healthy",
    "Paused": "Suspended",
    "Killed": "Suspended",
    "RolledBack": "Degraded",
}
Body = dict[str, Any]


def kubectl(kube: KwokCluster, *args: str, input: str | None = None) -> str:
    result = kube.kubectl(*args, input=input, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def token_kubeconfig(kube: KwokCluster, release: str, namespace: str, path: Path) -> Path:
    """The test cluster's kubeconfig with the release's ServiceAccount token as its only
    user."""
    token = kubectl(
        kube, "create", "token", f"{release}-modeldeploy", "-n", SYSTEM_NS, "--duration=1h"
    ).strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    context = config["contexts"][0]["context"]
    context["user"] = "chart-service-account"
    config["contexts"] = [{"name": "sa", "context": {**context, "namespace": namespace}}]
    config["current-context"] = "sa"
    config["users"] = [{"name": "chart-service-account", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class StatusRecorder:
    """Every distinct status the operator writes, sampled while the scenario runs."""

    reader: ClusterReader
    seen: list[Body] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        body = self.reader.model_deployment(NAMESPACE, NAME)
        if not self.seen or self.seen[-1].get("status") != body.get("status"):
            self.seen.append(body)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.sample()
            except (AssertionError, OSError):
                continue  # not created yet, or a transient read error

    def __enter__(self) -> "StatusRecorder":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def argocd_health(obj: Body) -> str:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    return str(lua.execute(HEALTH_LUA.read_text())["status"])


@contextmanager
def operator_as_service_account(
    kube: KwokCluster, release: str, namespace: str, workdir: Path, *flags: str
) -> Iterator[OperatorProcess]:
    """Install the chart as `release` in SYSTEM_NS watching `namespace` (both enforcing the
    restricted level), then run the operator with the release's ServiceAccount token."""
    for name in (SYSTEM_NS, namespace):
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": RESTRICTED},
        }
        kubectl(kube, "apply", "-f", "-", input=json.dumps(body))
    helm = [str(kube.tools.helm), "--kubeconfig", str(kube.kubeconfig)]
    installed = subprocess.run(
        [*helm, "install", release, "charts/modeldeploy", "-n", SYSTEM_NS, "--set",
         f"watchNamespaces={{{namespace}}}", *flags, "--wait", "--timeout", "2m"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    config = token_kubeconfig(kube, release, namespace, workdir / f"{release}.kubeconfig")
    whoami = kubectl(kube, "--kubeconfig", str(config), "auth", "whoami", "-o", "json")
    user = f"system:serviceaccount:{SYSTEM_NS}:{release}-modeldeploy"
    assert json.loads(whoami)["status"]["userInfo"]["username"] == user
    process = OperatorProcess(kube, namespace, workdir, env={"KUBECONFIG": str(config)})
    try:
        with process:
            yield process
    finally:
        subprocess.run(
            [*helm, "uninstall", release, "-n", SYSTEM_NS, "--timeout", "60s"],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    workdir = Path(tmp_path_factory.mktemp(NAMESPACE))
    with operator_as_service_account(kube, RELEASE, NAMESPACE, workdir) as process:
        yield process


def denials(operator: OperatorProcess) -> list[str]:
    return [line for line in operator.log().splitlines() if any(w in line for w in DENIALS)]


def test_scenario_as_the_service_account(kube: KwokCluster, operator: OperatorProcess) -> None:
    reader = ClusterReader(kube)

    def status() -> Body:
        return reader.status(NAMESPACE, NAME)

    def image(tag: str, **rollout: Any) -> None:
        spec: Body = {"image": f"registry.example/churn:{tag}"}
        if rollout:
            spec["rollout"] = rollout
        patch_model_deployment(kube, NAMESPACE, NAME, {"spec": spec})

    with StatusRecorder(reader) as recorder:
        apply_object(kube, model_deployment(NAME, NAMESPACE, "registry.example/churn:1"))
        wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, what="Ready")
        first = status()["stableRevision"]

        image("2")
        wait_for(lambda: status().get("canaryRevision"), timeout=30, what="canary")
        wait_for(
            lambda: status()["phase"] == "Stable" and status()["stableRevision"] != first,
            timeout=90, what="promotion",
        )  # fmt: skip

        patch_model_deployment(kube, NAMESPACE, NAME, {"spec": {"killSwitch": {"engaged": True}}})
        wait_for(lambda: status()["phase"] == "Killed", timeout=30, what="Killed")
        patch_model_deployment(kube, NAMESPACE, NAME, {"spec": {"killSwitch": {"engaged": False}}})
        wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, what="released")

        image("3", paused=True)
        wait_for(lambda: status()["phase"] == "Paused", timeout=30, what="Paused")
        patch_model_deployment(kube, NAMESPACE, NAME, {"spec": {"rollout": {"paused": False}}})
        canary = wait_for(lambda: status().get("canaryRevision"), timeout=30, what="canary 3")
        annotate(kube, NAMESPACE, NAME, ANNOTATION_ABORT, canary)
        wait_for(lambda: status()["phase"] == "RolledBack", timeout=30, what="RolledBack")
        recorder.sample()

    denied = denials(operator)
    assert not denied, "\n".join(denied[:20])
    writes = operator.writes()
    for call in ("PATCH /apis/apps/v1", "PUT /apis/modeldeploy.io", "POST /api/v1/namespaces"):
        assert any(call in line for line in writes), f"no {call}: the scenario did not write"
    assert any("DELETE /apis/apps/v1" in line for line in writes)
    # Model pods were created in a namespace enforcing the restricted level.
    pods = kube.get_json("pods", "-n", NAMESPACE)["items"]
    assert pods, "no model pod was admitted"

    sequence = [body["status"]["phase"] for body in recorder.seen if body.get("status")]
    print(f"[statuses] {len(recorder.seen)} distinct, phases in order: {sequence}")
    phases = set(sequence)
    assert {"Stable", "Progressing", "Killed", "Paused", "RolledBack"} <= phases, phases
    wrong = []
    for body in recorder.seen:
        state = body.get("status") or {}
        observed = state.get("observedGeneration") == body["metadata"]["generation"]
        degraded = any(
            c["type"] == "Degraded" and c["status"] == "True" for c in state.get("conditions", [])
        )
        expected = (
            "Progressing"
            if not state or not observed
            else "Suspended"
            if state["phase"] == "Killed"
            else "Degraded"
            if degraded
            else HEALTH_BY_PHASE[state["phase"]]
        )
        got = argocd_health(body)
        if got != expected:
            wrong.append(f"{state.get('phase')}: {got}, expected {expected}: {state}")
    assert not wrong, "\n".join(wrong)


def test_without_kopf_observers_only_kopf_is_refused(
    kube: KwokCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """rbac.kopfObservers=false: no cluster-scoped access at all. Only Kopf's observers are
    refused (listing Namespaces and CRDs); Kopf retries them with back-off (about a minute,
    logged as errors) before it falls back, then the operator works all the same."""
    namespace = "chart-op-strict"
    workdir = Path(tmp_path_factory.mktemp(namespace))
    flags = ("--set", "rbac.kopfObservers=false")
    with operator_as_service_account(kube, "mds", namespace, workdir, *flags) as process:
        start = time.monotonic()
        apply_object(kube, model_deployment(NAME, namespace, "registry.example/churn:1"))
        reader = ClusterReader(kube)
        wait_for(lambda: reader.is_true(namespace, NAME, "Ready"), timeout=120, what="Ready")
        printed("created -> Ready without Kopf's observers", time.monotonic() - start)
        denied = denials(process)
    observers = ("/api/v1/namespaces ", "customresourcedefinitions", "Not enough permissions")
    assert denied, "Kopf was not refused anything: are the observers still granted?"
    for line in denied:
        assert any(text in line for text in observers), line
