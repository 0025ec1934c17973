"""Where the cached cluster binaries are (exported by `hack/testenv.sh env`), and a free port
for the local servers that dev tools, tests and benchmarks start."""

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path


class ToolsMissingError(RuntimeError):
    """The cached binaries are not installed or not exported to this process."""


@dataclass(frozen=True)
class Toolchain:
    kube_bin: Path  # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
    etcd: Path
    kwok: Path
    kwokctl: Path
    helm: Path
    prometheus: Path
    kube_version: str
    gateway_api_crds: Path
    """The Gateway API's standard-channel CRD manifests (a directory of YAML files)."""
    kwok_stages: Path
    """kwok's default Stage manifests (a directory of YAML files; devenv.kwokstages)."""

    @property
    def kubectl(self) -> Path:
        return self.kube_bin / "kubectl"


def cache_dir() -> Path:
    """Where built tools, the venv, the demo stack and test runs live (never in the repo)."""
    return Path(os.environ.get("MODELDEPLOY_CACHE", str(Path.home() / ".cache" / "modeldeploy")))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _env_dir(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise ToolsMissingError(
            f'{name} is not set: run through `make` or `eval "$(hack/testenv.sh env)"` '
            "after `hack/testenv.sh install`"
        )
    path = Path(value)
    if not (path / ".stamp").is_file():
        raise ToolsMissingError(f"{path} has no build stamp: run `hack/testenv.sh install`")
    return path


def prometheus_binary() -> Path:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise ToolsMissingError("prometheus is not installed: run `hack/testenv.sh install`")
    return Path(prometheus)


def otelcol_binary() -> Path:
    """The OpenTelemetry Collector that tests export traces to (devenv.collector)."""
    return _env_dir("MODELDEPLOY_OTELCOL_BIN") / "otelcol"


def toolchain() -> Toolchain:
    kwok_dir = _env_dir("MODELDEPLOY_KWOK_BIN")
    return Toolchain(
        kube_bin=_env_dir("MODELDEPLOY_K8S_BIN"),
        etcd=_env_dir("MODELDEPLOY_ETCD_BIN") / "etcd",
        kwok=kwok_dir / "kwok",
        kwokctl=kwok_dir / "kwokctl",
        helm=_env_dir("MODELDEPLOY_HELM_BIN") / "helm",
        prometheus=prometheus_binary(),
        kube_version=os.environ.get("MODELDEPLOY_K8S_VERSION", ""),
        gateway_api_crds=_env_dir("MODELDEPLOY_GATEWAY_API_CRDS"),
        kwok_stages=_env_dir("MODELDEPLOY_KWOK_STAGES"),
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
