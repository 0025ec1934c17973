"""The pods of an external V2 server (spec.externalServer): the server, the proxy beside it,
the init containers that copy the profile out of the model image; and its revision."""

from typing import Any

import pytest
from pydantic import ValidationError

from modeldeploy import contract
from modeldeploy.api import ModelDeploymentSpec, Warmup
from modeldeploy.resources.common import Owner
from modeldeploy.resources.deployment import (
    CONTAINER_NAME,
    PROXY_CONTAINER_NAME,
    PROXY_FILES_DIR,
    ShadowTarget,
    revision_deployment,
)
from modeldeploy.resources.names import ANNOTATION_REVISION_SOURCE
from modeldeploy.resources.revision import RevisionSource, revision_of

pytestmark = pytest.mark.unit

IMAGE = "registry.example/mlserver-churn@sha256:" + "a" * 64
PROXY = "registry.example/modeldeploy/operator@sha256:" + "b" * 64
OWNER = Owner(name="churn", namespace="ml", uid="uid-1")


def spec(external: dict[str, Any] | None = None, **overrides: Any) -> ModelDeploymentSpec:
    raw: dict[str, Any] = {"model": {"name": "churn", "version": "1"}, "image": IMAGE}
    if external is not None:
        raw["externalServer"] = external
    raw.update(overrides)
    return ModelDeploymentSpec.model_validate(raw)


def pod_of(md: ModelDeploymentSpec, proxy: str | None = PROXY, **kwargs: Any) -> dict[str, Any]:
    body = revision_deployment(
        OWNER,
        RevisionSource.of(md, proxy),
        track="canary",
        replicas=1,
        warmup=Warmup(max_latency_ms=250),
        **kwargs,
    )
    pod: dict[str, Any] = body["spec"]["template"]["spec"]
    return pod


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["containers"]}


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_server_listens_on_upstream_with_a_liveness_probe_only() -> None:
    md = spec(
        {"port": 9000}, template={"env": [{"name": "MLSERVER_PARALLEL_WORKERS", "value": "0"}]}
    )
    server = containers(pod_of(md))[CONTAINER_NAME]
    assert server["image"] == IMAGE
    assert server["ports"] == [{"name": "upstream", "containerPort": 9000, "protocol": "TCP"}]
    assert server["livenessProbe"]["httpGet"] == {"path": contract.LIVE_PATH, "port": "upstream"}
    assert "readinessProbe" not in server
    # The template's env is the server's; the identity is the proxy's (it exports the metrics).
    assert env(server) == {"MLSERVER_PARALLEL_WORKERS": "0"}


def test_proxy_carries_http_the_probes_and_the_identity() -> None:
    md = spec({"port": 9000, "modelName": "churn-classifier"})
    proxy = containers(pod_of(md, shadow=ShadowTarget("http://churn-canary.ml.svc", 10)))[
        PROXY_CONTAINER_NAME
    ]
    assert proxy["image"] == PROXY
    assert proxy["ports"] == [
        {"name": "http", "containerPort": contract.PROXY_PORT, "protocol": "TCP"}
    ]
    assert proxy["readinessProbe"]["httpGet"] == {
        "path": contract.READY_PATH_TEMPLATE.format(model="churn"),
        "port": "http",
    }
    assert proxy["livenessProbe"]["httpGet"] == {"path": contract.LIVE_PATH, "port": "http"}
    command = proxy["command"]
    assert command[:2] == ["modeldeploy", "proxy"]
    flags = dict(zip(command[2::2], command[3::2], strict=True))
    assert flags == {
        "--profile": f"{PROXY_FILES_DIR}/profile.json",
        "--upstream": "http://127.0.0.1:9000",
        "--upstream-model": "churn-classifier",
        "--model-name": "churn",
    }
    assert env(proxy) == {
        contract.ENV_SERVE_HOST: "0.0.0.0",
        contract.ENV_SERVE_PORT: str(contract.PROXY_PORT),
        contract.ENV_MODEL_NAME: "churn",
        contract.ENV_MODEL_VERSION: "1",
        contract.ENV_REVISION: revision_of(md, PROXY),
        contract.ENV_WARMUP_MAX_LATENCY_MS: "250",
        contract.ENV_SHADOW_URL: "http://churn-canary.ml.svc",
        contract.ENV_SHADOW_PERCENT: "10",
    }
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "proxy-files", "mountPath": PROXY_FILES_DIR, "readOnly": True} in proxy[
        "volumeMounts"
    ]


def test_upstream_model_defaults_to_the_model_name() -> None:
    command = containers(pod_of(spec({})))[PROXY_CONTAINER_NAME]["command"]
    assert command[command.index("--upstream-model") + 1] == "churn"
    assert command[command.index("--upstream") + 1] == "http://127.0.0.1:8080"


def test_init_containers_copy_the_profile_out_of_the_same_image() -> None:
    pod = pod_of(spec({}))
    (copy,) = pod["initContainers"]
    assert copy["image"] == IMAGE  # the same reference, so the same digest
    assert copy["command"] == [
        "cp",
        "--",
        "/modeldeploy/profile.json",
        f"{PROXY_FILES_DIR}/profile.json",
    ]
    assert copy["volumeMounts"] == [{"name": "proxy-files", "mountPath": PROXY_FILES_DIR}]
    assert {"name": "proxy-files", "emptyDir": {}} in pod["volumes"]


def test_a_config_path_is_copied_too_and_given_to_the_proxy() -> None:
    md = spec(
        {
            "profilePath": "/models/churn/profile.json",
            "configPath": "/models/churn/model.yaml",
            "proxyResources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
        }
    )
    pod = pod_of(md)
    commands = [c["command"] for c in pod["initContainers"]]
    assert commands == [
        ["cp", "--", "/models/churn/profile.json", f"{PROXY_FILES_DIR}/profile.json"],
        ["cp", "--", "/models/churn/model.yaml", f"{PROXY_FILES_DIR}/model.yaml"],
    ]
    proxy = containers(pod)[PROXY_CONTAINER_NAME]
    assert proxy["command"][-2:] == ["--config", f"{PROXY_FILES_DIR}/model.yaml"]
    resources = {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}}
    assert proxy["resources"] == resources
    assert all(c["resources"] == resources for c in pod["initContainers"])
    assert "resources" not in containers(pod)[CONTAINER_NAME]


def test_built_in_runtime_pods_are_unchanged() -> None:
    pod = pod_of(spec(), proxy=PROXY)
    assert [c["name"] for c in pod["containers"]] == [CONTAINER_NAME]
    assert "initContainers" not in pod
    assert pod["containers"][0]["ports"][0]["name"] == "http"


def test_the_proxy_image_is_part_of_the_revision_and_survives_the_annotation() -> None:
    md = spec({})
    assert revision_of(md, PROXY) != revision_of(md, PROXY.replace("b" * 64, "c" * 64))
    assert revision_of(md, PROXY) != revision_of(spec(), None)
    # Without an external server the proxy image is no part of a revision.
    assert revision_of(spec(), PROXY) == revision_of(spec(), None)
    body = revision_deployment(
        OWNER, RevisionSource.of(md, PROXY), track="stable", replicas=1, warmup=Warmup()
    )
    again = RevisionSource.parse(body["metadata"]["annotations"][ANNOTATION_REVISION_SOURCE])
    assert again == RevisionSource.of(md, PROXY)
    assert again.revision == revision_of(md, PROXY)


@pytest.mark.parametrize(
    "change",
    [{"port": 9000}, {"modelName": "other"}, {"profilePath": "/p.json"}, {"configPath": "/c"}],
)
def test_revision_changes_with_the_external_server(change: dict[str, Any]) -> None:
    assert revision_of(spec(change), PROXY) != revision_of(spec({}), PROXY)


def test_defaults_written_out_are_the_same_revision() -> None:
    written = {"port": 8080, "profilePath": "/modeldeploy/profile.json"}
    assert revision_of(spec(written), PROXY) == revision_of(spec({}), PROXY)


def test_no_pod_without_a_proxy_image() -> None:
    with pytest.raises(ValueError, match="proxy image"):
        pod_of(spec({}), proxy=None)


def test_a_source_without_its_proxy_image_is_refused() -> None:
    with pytest.raises(ValueError, match="proxy image"):
        RevisionSource.parse(
            '{"image": "x", "model": {"name": "a", "version": "1"}, "externalServer": {}}'
        )


@pytest.mark.parametrize(
    ("external", "message"),
    [
        ({"port": contract.PROXY_PORT}, "is the modeldeploy proxy's"),
        ({"modelName": "churn model"}, "must be a V2 model name"),
        ({"profilePath": "profile.json"}, "must be an absolute path"),
        ({"profilePath": "/models/../etc/passwd"}, "must not contain '.' or '..'"),
        ({"configPath": "/modeldeploy/profile.json"}, "must be different files"),
    ],
)
def test_rules(external: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(external)
