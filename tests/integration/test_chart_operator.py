"""The real operator, authenticated as the chart's ServiceAccount (a token from the
TokenRequest API, not impersonation), through create -> rollout -> promotion -> kill switch
-> paused rollout -> abort, plus a rollout whose analysis reads Prometheus credentials from a
Secret, in a namespace that enforces the restricted Pod Security level.

Shows that the namespaced install's RBAC allows every call the operator makes (no 403 in
its log, every step done), that the pods it creates are admitted as restricted, and that
the Argo CD health check gives the expected answer on every status the operator wrote.
"""

import importlib.util
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_release import denials, installed_release, token_kubeconfig, whoami
from lupa import LuaRuntime
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    annotate,
    apply_object,
    kubectl,
    model_deployment,
    patch_model_deployment,
    printed,
    wait_for,
)

from modeldeploy.analysis.endpoints import SECRET_ENDPOINT_LABEL
from modeldeploy.api import ANNOTATION_ABORT, GROUP, PLURAL, VERSION
from modeldeploy.devenv.cluster import KwokCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "gitops" / "argocd" / "health.lua"
RELEASE = "mdo"
SYSTEM_NS = "chart-op-system"
NAMESPACE = "chart-op-a"
NAME = "churn"
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
    with installed_release(kube, release, SYSTEM_NS, namespace, *flags) as chart:
        path = workdir / f"{release}.kubeconfig"
        config = token_kubeconfig(kube, chart.token(kube), namespace, path)
        assert whoami(kube, config) == chart.username
        with OperatorProcess(
            kube, namespace, workdir, env={"KUBECONFIG": str(config)}, extra_args=OPERATOR_ARGS
        ) as process:
            yield process


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    workdir = Path(tmp_path_factory.mktemp(NAMESPACE))
    with operator_as_service_account(kube, RELEASE, NAMESPACE, workdir) as process:
        yield process


@dataclass
class Scenario:
    operator: OperatorProcess
    statuses: list[Body]
    """Every distinct ModelDeployment (with status) seen while the scenario ran."""


@pytest.fixture(scope="module")
def scenario(kube: KwokCluster, operator: OperatorProcess) -> Scenario:
    """create -> Ready -> new image rolled out and promoted -> kill switch on and off ->
    paused rollout -> unpaused -> aborted (rolled back)."""
    reader = ClusterReader(kube)

    def status() -> Body:
        return reader.status(NAMESPACE, NAME)

    def image(tag: str, **rollout: Any) -> None:
        spec: Body = {"image": f"registry.example/churn:{tag}"}
        if rollout:
            spec["rollout"] = rollout
        patch_model_deployment(kube, NAMESPACE, NAME, {"spec": spec})

    def kill_switch(engaged: bool) -> None:
        patch = {"spec": {"killSwitch": {"engaged": engaged}}}
        patch_model_deployment(kube, NAMESPACE, NAME, patch)

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

        kill_switch(True)
        wait_for(lambda: status()["phase"] == "Killed", timeout=30, what="Killed")
        kill_switch(False)
        wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, what="released")

        image("3", paused=True)
        wait_for(lambda: status()["phase"] == "Paused", timeout=30, what="Paused")
        patch_model_deployment(kube, NAMESPACE, NAME, {"spec": {"rollout": {"paused": False}}})
        canary = wait_for(lambda: status().get("canaryRevision"), timeout=30, what="canary 3")
        annotate(kube, NAMESPACE, NAME, ANNOTATION_ABORT, canary)
        wait_for(lambda: status()["phase"] == "RolledBack", timeout=30, what="RolledBack")
        recorder.sample()
    metered_rollout(kube, reader)
    seen = [body for body in recorder.seen if body.get("status")]
    print(f"[statuses] {len(seen)} distinct, phases: {[b['status']['phase'] for b in seen]}")
    return Scenario(operator, seen)


METERED = "metered"
# Nothing listens there (127.0.0.1 only): each round is unanswered, so the rollout holds.
UNREACHABLE_ENDPOINT = "unreachable"
OPERATOR_ARGS = ("--prometheus-endpoint", f"{UNREACHABLE_ENDPOINT}=http://127.0.0.1:9")


def metered_rollout(kube: KwokCluster, reader: ClusterReader) -> None:
    """A ModelDeployment whose analysis reads Prometheus credentials from a Secret (the
    operator's one `get secrets`), labelled for the endpoint it names: its canary's first
    analysis round must report Prometheus unreachable, not the credentials unreadable."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "prometheus-token",
            "namespace": NAMESPACE,
            "labels": {SECRET_ENDPOINT_LABEL: UNREACHABLE_ENDPOINT},
        },
        "stringData": {"token": "not-a-real-token"},
    }
    apply_object(kube, secret)
    prometheus = {
        "endpoint": UNREACHABLE_ENDPOINT,
        "auth": {"type": "bearer", "secretRef": {"name": "prometheus-token"}},
    }
    body = model_deployment(METERED, NAMESPACE, "registry.example/churn:1", prometheus=prometheus)
    apply_object(kube, body)
    wait_for(lambda: reader.is_true(NAMESPACE, METERED, "Ready"), timeout=60, what="metered")
    patch = {"spec": {"image": "registry.example/churn:2"}}
    patch_model_deployment(kube, NAMESPACE, METERED, patch)

    def no_data_event() -> list[str]:
        events = kube.get_json("events", "-n", NAMESPACE)["items"]
        return [
            e["message"]
            for e in events
            if e["involvedObject"]["name"] == METERED and e["reason"].startswith("AnalysisNo")
        ]

    messages = wait_for(no_data_event, timeout=60, what="an analysis round of metered")
    assert not [m for m in messages if "credentials" in m or "refused" in m], messages


def test_every_call_of_the_operator_is_allowed(kube: KwokCluster, scenario: Scenario) -> None:
    denied = denials(scenario.operator.log())
    assert not denied, "\n".join(denied[:20])
    writes = scenario.operator.writes()
    for call in (
        "PATCH /apis/apps/v1",  # server-side apply
        "DELETE /apis/apps/v1",
        "PUT /apis/modeldeploy.io",  # status
        "PATCH /apis/modeldeploy.io",  # consumed annotation
        "POST /api/v1/namespaces",  # events
    ):
        assert any(call in line for line in writes), f"no {call}: the scenario did not write"
    phases = {body["status"]["phase"] for body in scenario.statuses}
    assert {"Stable", "Progressing", "Killed", "Paused", "RolledBack"} <= phases, phases


def test_pods_it_creates_are_admitted_as_restricted(kube: KwokCluster, scenario: Scenario) -> None:
    """The namespace enforces the restricted level and the rollout reached Ready: the
    ReplicaSets' pods were admitted. No ReplicaSet reports a refused pod either."""
    assert kube.get_json("pods", "-n", NAMESPACE)["items"]
    events = kube.get_json("events", "-n", NAMESPACE)["items"]
    refused = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert not refused, refused


def observed(body: Body) -> bool:
    return bool(body["status"].get("observedGeneration") == body["metadata"]["generation"])


def degraded(body: Body) -> bool:
    conditions = body["status"].get("conditions", [])
    return any(c["type"] == "Degraded" and c["status"] == "True" for c in conditions)


def with_unobserved(statuses: list[Body]) -> list[Body]:
    """The recorded statuses, plus the last Stable one under a spec the operator has not
    observed yet (a commit just applied)."""
    stable = next(b for b in reversed(statuses) if b["status"]["phase"] == "Stable")
    metadata = {**stable["metadata"], "generation": stable["metadata"]["generation"] + 1}
    return [*statuses, {**stable, "metadata": metadata}]


def test_argocd_health_of_every_status(scenario: Scenario) -> None:
    wrong = []
    for body in with_unobserved(scenario.statuses):
        phase = body["status"]["phase"]
        expected = (
            "Progressing"
            if not observed(body)
            else "Suspended"
            if phase == "Killed"
            else "Degraded"
            if degraded(body)
            else HEALTH_BY_PHASE[phase]
        )
        got = argocd_health(body)
        if got != expected:
            wrong.append(f"{phase}: {got}, expected {expected}: {body['status']}")
    assert not wrong, "\n".join(wrong)


# --- Flux: the health expressions of the example, evaluated by the apiserver's CEL ---------

FLUX_KUSTOMIZATIONS = ROOT / "examples" / "gitops" / "flux" / "kustomizations.yaml"
FLUX_ORDER = ("inProgress", "failed", "current")
CEL_NS = "chart-flux-cel"
TOP_LEVEL = re.compile(r"(?<![.\w])(status|metadata)\b")


def flux_expressions() -> dict[str, str]:
    documents = yaml.safe_load_all(FLUX_KUSTOMIZATIONS.read_text())
    models = next(d for d in documents if d["metadata"]["name"] == "models")
    (check,) = models["spec"]["healthCheckExprs"]
    return {key: check[key] for key in FLUX_ORDER}


def admission_policy(expressions: dict[str, str]) -> list[Body]:
    """A ValidatingAdmissionPolicy that warns with the name of each Flux expression that is
    true for a ModelDeployment status written in CEL_NS. Flux's variables are the object's
    top-level fields; an admission policy's are under `object`."""
    name = "chart-flux-health"
    validations = [
        {
            "expression": "!(" + TOP_LEVEL.sub(r"object.\1", expression) + ")",
            "messageExpression": f"'flux:{key}'",
        }
        for key, expression in expressions.items()
    ]
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",  # an expression that errors refuses the write
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [GROUP],
                            "apiVersions": [VERSION],
                            "operations": ["UPDATE"],
                            "resources": [f"{PLURAL}/status"],
                        }
                    ]
                },
                "validations": validations,
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Warn"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": CEL_NS}}
                },
            },
        },
    ]


def rendered_statuses() -> list[Body]:
    """The statuses of tests/unit/test_chart_health.py, made by the operator's renderer for
    every phase, the Degraded ones too (this scenario has no metrics, so no analysis)."""
    spec = importlib.util.spec_from_file_location(
        "chart_health_cases", ROOT / "tests" / "unit" / "test_chart_health.py"
    )
    assert spec is not None
    assert spec.loader is not None
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    return [
        cases.model_deployment(cases.rendered(state, fact, prev))
        for _, state, fact, prev, _, _ in cases.CASES
    ]


def flux_expected(body: Body) -> str:
    """The example's intent: wait for the operator to observe the spec, fail on Degraded,
    wait through the rollout, else current."""
    if not observed(body):
        return "inProgress"
    if degraded(body):
        return "failed"
    rolling = body["status"]["phase"] in ("Pending", "Progressing", "Promoting", "Paused")
    return "inProgress" if rolling else "current"


def test_flux_health_expressions_on_every_status(kube: KwokCluster, scenario: Scenario) -> None:
    kubectl(kube, "create", "namespace", CEL_NS)
    kube.apply_objects(admission_policy(flux_expressions()))
    replica = model_deployment("replay", CEL_NS, "registry.example/churn:1")
    apply_object(kube, replica)  # no operator watches this namespace
    generation = ClusterReader(kube).model_deployment(CEL_NS, "replay")["metadata"]["generation"]

    def replay(body: Body) -> list[str]:
        """Write `body`'s status onto the replica; the expressions that were true."""
        status = dict(body["status"])
        status["observedGeneration"] = generation if observed(body) else generation - 1
        result = kube.kubectl(
            "patch", PLURAL, "replay", "-n", CEL_NS, "--subresource=status", "--type=json",
            "-p", json.dumps([{"op": "add", "path": "/status", "value": status}]),
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr  # an expression failed to evaluate
        return [key for key in FLUX_ORDER if f"flux:{key}" in result.stderr]

    stable = next(b for b in scenario.statuses if b["status"]["phase"] == "Stable")
    wait_for(lambda: replay(stable), timeout=30, what="the admission policy in force")
    policy = kube.get_json("validatingadmissionpolicy", "chart-flux-health")
    assert not policy["status"].get("typeChecking", {}).get("expressionWarnings"), policy
    wrong, verdicts = [], []
    for body in with_unobserved(scenario.statuses) + rendered_statuses():
        true = replay(body)
        verdict = true[0] if true else "none"  # Flux takes the first true one
        verdicts.append(f"{body['status']['phase']}={verdict}")
        if verdict != flux_expected(body):
            wrong.append(f"{body['status']['phase']}: {verdict} ({true}): {body['status']}")
    print(f"[flux] {' '.join(verdicts)}")
    assert not wrong, "\n".join(wrong)


# What Kopf's observers list: Namespaces (the collection itself, paged: `?limit=`, never a
# namespaced path below it) and CRDs; and how Kopf says it falls back.
KOPF_OBSERVERS = re.compile(
    r"/api/v1/namespaces[? ]|customresourcedefinitions|Not enough permissions"
)


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
        denied = denials(process.log())
    assert denied, "Kopf was not refused anything: are the observers still granted?"
    for line in denied:
        assert KOPF_OBSERVERS.search(line), line
