"""Model pods on a real control plane: privileges refused at `kubectl apply`, and the pods
the operator makes run under the restricted profile with the template's overrides merged
field by field (ALL capabilities still dropped) and no ServiceAccount token mounted."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    apply_object,
    ensure_crd,
    ensure_namespace,
    model_deployment,
    operator_in,
    patch_model_deployment,
    wait_for,
)

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.resources.names import LABEL_NAME

pytestmark = pytest.mark.integration

NAMESPACE = "op-podsec"
NAME = "churn"
IMAGE = "registry.example/churn:1"
OVERRIDES = {
    "securityContext": {"runAsUser": 10001, "capabilities": {"drop": ["NET_RAW"]}},
    "podSecurityContext": {"fsGroup": 10001},
}


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    with operator_in(kube, NAMESPACE, Path(tmp_path_factory.mktemp("op-podsec"))) as op:
        yield op


def pods(reader: ClusterReader) -> list[dict[str, Any]]:
    return reader.items(f"/api/v1/namespaces/{NAMESPACE}/pods", NAME)


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"securityContext": {"privileged": True}}, "a privileged container is not allowed"),
        (
            {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
            "capabilities.add is not allowed",
        ),
        ({"podSecurityContext": {"runAsUser": 0}}, "runAsUser 0 (root) is not allowed"),
        ({"hostPID": True}, 'unknown field "spec.template.hostPID"'),
    ],
)
def test_privileges_are_refused_at_apply(
    kube: KwokCluster, operator: OperatorProcess, security: dict[str, Any], message: str
) -> None:
    body = model_deployment("privileged", NAMESPACE, IMAGE, template=security)
    result = kube.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    gone = kube.kubectl("get", "mdep", "privileged", "-n", NAMESPACE, check=False)
    assert gone.returncode != 0


def test_pods_run_restricted_with_merged_overrides_and_no_token(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    apply_object(kube, model_deployment(NAME, NAMESPACE, IMAGE, template=OVERRIDES))
    wait_for(lambda: len(pods(reader)) >= 2, timeout=60, interval=0.2)
    for pod in pods(reader):
        assert pod["metadata"]["labels"][LABEL_NAME] == NAME
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        # The ServiceAccount admission plugin adds its token volume only when asked to.
        assert not [v for v in spec.get("volumes", []) if "projected" in v]
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        (container,) = spec["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "capabilities": {"drop": ["ALL", "NET_RAW"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert not [m for m in container["volumeMounts"] if "serviceaccount" in m["mountPath"]]


def test_a_privileged_profile_is_accepted_at_apply_and_refused_by_the_operator(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    template = {"securityProfile": "privileged", "securityContext": {"privileged": True}}
    apply_object(kube, model_deployment("asks-privileges", NAMESPACE, IMAGE, template=template))

    def refusal() -> str:
        selector = "involvedObject.name=asks-privileges"
        listed = kube.kubectl("get", "events", "-n", NAMESPACE, "--field-selector", selector,
                              "-o", "json")  # fmt: skip
        events = json.loads(listed.stdout)["items"]
        return next((e["message"] for e in events if e["reason"] == "PrivilegedNotAllowed"), "")

    message = wait_for(refusal, timeout=60, interval=0.5)
    assert "spec.template.securityContext.privileged" in message
    assert "--allow-privileged-models" in message
    # Status says why, as the Event does (it is written before the Event is posted).
    degraded = reader.condition(NAMESPACE, "asks-privileges", "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "PrivilegedNotAllowed")
    assert degraded["message"] == message
    ready = reader.condition(NAMESPACE, "asks-privileges", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PrivilegedNotAllowed")
    assert reader.is_true(NAMESPACE, "asks-privileges", "Stalled")
    # Refused before anything was built: no pods run privileged.
    assert reader.deployments(NAMESPACE, "asks-privileges") == {}

    # The spec without privileges: built, and the refusal is gone from status.
    patch_model_deployment(
        kube, NAMESPACE, "asks-privileges",
        {"spec": {"template": {"securityProfile": "restricted", "securityContext": None}}},
    )  # fmt: skip
    wait_for(
        lambda: reader.is_true(NAMESPACE, "asks-privileges", "Ready"),
        timeout=60, what="Ready once the privileges are dropped",
    )  # fmt: skip
    degraded = reader.condition(NAMESPACE, "asks-privileges", "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("False", "AsExpected")
    assert not reader.is_true(NAMESPACE, "asks-privileges", "Stalled")
    assert reader.deployments(NAMESPACE, "asks-privileges")


def test_an_operator_allowing_privileged_models_runs_them(
    kube: KwokCluster, reader: ClusterReader, tmp_path: Path
) -> None:
    allowed = "op-podsec-allowed"
    ensure_crd(kube)
    ensure_namespace(kube, allowed)
    template = {
        "securityProfile": "privileged",
        "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
    }
    with OperatorProcess(kube, allowed, tmp_path, extra_args=["--allow-privileged-models"]):
        apply_object(kube, model_deployment(NAME, allowed, IMAGE, template=template))
        path = f"/api/v1/namespaces/{allowed}/pods"
        wait_for(lambda: reader.items(path, NAME), timeout=60, interval=0.2)
        for pod in reader.items(path, NAME):
            security = pod["spec"]["containers"][0]["securityContext"]
            assert security["privileged"] is True
            assert security["capabilities"] == {"add": ["NET_ADMIN"], "drop": ["ALL"]}
            # Not false: the apiserver refuses that with privileged (it defaults to true).
            assert security.get("allowPrivilegeEscalation") is not False
