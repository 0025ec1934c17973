"""Deployments: one per revision (`<name>-<revision>`) and the optional `<name>-fallback`.

Pods follow the restricted Pod Security profile (the template's security contexts, which
the API keeps unprivileged, are merged over it field by field; ALL capabilities are dropped
always) and mount no ServiceAccount token unless the template asks for one. They get the
identity the metrics carry through `MODELDEPLOY_*` environment variables, and turn Ready
only when the runtime's model-ready endpoint says so (after the golden requests passed
within the warm-up latency bound). A runtime that exits says why in its termination message
(`terminationMessagePolicy: FallbackToLogsOnError`).

An external V2 server (spec.externalServer) runs as the model container on its own port
(`upstream`, liveness probe only), with `modeldeploy proxy` beside it carrying the `http`
port, the probes and the identity: what the Services, the kubelet and Prometheus see is the
same as with the built-in runtime. Init containers of the model image itself (same digest)
copy its profile (and proxy configuration) into an emptyDir the proxy reads, so one
immutable image still carries model and profile together.
"""

from dataclasses import dataclass
from typing import Any

from modeldeploy import contract
from modeldeploy.api import (
    ExternalServer,
    Fallback,
    ModelRef,
    PodTemplate,
    ResourceRequirements,
    Warmup,
    parse_duration,
    to_wire,
)
from modeldeploy.resources.common import Body, Owner, metadata, with_applied_hash
from modeldeploy.resources.names import (
    ANNOTATION_REVISION_SOURCE,
    FALLBACK_REVISION,
    HTTP_PORT_NAME,
    LABEL_REVISION,
    LABEL_TRACK,
    Track,
    deployment_name,
    fallback_name,
    fallback_selector,
    revision_selector,
)
from modeldeploy.resources.revision import RevisionSource

CONTAINER_NAME = "model"
PROXY_CONTAINER_NAME = "proxy"
UPSTREAM_PORT_NAME = "upstream"
TMP_VOLUME = "tmp"
PROXY_FILES_VOLUME = "proxy-files"
PROXY_FILES_DIR = "/modeldeploy-proxy"
PROXY_PROFILE = f"{PROXY_FILES_DIR}/profile.json"
PROXY_CONFIG = f"{PROXY_FILES_DIR}/model.yaml"

RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class ShadowTarget:
    """Where the pods of a Deployment mirror a share of their requests to."""

    url: str
    percent: int


def shadow_url(name: str, namespace: str) -> str:
    """The canary Service, by its in-cluster DNS name (port 80)."""
    return f"http://{name}-canary.{namespace}.svc"


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, nested objects merged key by key (a shallow merge would let
    `capabilities: {drop: [NET_RAW]}` replace `drop: [ALL]`)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def container_security(template: PodTemplate) -> dict[str, Any]:
    """The model container's security context: the template's over the restricted one, with
    every capability dropped whatever else the template drops."""
    context = template.security_context
    override = to_wire(context) if context else {}
    base = dict(RESTRICTED_CONTAINER_SECURITY)
    if context is not None and context.escalates():
        del base["allowPrivilegeEscalation"]  # the apiserver refuses false with these
    merged = _merged(base, override)
    capabilities = merged["capabilities"]
    drop = capabilities.get("drop", [])
    merged["capabilities"] = {**capabilities, "drop": ["ALL", *(c for c in drop if c != "ALL")]}
    return merged


def pod_security(template: PodTemplate) -> dict[str, Any]:
    override = to_wire(template.pod_security_context) if template.pod_security_context else {}
    return _merged(RESTRICTED_POD_SECURITY, override)


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


@dataclass(frozen=True)
class _Pods:
    """What the pods of one Deployment are made of."""

    labels: dict[str, str]
    image: str
    model: ModelRef
    revision: str
    template: PodTemplate
    warmup: Warmup
    shadow: ShadowTarget | None = None
    external: ExternalServer | None = None
    proxy_image: str | None = None


def _identity_env(pods: _Pods) -> list[dict[str, str]]:
    """What the metrics carry and the warm-up bound: on whichever container serves `http`."""
    env = [
        _env(contract.ENV_MODEL_NAME, pods.model.name),
        _env(contract.ENV_MODEL_VERSION, pods.model.version),
        _env(contract.ENV_REVISION, pods.revision),
        _env(contract.ENV_WARMUP_MAX_LATENCY_MS, str(pods.warmup.max_latency_ms)),
    ]
    if pods.shadow is not None:
        env += [
            _env(contract.ENV_SHADOW_URL, pods.shadow.url),
            _env(contract.ENV_SHADOW_PERCENT, str(pods.shadow.percent)),
        ]
    return env


def _liveness(port: str) -> dict[str, Any]:
    # 503 once a golden replay outlasts its deadline (60 s by default: the inference
    # pool has stalled, serving/golden.py); a minute of failures more before a restart,
    # so a slow node is never mistaken for a stalled server. Warm-up answers 200.
    return {
        "httpGet": {"path": contract.LIVE_PATH, "port": port},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 6,
    }


def _serving_probes(pods: _Pods) -> dict[str, Any]:
    """Readiness (the golden requests passed) and liveness on the `http` port."""
    return {
        "readinessProbe": {
            "httpGet": {
                "path": contract.READY_PATH_TEMPLATE.format(model=pods.model.name),
                "port": HTTP_PORT_NAME,
            },
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": _liveness(HTTP_PORT_NAME),
    }


def _resources(requirements: ResourceRequirements) -> dict[str, Any]:
    wire = to_wire(requirements)
    return {k: v for k, v in wire.items() if v}


def _container(pods: _Pods) -> dict[str, Any]:
    """The model container: the built-in runtime on `http`, or an external V2 server on
    `upstream` (the proxy beside it serves `http`)."""
    template = pods.template
    env = [to_wire(var) for var in template.env]
    if pods.external is None:
        ports = [{"name": HTTP_PORT_NAME, "containerPort": contract.SERVING_PORT}]
        probes = _serving_probes(pods)
        env = _identity_env(pods) + env
    else:
        ports = [{"name": UPSTREAM_PORT_NAME, "containerPort": pods.external.port}]
        # Liveness only: the proxy's readiness covers the server (its golden requests pass
        # through it), and the server's own readiness knows nothing of the profile.
        probes = {"livenessProbe": _liveness(UPSTREAM_PORT_NAME)}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": pods.image,
        "ports": [{**port, "protocol": "TCP"} for port in ports],
        "env": env,
        **probes,
        # What the runtime writes to /dev/termination-log when it exits (a golden request
        # that failed, say), else its log's end on an error, becomes the pod's
        # lastState.terminated.message: the reason the operator reports and rolls back with.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(template),
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }
    if template.env_from:
        container["envFrom"] = [to_wire(source) for source in template.env_from]
    resources = _resources(template.resources)
    if resources:
        container["resources"] = resources
    return container


def _proxy_container(pods: _Pods, external: ExternalServer, image: str) -> dict[str, Any]:
    """`modeldeploy proxy` on `http`: what clients, probes and Prometheus reach. Host and
    port come as the runtime's environment, which a local pod runner may move."""
    command = [
        "modeldeploy",
        "proxy",
        "--profile",
        PROXY_PROFILE,
        "--upstream",
        f"http://127.0.0.1:{external.port}",
        "--upstream-model",
        external.model_name or pods.model.name,
        "--model-name",
        pods.model.name,
    ]
    if external.config_path is not None:
        command += ["--config", PROXY_CONFIG]
    env = [
        _env(contract.ENV_SERVE_HOST, "0.0.0.0"),
        _env(contract.ENV_SERVE_PORT, str(contract.PROXY_PORT)),
        *_identity_env(pods),
    ]
    container: dict[str, Any] = {
        "name": PROXY_CONTAINER_NAME,
        "image": image,
        "command": command,
        "ports": [
            {"name": HTTP_PORT_NAME, "containerPort": contract.PROXY_PORT, "protocol": "TCP"}
        ],
        "env": env,
        **_serving_probes(pods),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(PodTemplate()),
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            {"name": PROXY_FILES_VOLUME, "mountPath": PROXY_FILES_DIR, "readOnly": True},
        ],
    }
    resources = _resources(external.proxy_resources)
    if resources:
        container["resources"] = resources
    return container


def _copy_containers(pods: _Pods, external: ExternalServer) -> list[dict[str, Any]]:
    """Init containers of the model image (the same reference, so the same digest) that copy
    the files the proxy reads out of it: the profile travels with the model it describes."""
    copies = [("copy-profile", external.profile_path, PROXY_PROFILE)]
    if external.config_path is not None:
        copies.append(("copy-config", external.config_path, PROXY_CONFIG))
    resources = _resources(external.proxy_resources)
    return [
        {
            "name": name,
            "image": pods.image,
            "command": ["cp", "--", source, target],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": container_security(pods.template),
            "volumeMounts": [{"name": PROXY_FILES_VOLUME, "mountPath": PROXY_FILES_DIR}],
            **({"resources": resources} if resources else {}),
        }
        for name, source, target in copies
    ]


def _pod_template(pods: _Pods) -> dict[str, Any]:
    template = pods.template
    containers = [_container(pods)]
    volumes: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {}}]
    init: list[dict[str, Any]] = []
    if pods.external is not None:
        if pods.proxy_image is None:
            raise ValueError("an external server's pods need the proxy image")
        containers.append(_proxy_container(pods, pods.external, pods.proxy_image))
        volumes.append({"name": PROXY_FILES_VOLUME, "emptyDir": {}})
        init = _copy_containers(pods, pods.external)
    spec: dict[str, Any] = {
        "containers": containers,
        "volumes": volumes,
        "securityContext": pod_security(template),
        "automountServiceAccountToken": template.automount_service_account_token,
        "terminationGracePeriodSeconds": template.termination_grace_period_seconds,
        "enableServiceLinks": False,
    }
    optional: dict[str, Any] = {
        "nodeSelector": template.node_selector or None,
        "tolerations": [to_wire(t) for t in template.tolerations] or None,
        "affinity": template.affinity,
        "topologySpreadConstraints": template.topology_spread_constraints or None,
        "serviceAccountName": template.service_account_name,
        "imagePullSecrets": [to_wire(s) for s in template.image_pull_secrets] or None,
        "priorityClassName": template.priority_class_name,
    }
    if init:
        spec["initContainers"] = init
    spec.update({k: v for k, v in optional.items() if v is not None})
    meta: dict[str, Any] = {"labels": {**template.labels, **pods.labels}}
    if template.annotations:
        meta["annotations"] = dict(template.annotations)
    return {"metadata": meta, "spec": spec}


def _deployment(
    owner: Owner,
    name: str,
    *,
    labels: dict[str, str],
    annotations: dict[str, str] | None,
    replicas: int,
    pods: _Pods,
) -> Body:
    return with_applied_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(owner, name, labels, annotations),
            "spec": {
                "replicas": replicas,
                "revisionHistoryLimit": 2,
                # Pods not Ready this long after the last progress mark the Deployment
                # ProgressDeadlineExceeded: the operator's warm-up timeout.
                "progressDeadlineSeconds": int(parse_duration(pods.warmup.timeout).total_seconds()),
                "selector": {"matchLabels": pods.labels},
                # Never below the Ready pods there are: new pods first, then old ones go.
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
                },
                "template": _pod_template(pods),
            },
        }
    )


def revision_deployment(
    owner: Owner,
    source: RevisionSource,
    *,
    track: Track,
    replicas: int,
    warmup: Warmup,
    shadow: ShadowTarget | None = None,
) -> Body:
    """`<name>-<revision>`: the pods of one revision, labelled with its track."""
    revision = source.revision
    return _deployment(
        owner,
        deployment_name(owner.name, revision),
        labels={LABEL_REVISION: revision, LABEL_TRACK: track},
        annotations={ANNOTATION_REVISION_SOURCE: source.canonical()},
        replicas=replicas,
        pods=_Pods(
            labels=revision_selector(owner.name, revision),
            image=source.image,
            model=source.model,
            revision=revision,
            template=source.template,
            warmup=warmup,
            shadow=shadow,
            external=source.external,
            proxy_image=source.proxy_image,
        ),
    )


def fallback_deployment(owner: Owner, fallback: Fallback, model: ModelRef, warmup: Warmup) -> Body:
    """`<name>-fallback`: kept running, so that the kill switch can route to it at once. It
    must serve the same protocol on the same port (it replaces the model for clients)."""
    return _deployment(
        owner,
        fallback_name(owner.name),
        labels={LABEL_REVISION: FALLBACK_REVISION, LABEL_TRACK: "fallback"},
        annotations=None,
        replicas=fallback.replicas,
        pods=_Pods(
            labels=fallback_selector(owner.name),
            image=fallback.image,
            model=model,
            revision=FALLBACK_REVISION,
            template=fallback.template or PodTemplate(),
            warmup=warmup,
        ),
    )
