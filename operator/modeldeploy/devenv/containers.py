"""The pod runner's container mode: a pod's image, pulled from the local registry by the
reference in the pod spec, run by podman as the pod's model server.

Only images on a loopback registry (`127.0.0.1:PORT/...`, `localhost:PORT/...`) are served:
nothing ever pulls from elsewhere. Each container runs on the host network (pods cannot be
given loopback addresses, see testenv.md), on a port of its own that the runtime reads from
`MODELDEPLOY_PORT`, with a read-only root filesystem, no capabilities and no privilege
escalation, as the pod's restricted security context asks.

    images = ContainerImages()
    "127.0.0.1:5000/ml/churn@sha256:..." in images      # served in container mode
    images.launch(image).pull_argv()                   # podman pull ...
    images.launch(image).run_argv(name, port, env, label)
"""

import hashlib
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modeldeploy import contract

LOOPBACK_REGISTRY = re.compile(
    r"^(127\.0\.0\.1|localhost):\d+/[a-z0-9][a-z0-9._/-]*(:[\w.-]+)?(@sha256:[0-9a-f]{64})?$"
)
RUNNER_LABEL = "io.modeldeploy.pod-runner"


def on_loopback_registry(image: str) -> bool:
    return bool(LOOPBACK_REGISTRY.match(image))


def runner_label(state_dir: Path) -> str:
    """Marks the containers of the runner of one state directory, so that a successor can
    remove those a killed runner left behind."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


def container_name(namespace: str, pod: str, uid: str) -> str:
    readable = re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"{namespace}-{pod}")[:80]
    return f"md-{readable}-{uid[:8]}"


@dataclass(frozen=True)
class ContainerLaunch:
    """How to pull and run one image."""

    image: str
    cwd: Path = Path("/")
    ready_path: str | None = None  # None: the pod's own readiness probe path

    def pull_argv(self) -> list[str]:
        return ["podman", "pull", "--quiet", "--tls-verify=false", self.image]

    def run_argv(
        self,
        name: str,
        port: int,
        env: Mapping[str, str],
        label: str,
        termination: tuple[Path, str] | None = None,
    ) -> list[str]:
        """Foreground `podman run`: the podman process lives as long as the container, so
        the runner supervises it like any child process (signals are proxied).
        `termination`: (host file, terminationMessagePath), mounted as a kubelet does."""
        listen = {contract.ENV_SERVE_HOST: "127.0.0.1", contract.ENV_SERVE_PORT: str(port)}
        mount = ["--volume", f"{termination[0]}:{termination[1]}"] if termination else []
        return [
            # Pulled already (the status shows the pull); pulled again only if storage was
            # pruned meanwhile (`make images` removes old untagged images).
            "podman", "run", "--rm", "--replace", "--name", name, "--pull=missing",
            "--tls-verify=false",
            "--network", "host", "--read-only", "--tmpfs", "/tmp", *mount,
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--label", f"{RUNNER_LABEL}={label}",
            *(arg for key, value in {**env, **listen}.items() for arg in ("-e", f"{key}={value}")),
            self.image,
        ]  # fmt: skip


class ContainerImages:
    """The image source of the container mode: every image on a loopback registry."""

    path = Path("(container mode: images on a loopback registry)")

    def __contains__(self, image: object) -> bool:
        return isinstance(image, str) and on_loopback_registry(image)

    def launch(self, image: str) -> ContainerLaunch:
        return ContainerLaunch(image)


def remove_containers(label: str) -> int:
    """Remove every container of a runner (a killed runner's podman processes die, their
    containers do not); returns how many there were."""
    listed = subprocess.run(
        ["podman", "ps", "-aq", "--filter", f"label={RUNNER_LABEL}={label}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ids = listed.stdout.split()
    if ids:
        subprocess.run(
            ["podman", "rm", "-f", "-t", "2", *ids], capture_output=True, timeout=120, check=False
        )
    return len(ids)
