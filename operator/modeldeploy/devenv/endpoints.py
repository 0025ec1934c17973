"""The pod runner's published mapping pod -> local server, read by the load generator.

A small JSON file, replaced atomically on every change:

    {"format": 1, "runner_pid": 4242, "endpoints": [
      {"namespace": "ml", "pod": "churn-5d1c-x7", "name": "churn", "revision": "5d1c",
       "model": "churn", "address": "127.0.0.1:41234", "ready": true, "pid": 4300,
       "image": "registry.example/ml/churn@sha256:..."}]}

Only loopback addresses are ever written or read back: a pod is a trigger, never a target.
"""

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modeldeploy.devenv.prometheus import is_loopback_address

FORMAT = 1


@dataclass(frozen=True)
class Endpoint:
    namespace: str
    pod: str
    name: str  # the ModelDeployment (label modeldeploy.io/name)
    revision: str  # label modeldeploy.io/revision
    model: str  # the served model's name (the V2 path /v2/models/<model>/...)
    address: str  # 127.0.0.1:port of the local process
    ready: bool  # the process answers its readiness path with 200
    pid: int
    image: str

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def endpoint_from_dict(data: dict[str, Any]) -> Endpoint:
    endpoint = Endpoint(
        namespace=str(data["namespace"]),
        pod=str(data["pod"]),
        name=str(data["name"]),
        revision=str(data["revision"]),
        model=str(data["model"]),
        address=str(data["address"]),
        ready=bool(data["ready"]),
        pid=int(data["pid"]),
        image=str(data["image"]),
    )
    if not is_loopback_address(endpoint.address):
        raise ValueError(f"refusing non-loopback endpoint {endpoint.address!r}")
    return endpoint


def write_endpoints(path: Path, endpoints: list[Endpoint]) -> None:
    for endpoint in endpoints:
        if not is_loopback_address(endpoint.address):
            raise ValueError(f"refusing non-loopback endpoint {endpoint.address!r}")
    document = {
        "format": FORMAT,
        "runner_pid": os.getpid(),
        "endpoints": [asdict(e) for e in endpoints],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, path)  # readers never see half a file


def read_endpoints(path: Path) -> list[Endpoint]:
    """The published endpoints; none when the file is missing (no runner yet)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    if document.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown endpoints format {document.get('format')!r}")
    return [endpoint_from_dict(item) for item in document.get("endpoints", [])]


def select(endpoints: list[Endpoint], namespace: str | None, name: str) -> list[Endpoint]:
    """Ready endpoints of one ModelDeployment (what a Service would route to)."""
    return [
        e
        for e in endpoints
        if e.ready and e.name == name and (namespace is None or e.namespace == namespace)
    ]
