"""The pod runner's published mapping pod -> local server, read by the load generator.

A small JSON file, replaced atomically on every change: every running process, and for
each Service of the watched namespaces, the pods (with a process) its selector picks:

    {"format": 1, "runner_pid": 4242,
     "endpoints": [{"namespace": "ml", "pod": "churn-5d1c-x7", "name": "churn",
                    "revision": "5d1c", "model": "churn", "address": "127.0.0.1:41234",
                    "ready": true, "pid": 4300, "image": "registry.example/ml/churn@..."}],
     "services": [{"namespace": "ml", "name": "churn", "pods": ["churn-5d1c-x7"]}]}

Only loopback addresses are ever written or read back: a pod is a trigger, never a target.
"""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy.devenv.prometheus import is_loopback_address

FORMAT = 1


@dataclass(frozen=True)
class Endpoint:
    namespace: str
    pod: str
    name: str  # the ModelDeployment (label modeldeploy.io/name, or /fallback)
    revision: str  # label modeldeploy.io/revision
    model: str  # the served model's name (the V2 path /v2/models/<model>/...)
    address: str  # 127.0.0.1:port of the local process
    ready: bool  # the process answers its readiness path with 200
    pid: int
    image: str

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclass(frozen=True)
class ServiceMembers:
    """The pods a Service's selector picks (among those with a local process)."""

    namespace: str
    name: str
    pods: tuple[str, ...]


@dataclass(frozen=True)
class Published:
    endpoints: list[Endpoint] = field(default_factory=list)
    services: list[ServiceMembers] = field(default_factory=list)

    def ready_pods(self, namespace: str | None, name: str) -> list[Endpoint]:
        """Ready endpoints of every pod of a ModelDeployment, whatever the Services say."""
        return [
            e
            for e in self.endpoints
            if e.ready and e.name == name and namespace in (None, e.namespace)
        ]

    def ready_behind(self, namespace: str | None, service: str) -> list[Endpoint]:
        """Ready endpoints of a Service: what kube-proxy balances a client's requests over."""
        members = {
            (s.namespace, pod)
            for s in self.services
            if s.name == service and namespace in (None, s.namespace)
            for pod in s.pods
        }
        return [e for e in self.endpoints if e.ready and (e.namespace, e.pod) in members]


def _checked(endpoint: Endpoint) -> Endpoint:
    if not is_loopback_address(endpoint.address):
        raise ValueError(f"refusing non-loopback endpoint {endpoint.address!r}")
    return endpoint


def write_published(path: Path, published: Published) -> None:
    document = {
        "format": FORMAT,
        "runner_pid": os.getpid(),
        "endpoints": [asdict(_checked(e)) for e in published.endpoints],
        "services": [{**asdict(s), "pods": list(s.pods)} for s in published.services],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, path)  # readers never see half a file


def read_published(path: Path) -> Published:
    """What the runner published; nothing when the file is missing (no runner yet)."""
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return Published()
    if document.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown endpoints format {document.get('format')!r}")
    return Published(
        [_checked(Endpoint(**item)) for item in document.get("endpoints", [])],
        [
            ServiceMembers(s["namespace"], s["name"], tuple(s["pods"]))
            for s in document.get("services", [])
        ],
    )


def read_endpoints(path: Path) -> list[Endpoint]:
    return read_published(path).endpoints
