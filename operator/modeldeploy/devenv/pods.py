"""What the pod runner reads from a pod and decides about it (pure: plain dicts in and out).

A pod is only a trigger: its labels, image, env and status say which local process should
run; its addresses are never used (they belong to kwok's simulated network).
"""

import re
import urllib.parse
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modeldeploy import contract
from modeldeploy.devenv.endpoints import ServiceMembers
from modeldeploy.resources.deployment import (
    CONTAINER_NAME,
    PROXY_CONTAINER_NAME,
    PROXY_FILES_DIR,
    UPSTREAM_PORT_NAME,
)
from modeldeploy.resources.names import LABEL_FALLBACK, LABEL_NAME, LABEL_REVISION

Pod = Mapping[str, Any]

READY_REASON = "ModelServing"
NOT_READY_REASON = "ModelNotServing"
# A kubelet's terminationMessagePath default, and what it reads: the file's first 4096
# bytes, else (FallbackToLogsOnError, after a failed exit) the log's last 80 lines, at most
# 2048 bytes.
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_TERMINATION_MESSAGE_POLICY = "File"
FALLBACK_TO_LOGS = "FallbackToLogsOnError"
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# fieldRef paths a local process can be given; status.* (pod/host IPs) never.
_FIELD_PATHS = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "metadata.uid": ("metadata", "uid"),
    "spec.nodeName": ("spec", "nodeName"),
    "spec.serviceAccountName": ("spec", "serviceAccountName"),
}
_MAP_FIELD = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
# `<service>.<namespace>.svc[.cluster.local]`: a Service (a DNS-1035 label) by its cluster
# DNS name; shorter forms are left out (`a.b` may as well be a host elsewhere).
_SERVICE_HOST = re.compile(
    r"^(?P<name>[a-z]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    r"\.svc(\.cluster\.local)?\.?$"
)


@dataclass(frozen=True, order=True)
class PodKey:
    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class ServiceRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ServiceURL:
    """An env value naming a cluster Service by its DNS name; a local process gets it
    rewritten to a local forwarder of that Service (`devenv.forwarder`)."""

    service: ServiceRef
    target: str  # path, query and fragment, after the host

    def on(self, address: str) -> str:
        """The same URL on a local address (127.0.0.1:port)."""
        return f"http://{address}{self.target}"


def cluster_service_url(value: str) -> ServiceURL | None:
    """The Service an http URL names by its cluster DNS name (any port: the forwarder stands
    for the Service, whatever port it listens on); None for anything else (https, whose
    certificate names the Service, cannot be forwarded as is)."""
    try:
        parts = urllib.parse.urlsplit(value.strip())
    except ValueError:
        return None
    match = _SERVICE_HOST.match(parts.hostname or "")
    if parts.scheme != "http" or match is None or parts.username is not None:
        return None
    target = urllib.parse.urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    return ServiceURL(ServiceRef(match["namespace"], match["name"]), target)


@dataclass(frozen=True)
class SidecarView:
    """The proxy beside an external V2 server (spec.externalServer), as a local process runs
    it: its command with the files the init containers copy out of the model image, and the
    server's port to forward to. The pod's http port, probes and identity are the proxy's."""

    command: tuple[str, ...]
    upstream_port: int  # the model container's `upstream` containerPort
    copies: tuple[tuple[str, str], ...]  # init containers' `cp -- SOURCE TARGET`
    files_dir: str = PROXY_FILES_DIR  # where the proxy reads the copies

    def local_command(self, files: str, upstream_port: int) -> list[str]:
        """The command with the copies under `files` and the server on `upstream_port`."""
        upstream = f"http://127.0.0.1:{self.upstream_port}"
        return [
            f"http://127.0.0.1:{upstream_port}"
            if arg == upstream
            else files + arg[len(self.files_dir) :]
            if arg.startswith(self.files_dir + "/")
            else arg
            for arg in self.command
        ]


def sidecar_view(pod: Pod) -> SidecarView | None:
    """The proxy of a pod the operator built for an external server; None for any other."""
    spec = pod.get("spec", {})
    containers = {c.get("name"): c for c in spec.get("containers") or []}
    proxy, server = containers.get(PROXY_CONTAINER_NAME), containers.get(CONTAINER_NAME)
    if proxy is None or server is None:
        return None
    ports = [p for p in server.get("ports") or [] if p.get("name") == UPSTREAM_PORT_NAME]
    copies = tuple(
        (str(c["command"][2]), str(c["command"][3]))
        for c in spec.get("initContainers") or []
        if len(c.get("command") or []) == 4 and c["command"][:2] == ["cp", "--"]
    )
    if not ports or not proxy.get("command"):
        return None
    return SidecarView(tuple(proxy["command"]), int(ports[0]["containerPort"]), copies)


@dataclass(frozen=True)
class PodView:
    """One pod of a ModelDeployment, as the runner sees it."""

    key: PodKey
    md_name: str  # label modeldeploy.io/name (fallback pods: modeldeploy.io/fallback)
    revision: str  # label modeldeploy.io/revision
    container: str
    image: str
    known: bool  # the image is in the image map
    running: bool  # phase Running (kwok "started" it)
    ready: bool  # condition Ready is True
    terminating: bool
    env: Mapping[str, str] = field(default_factory=dict)
    service_env: Mapping[str, ServiceURL] = field(default_factory=dict)  # name -> its Service
    skipped_env: tuple[str, ...] = ()  # names left out, with why
    ready_path: str | None = None  # the container's readiness probe path, if HTTP
    ready_reason: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    termination_message_path: str = DEFAULT_TERMINATION_MESSAGE_PATH
    termination_message_policy: str = DEFAULT_TERMINATION_MESSAGE_POLICY
    sidecar: SidecarView | None = None
    """Set for an external server's pod: `image` is the server's, the rest the proxy's."""

    @property
    def model(self) -> str:
        """The served model's name (its V2 path), as the runtime resolves it."""
        return self.env.get(contract.ENV_MODEL_NAME) or self.md_name


def _condition(pod: Pod, kind: str) -> Mapping[str, Any]:
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition  # type: ignore[no-any-return]
    return {}


def _served_container(pod: Pod, images: Container[str]) -> Mapping[str, Any] | None:
    """The container the runner would run: the operator's `model` container, else the first
    with a known image, else the first (to report its unknown image)."""
    containers: list[Mapping[str, Any]] = pod.get("spec", {}).get("containers") or []
    ranked = sorted(
        containers,
        key=lambda c: (c.get("image") not in images, c.get("name") != CONTAINER_NAME),
    )
    return ranked[0] if ranked else None


def non_loopback_url(value: str) -> bool:
    """An http(s) URL that names another host (e.g. a cluster Service), which a local
    process must never be told to dial."""
    try:
        parts = urllib.parse.urlsplit(value.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname not in LOOPBACK_HOSTS


def _field_value(pod: Pod, path: str) -> str | None:
    if path in _FIELD_PATHS:
        section, key = _FIELD_PATHS[path]
        value = pod.get(section, {}).get(key)
        return None if value is None else str(value)
    match = _MAP_FIELD.match(path)
    if match:
        value = pod.get("metadata", {}).get(match.group(1), {}).get(match.group(2))
        return None if value is None else str(value)
    return None


@dataclass(frozen=True)
class ResolvedEnv:
    env: dict[str, str]
    services: dict[str, ServiceURL]  # values naming a cluster Service, given locally
    skipped: tuple[str, ...]  # names left out, with the reason


def resolve_env(env: Iterable[Mapping[str, Any]], pod: Pod) -> ResolvedEnv:
    """The container's env as a local process gets it: plain values, and fieldRefs to the
    pod's own metadata/spec; secrets, config maps, resource fields and status fields (pod
    and host IPs) are left out. A URL naming a cluster Service by its DNS name (the shadow's
    `<name>-canary`) is set apart, to be given the Service's local forwarder; any other
    non-loopback URL is left out."""
    resolved: dict[str, str] = {}
    services: dict[str, ServiceURL] = {}
    skipped: list[str] = []
    for entry in env:
        name = str(entry.get("name", ""))
        if not name:
            continue
        source = entry.get("valueFrom")
        if source is None:
            value = str(entry.get("value", ""))
        elif "fieldRef" in source:
            path = str(source["fieldRef"].get("fieldPath", ""))
            field_value = _field_value(pod, path)
            if field_value is None:
                skipped.append(f"{name} (fieldRef {path})")
                continue
            value = field_value
        else:
            skipped.append(f"{name} ({', '.join(sorted(source))})")
            continue
        service = cluster_service_url(value)
        if service is not None:
            services[name] = service
        elif non_loopback_url(value):
            skipped.append(f"{name} (non-loopback URL)")
        else:
            resolved[name] = value
    return ResolvedEnv(resolved, services, tuple(skipped))


def pod_view(pod: Pod, images: Container[str]) -> PodView | None:
    """None for objects that are not pods of a ModelDeployment (or its fallback) or have no
    containers."""
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    md_name = labels.get(LABEL_NAME) or labels.get(LABEL_FALLBACK)
    container = _served_container(pod, images)
    if not md_name or container is None:
        return None
    image = str(container.get("image", ""))
    sidecar = sidecar_view(pod) if container.get("name") == CONTAINER_NAME else None
    if sidecar is not None:  # what serves `http` (env, probe, status) is the proxy
        proxies = pod["spec"]["containers"]
        container = next(c for c in proxies if c.get("name") == PROXY_CONTAINER_NAME)
    env = resolve_env(container.get("env") or [], pod)
    ready = _condition(pod, "Ready")
    probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
    return PodView(
        key=PodKey(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")),
        md_name=md_name,
        revision=labels.get(LABEL_REVISION, ""),
        container=str(container.get("name", "")),
        image=image,
        known=image in images,
        running=pod.get("status", {}).get("phase") == "Running",
        ready=ready.get("status") == "True",
        terminating=meta.get("deletionTimestamp") is not None,
        env=env.env,
        service_env=env.services,
        skipped_env=env.skipped,
        ready_path=probe.get("path"),
        ready_reason=ready.get("reason"),
        labels=dict(labels),
        termination_message_path=str(
            container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        ),
        termination_message_policy=str(
            container.get("terminationMessagePolicy") or DEFAULT_TERMINATION_MESSAGE_POLICY
        ),
        sidecar=sidecar,
    )


def wanted(view: PodView, reflect_readiness: bool) -> bool:
    """Should a local process serve this pod? When the runner reflects readiness, it owns
    the Ready condition (so a Running pod is enough); else kwok's Ready is the trigger."""
    return (
        view.known and view.running and not view.terminating and (reflect_readiness or view.ready)
    )


@dataclass(frozen=True)
class ProcessPlan:
    start: list[PodView]
    stop: list[PodKey]
    refused: list[PodView]  # wanted, but the runner is at its process limit


def plan_processes(
    views: Sequence[PodView],
    served: Mapping[PodKey, str],
    max_processes: int,
    reflect_readiness: bool,
) -> ProcessPlan:
    """Which processes to start and stop, given the pods and what runs (key -> image).

    A pod whose image changed is stopped and started again; pods beyond the limit are
    refused in a stable (name) order, so the same ones keep their processes."""
    desired = {v.key: v for v in views if wanted(v, reflect_readiness)}
    stop = sorted(k for k, image in served.items() if k not in desired or desired[k].image != image)
    kept = len(served) - len(stop)
    start: list[PodView] = []
    refused: list[PodView] = []
    for key in sorted(desired):
        if key in served and key not in stop:
            continue
        if kept + len(start) < max_processes:
            start.append(desired[key])
        else:
            refused.append(desired[key])
    return ProcessPlan(start, stop, refused)


def termination_message(written: bytes, log: bytes, policy: str, exit_code: int) -> str:
    """What a kubelet makes `lastState.terminated.message` of: what the container wrote to
    its terminationMessagePath; when that is empty, with FallbackToLogsOnError and a failed
    exit, the end of its log."""
    if written:
        return written[:MAX_TERMINATION_MESSAGE_BYTES].decode(errors="ignore")
    if policy != FALLBACK_TO_LOGS or exit_code == 0:
        return ""
    lines = log.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
    return b"".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="ignore")


@dataclass(frozen=True)
class ContainerReport:
    """What a kubelet would report of a pod's container, from what the runner knows."""

    ready: bool
    message: str  # the Ready condition's message
    waiting: tuple[str, str] | None = None  # (reason, message): ContainerCreating, ErrImagePull..
    started_at: str | None = None  # running since; None while not running
    restarts: int = 0
    last_exit_code: int | None = None  # how the previous run ended, if one did
    last_exit_message: str = ""  # its termination message (see termination_message)


def _container_state(report: ContainerReport) -> dict[str, Any]:
    # Strategic merge keeps keys a patch leaves out: the other two states are nulled.
    if report.started_at is not None and report.waiting is None:
        return {"running": {"startedAt": report.started_at}, "waiting": None, "terminated": None}
    reason, message = report.waiting or ("ContainerCreating", "")
    waiting = {"reason": reason, "message": message[:500]} if message else {"reason": reason}
    return {"waiting": waiting, "running": None, "terminated": None}


def status_patch(container: str, report: ContainerReport, now: str) -> dict[str, Any]:
    """Strategic-merge patch of pod status: Ready/ContainersReady (merged by type) and the
    container's status (merged by name: state, lastState, restartCount, ready), as a kubelet
    would write them."""
    condition = {
        "status": "True" if report.ready else "False",
        "reason": READY_REASON if report.ready else NOT_READY_REASON,
        "message": report.message[:500],
        "lastTransitionTime": now,
    }
    status: dict[str, Any] = {
        "name": container,
        "ready": report.ready,
        "started": report.started_at is not None and report.waiting is None,
        "restartCount": report.restarts,
        "state": _container_state(report),
    }
    if report.last_exit_code is not None:
        terminated = {
            "exitCode": report.last_exit_code,
            "reason": "Completed" if report.last_exit_code == 0 else "Error",
            "message": report.last_exit_message,
            "finishedAt": now,
        }
        status["lastState"] = {"terminated": terminated}
    return {
        "status": {
            "conditions": [
                {"type": "Ready", **condition},
                {"type": "ContainersReady", **condition},
            ],
            "containerStatuses": [status],
        }
    }


def target_labels(view: PodView) -> dict[str, str]:
    """Prometheus target labels of a pod's process. The runtime already puts model, version
    and revision on every series, so these use names it never does."""
    return {"namespace": view.key.namespace, "pod": view.key.name, "md_name": view.md_name}


def service_members(services: Iterable[Pod], served: Iterable[PodView]) -> list[ServiceMembers]:
    """For each Service with a selector, the served pods in its namespace that match it (the
    Ready ones among them are its endpoints, as the EndpointSlice controller would say)."""
    views = list(served)
    members = []
    for service in services:
        meta, selector = service.get("metadata", {}), service.get("spec", {}).get("selector")
        if not selector:
            continue  # no selector: endpoints are managed by hand, never by pods
        pods = sorted(
            v.key.name
            for v in views
            if v.key.namespace == meta.get("namespace")
            and all(v.labels.get(k) == value for k, value in selector.items())
        )
        members.append(ServiceMembers(meta.get("namespace", ""), meta.get("name", ""), tuple(pods)))
    return sorted(members, key=lambda m: (m.namespace, m.name))
