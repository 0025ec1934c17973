"""The pure builders: revision hash, Deployments, Services, HPAs, PDB."""

from typing import Any

import pytest

from modeldeploy import contract
from modeldeploy.api import Autoscaling, Fallback, ModelDeploymentSpec, Warmup
from modeldeploy.resources.autoscaling import hpa, pdb
from modeldeploy.resources.common import Owner, applied_hash
from modeldeploy.resources.deployment import (
    ShadowTarget,
    fallback_deployment,
    revision_deployment,
)
from modeldeploy.resources.names import (
    ANNOTATION_APPLIED_HASH,
    ANNOTATION_REVISION_SOURCE,
    LABEL_FALLBACK,
    LABEL_NAME,
    LABEL_REVISION,
    LABEL_TRACK,
)
from modeldeploy.resources.revision import RevisionSource, revision_of
from modeldeploy.resources.service import service

pytestmark = pytest.mark.unit

IMAGE = "registry.example/churn@sha256:" + "a" * 64
OWNER = Owner(name="churn", namespace="ml", uid="uid-1")


def spec(**overrides: Any) -> ModelDeploymentSpec:
    raw: dict[str, Any] = {"model": {"name": "churn", "version": "1"}, "image": IMAGE}
    raw.update(overrides)
    return ModelDeploymentSpec.model_validate(raw)


def env_of(body: dict[str, Any]) -> dict[str, str]:
    container = body["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_revision_is_a_short_stable_hash() -> None:
    revision = revision_of(spec())
    assert len(revision) == 10
    assert all(c in "0123456789abcdef" for c in revision)
    assert revision_of(spec()) == revision


@pytest.mark.parametrize(
    "change",
    [
        {"image": "registry.example/churn@sha256:" + "b" * 64},
        {"model": {"name": "churn", "version": "2"}},
        {"template": {"env": [{"name": "THREADS", "value": "2"}]}},
        {"template": {"resources": {"requests": {"cpu": "500m"}}}},
    ],
)
def test_revision_changes_with_image_model_and_template(change: dict[str, Any]) -> None:
    assert revision_of(spec(**change)) != revision_of(spec())


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": {"minWarm": 3, "max": 9}},
        {"rollout": {"canary": {"steps": [5, 50]}, "stepInterval": "1m"}},
        {"warmup": {"maxLatencyMs": 50}},
        {"killSwitch": {"engaged": True}},
        # A default written out is the same revision as the default left out.
        {"template": {"terminationGracePeriodSeconds": 30}},
    ],
)
def test_revision_ignores_everything_else(change: dict[str, Any]) -> None:
    assert revision_of(spec(**change)) == revision_of(spec())


def test_revision_source_round_trips_through_its_annotation() -> None:
    source = RevisionSource.of(
        spec(template={"env": [{"name": "A", "value": "1"}], "labels": {"team": "ml"}})
    )
    again = RevisionSource.parse(source.canonical())
    assert again == source
    assert again.revision == source.revision
    with pytest.raises(ValueError, match="revision source"):
        RevisionSource.parse("[]")


def test_revision_deployment_shape() -> None:
    source = RevisionSource.of(spec(template={"labels": {"team": "ml"}}))
    body = revision_deployment(
        OWNER, source, track="canary", replicas=3, warmup=Warmup(max_latency_ms=250, timeout="2m")
    )
    rev = source.revision
    meta, dspec = body["metadata"], body["spec"]
    assert meta["name"] == f"churn-{rev}"
    assert meta["namespace"] == "ml"
    assert meta["labels"][LABEL_TRACK] == "canary"
    assert meta["labels"][LABEL_REVISION] == rev
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "churn",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert RevisionSource.parse(meta["annotations"][ANNOTATION_REVISION_SOURCE]) == source
    assert dspec["replicas"] == 3
    assert dspec["progressDeadlineSeconds"] == 120
    assert dspec["selector"] == {"matchLabels": {LABEL_NAME: "churn", LABEL_REVISION: rev}}
    assert dspec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = dspec["template"]["metadata"]["labels"]
    # The track is never in the pod template: a promotion must not restart pods.
    assert pod_labels == {LABEL_NAME: "churn", LABEL_REVISION: rev, "team": "ml"}
    container = dspec["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert container["ports"][0]["containerPort"] == contract.SERVING_PORT
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == contract.READY_PATH_TEMPLATE.format(model="churn")
    assert probe["port"] == "http"
    liveness = container["livenessProbe"]
    assert liveness["httpGet"] == {"path": contract.LIVE_PATH, "port": "http"}
    # Generous: a minute of failed probes after the runtime's own deadline.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    # The runtime's own reason for exiting (else the end of its log) reaches the pod status.
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert env_of(body) == {
        contract.ENV_MODEL_NAME: "churn",
        contract.ENV_MODEL_VERSION: "1",
        contract.ENV_REVISION: rev,
        contract.ENV_WARMUP_MAX_LATENCY_MS: "250",
    }


def test_pods_follow_the_restricted_profile_unless_overridden() -> None:
    source = RevisionSource.of(
        spec(template={"securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": False}})
    )
    body = revision_deployment(OWNER, source, track="stable", replicas=1, warmup=Warmup())
    pod = body["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    security = pod["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 1000
    assert security["readOnlyRootFilesystem"] is False
    # A writable /tmp for a read-only root filesystem.
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert pod["automountServiceAccountToken"] is False


def test_security_overrides_merge_field_by_field_and_always_drop_all() -> None:
    template = {
        "securityContext": {
            "capabilities": {"drop": ["NET_RAW", "ALL"]},
            "seccompProfile": {"type": "Localhost", "localhostProfile": "model.json"},
        },
        "podSecurityContext": {"fsGroup": 2000, "seccompProfile": {"type": "Localhost"}},
    }
    source = RevisionSource.of(spec(template=template))
    pod = revision_deployment(OWNER, source, track="stable", replicas=1, warmup=Warmup())
    pod = pod["spec"]["template"]["spec"]
    security = pod["containers"][0]["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL", "NET_RAW"]}
    assert security["seccompProfile"] == {"type": "Localhost", "localhostProfile": "model.json"}
    assert security["allowPrivilegeEscalation"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "fsGroup": 2000,
        "seccompProfile": {"type": "Localhost"},
    }


def test_an_empty_capabilities_override_still_drops_all() -> None:
    source = RevisionSource.of(spec(template={"securityContext": {"capabilities": {}}}))
    pod = revision_deployment(OWNER, source, track="stable", replicas=1, warmup=Warmup())
    security = pod["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_a_privileged_profile_adds_capabilities_and_still_drops_all() -> None:
    template = {
        "securityProfile": "privileged",
        "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": []}},
    }
    source = RevisionSource.of(spec(template=template))
    pod = revision_deployment(OWNER, source, track="stable", replicas=1, warmup=Warmup())
    security = pod["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert security["capabilities"] == {"add": ["NET_ADMIN"], "drop": ["ALL"]}


def test_a_privileged_container_leaves_privilege_escalation_to_the_apiserver() -> None:
    for context in ({"privileged": True}, {"capabilities": {"add": ["CAP_SYS_ADMIN"]}}):
        template = {"securityProfile": "privileged", "securityContext": context}
        source = RevisionSource.of(spec(template=template))
        pod = revision_deployment(OWNER, source, track="stable", replicas=1, warmup=Warmup())
        security = pod["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        assert "allowPrivilegeEscalation" not in security


def test_the_service_account_token_is_mounted_only_when_asked_for() -> None:
    source = RevisionSource.of(spec(template={"automountServiceAccountToken": True}))
    pod = revision_deployment(OWNER, source, track="stable", replicas=1, warmup=Warmup())
    assert pod["spec"]["template"]["spec"]["automountServiceAccountToken"] is True


def test_the_token_default_does_not_change_existing_revisions() -> None:
    assert RevisionSource.of(spec(template={"automountServiceAccountToken": False})).revision == (
        RevisionSource.of(spec()).revision
    )


def test_template_fields_reach_the_pod() -> None:
    template = {
        "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
        "env": [{"name": "THREADS", "value": "2"}],
        "envFrom": [{"secretRef": {"name": "creds"}}],
        "nodeSelector": {"gpu": "true"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccountName": "churn",
        "priorityClassName": "high",
        "annotations": {"team": "ml"},
    }
    body = revision_deployment(
        OWNER, RevisionSource.of(spec(template=template)), track="stable", replicas=1,
        warmup=Warmup(),
    )  # fmt: skip
    pod = body["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}
    assert env_of(body)["THREADS"] == "2"
    assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]
    assert pod["spec"]["nodeSelector"] == {"gpu": "true"}
    assert pod["spec"]["tolerations"][0]["key"] == "gpu"
    assert pod["spec"]["serviceAccountName"] == "churn"
    assert pod["spec"]["priorityClassName"] == "high"
    assert pod["metadata"]["annotations"] == {"team": "ml"}
    assert "affinity" not in pod["spec"]


def test_shadow_target_sets_the_mirroring_env() -> None:
    body = revision_deployment(
        OWNER,
        RevisionSource.of(spec()),
        track="stable",
        replicas=2,
        warmup=Warmup(),
        shadow=ShadowTarget("http://churn-canary.ml.svc", 20),
    )
    env = env_of(body)
    assert env[contract.ENV_SHADOW_URL] == "http://churn-canary.ml.svc"
    assert env[contract.ENV_SHADOW_PERCENT] == "20"


def test_fallback_pods_are_not_selected_by_the_model_selector() -> None:
    fallback = Fallback(image="registry.example/static:1", replicas=2)
    body = fallback_deployment(OWNER, fallback, spec().model, Warmup())
    assert body["metadata"]["name"] == "churn-fallback"
    assert body["metadata"]["labels"][LABEL_TRACK] == "fallback"
    labels = body["spec"]["template"]["metadata"]["labels"]
    assert labels == {LABEL_FALLBACK: "churn"}
    assert body["spec"]["replicas"] == 2
    assert env_of(body)[contract.ENV_REVISION] == "fallback"


def test_applied_hash_ignores_replicas_only() -> None:
    source = RevisionSource.of(spec())
    one = revision_deployment(OWNER, source, track="stable", replicas=1, warmup=Warmup())
    five = revision_deployment(OWNER, source, track="stable", replicas=5, warmup=Warmup())
    moved = revision_deployment(OWNER, source, track="previous", replicas=1, warmup=Warmup())
    stored = one["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]
    assert stored == applied_hash(one)
    assert stored == five["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]
    assert stored != moved["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]


def test_service() -> None:
    body = service(OWNER, "churn-stable", {LABEL_NAME: "churn", LABEL_REVISION: "abc"})
    assert body["kind"] == "Service"
    assert body["spec"]["selector"] == {LABEL_NAME: "churn", LABEL_REVISION: "abc"}
    assert body["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert body["metadata"]["labels"][LABEL_NAME] == "churn"


def test_hpa_has_the_floor_ceiling_and_metrics() -> None:
    target = {"type": "AverageValue", "averageValue": "10"}
    extra = {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": target}}
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    body = hpa(
        OWNER,
        "churn-stable",
        target="churn-abc",
        min_replicas=2,
        max_replicas=10,
        autoscaling=Autoscaling(target_cpu_utilization=60, metrics=[extra], behavior=behavior),
    )
    hspec = body["spec"]
    assert body["apiVersion"] == "autoscaling/v2"
    assert hspec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "churn-abc",
    }
    assert (hspec["minReplicas"], hspec["maxReplicas"]) == (2, 10)
    assert hspec["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert hspec["metrics"][1] == extra
    assert hspec["behavior"] == behavior


def test_hpa_ceiling_never_below_floor() -> None:
    body = hpa(OWNER, "x", target="y", min_replicas=4, max_replicas=3, autoscaling=Autoscaling())
    assert body["spec"]["maxReplicas"] == 4


def test_pdb_keeps_min_warm() -> None:
    body = pdb(OWNER, "churn-stable", selector={LABEL_NAME: "churn"}, min_available=2)
    assert body["apiVersion"] == "policy/v1"
    assert body["spec"] == {"minAvailable": 2, "selector": {"matchLabels": {LABEL_NAME: "churn"}}}
