"""The pod runner as a test's subprocess, and what it shows on pods and in podman (shared by
the pod runner's own tests and the operator's tests with real containers)."""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from operator_harness import wait_for

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.containers import RUNNER_LABEL, runner_label
from modeldeploy.devenv.endpoints import Endpoint, read_endpoints
from modeldeploy.devenv.imagemap import ImageMap, default_build_root
from modeldeploy.devenv.podrunner import ENDPOINTS_FILE
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.resources.names import LABEL_NAME
from modeldeploy.serving.process import modeldeploy_command

ROOT = Path(__file__).resolve().parents[2]
IMAGE_MAP = ROOT / "examples" / "churn" / "images.yaml"
V1 = next(iter(ImageMap.load(IMAGE_MAP).entries))  # the healthy v1 image
WRONG_GOLDEN_IMAGE = "registry.example/ml/churn-wrong-golden:1"
Body = dict[str, Any]


def wrong_golden_model(target: Path) -> Path:
    """The v1 model directory (built when missing) whose profile expects the other label in
    its first golden request, as when the profile of another training run is bundled: every
    start of `modeldeploy serve` fails its warm-up for good."""
    examples = ImageMap.load(IMAGE_MAP)
    (v1,) = (
        ImageMap(examples.path, {V1: examples.entries[V1]})
        .prepare(default_build_root(), print)
        .values()
    )
    assert v1.model_dir is not None
    shutil.copytree(v1.model_dir, target)
    profile = json.loads((target / "profile.json").read_text())
    expected = profile["golden"][0]["expected"]["label"]
    expected[0] = next(c for c in profile["output"]["classes"] if c != expected[0])
    (target / "profile.json").write_text(json.dumps(profile))
    return target


def write_image_map(path: Path, images: dict[str, Body]) -> Path:
    """An image map of its own for a test (process mode)."""
    path.write_text(json.dumps({"images": images}))
    return path


class RunnerProcess:
    """`modeldeploy dev pod-runner` for one namespace, its own state dir and file_sd job."""

    def __init__(
        self,
        kube: KwokCluster,
        prometheus: PrometheusServer,
        namespace: str,
        state: Path,
        *source: str,
    ) -> None:
        self.state = state
        self.job = f"podrunner-{namespace}"
        self.targets_file = prometheus.targets_dir / f"{self.job}.json"
        self.log_path = state / "runner.log"
        state.mkdir(parents=True, exist_ok=True)
        command = [
            *modeldeploy_command(), "dev", "pod-runner",
            *(source or ("--image-map", str(IMAGE_MAP))), "--namespace", namespace,
            "--kubeconfig", str(kube.kubeconfig),
            "--targets-dir", str(prometheus.targets_dir), "--job", self.job,
            "--state-dir", str(state), "--max-processes", "5",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 300) -> None:
        """Until it watches pods (its images prepared, its kwok Stage made)."""
        wait_for(
            lambda: self.process.poll() is None and "watching pods with" in self.log(),
            timeout=timeout, what=f"the pod runner started:\n{self.log()}",
        )  # fmt: skip

    def endpoints(self, md_name: str = "churn") -> list[Endpoint]:
        assert self.process.poll() is None, f"pod runner exited:\n{self.log()}"
        return [e for e in read_endpoints(self.state / ENDPOINTS_FILE) if e.name == md_name]

    def targets(self) -> list[Body]:
        groups: list[Body] = json.loads(self.targets_file.read_text())
        return groups

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def pods(kube: KwokCluster, namespace: str, md_name: str) -> list[Body]:
    items: list[Body] = kube.get_json("pods", "-n", namespace, "-l", f"{LABEL_NAME}={md_name}")[
        "items"
    ]
    return items


def container_status(kube: KwokCluster, namespace: str, md_name: str) -> list[Body]:
    return [p["status"]["containerStatuses"][0] for p in pods(kube, namespace, md_name)]


def runner_containers(state: Path) -> list[Body]:
    listed = subprocess.run(
        ["podman", "ps", "-a", "--format", "json", "--filter",
         f"label={RUNNER_LABEL}={runner_label(state)}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    found: list[Body] = json.loads(listed.stdout or "[]")
    return found
