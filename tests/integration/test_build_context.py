"""`modeldeploy build` for real: build contexts from a saved scikit-learn model and its CSV
and from an MLflow model directory (the churn example's, trained here), each served by a
real `modeldeploy serve` on its golden requests; leaky training data refused with nothing
written; and one generated context built with buildah by the project's own image tooling
(devenv/images.py, on the offline base), pushed by digest to the local registry, run by
podman and asked once.
"""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from operator_harness import wait_for

from modeldeploy import __version__
from modeldeploy.devenv.imagemap import load_build_script
from modeldeploy.devenv.images import ensure_context_image
from modeldeploy.devenv.registry import RegistryServer
from modeldeploy.devenv.tools import free_port
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.process import ServerProcess, modeldeploy_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "churn"
ROWS = 2000
READY_S = 120.0  # MLflow's import alone takes seconds on a loaded machine


def build(out: Path, artifact: str, output: Path, *args: Any) -> subprocess.CompletedProcess[str]:
    """`modeldeploy build` of a trained example (OUT/model/ARTIFACT, OUT/data/train.csv)."""
    data = ["--data", out / "data" / "train.csv", "--target", "churned", "--name", "churn"]
    argv = [out / "model" / artifact, *data, "--output", output, *args]
    return subprocess.run(
        [*modeldeploy_command(), "build", *map(str, argv)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """(kind, variant) -> the churn example's OUT directory (model/, data/), built once:
    kind `sklearn` by build.py, `mlflow` by build_formats.py."""
    done: dict[tuple[str, str], Path] = {}

    def train(kind: str, variant: str) -> Path:
        if (kind, variant) not in done:
            out = tmp_path_factory.mktemp(f"{kind}-{variant}")
            if kind == "sklearn":
                load_build_script(EXAMPLE / "build.py", "churn_build").build(
                    out, variant, "1", rows=ROWS
                )
            else:
                script = load_build_script(EXAMPLE / "build_formats.py", "churn_build_formats")
                script.build(out, kind, variant, "1", rows=ROWS)
            done[kind, variant] = out
        return done[kind, variant]

    return train


def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def _answers_its_golden_requests(model_dir: Path) -> None:
    """Ready (warm-up replays the golden requests) and one of them answered as recorded."""
    profile = Profile.model_validate_json((model_dir / "profile.json").read_bytes())
    golden = profile.golden[0]
    with ServerProcess(model_dir) as server:
        server.wait_ready(READY_S)
        answer = httpx.post(f"{server.url}/v2/models/churn/infer", json=golden.request, timeout=10)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    assert outputs["label"] == golden.expected["label"]


def test_a_context_from_a_saved_sklearn_model_and_its_csv(
    trained: Callable[[str, str], Path], tmp_path: Path
) -> None:
    out = trained("sklearn", "healthy")
    context = tmp_path / "context"
    holdout = out / "data" / "holdout.csv"
    done = build(out, "model.joblib", context, "--holdout", holdout, "--version", "4")
    assert done.returncode == 0, done.stderr
    assert "sklearn model, modeldeploy[serve,sklearn], 9 golden requests" in done.stdout
    assert _files(context) == {
        "Containerfile", "model/model.yaml", "model/profile.json", "model/model.joblib",
    }  # fmt: skip
    config = yaml.safe_load((context / "model" / "model.yaml").read_text())
    assert config == {
        "name": "churn", "version": "4", "framework": "sklearn", "artifact": "model.joblib",
    }  # fmt: skip
    profile = Profile.model_validate_json((context / "model" / "profile.json").read_bytes())
    header = (out / "data" / "train.csv").read_text().splitlines()[0].split(",")
    assert [f.name for f in profile.features] == [n for n in header if n != "churned"]
    assert profile.quality is not None
    assert profile.quality.holdout_accuracy > 0.8
    assert profile.leakage is None
    containerfile = (context / "Containerfile").read_text()
    assert f'"modeldeploy[serve,sklearn]=={__version__}"' in containerfile
    assert "mlflow" not in containerfile
    _answers_its_golden_requests(context / "model")


def test_a_context_from_an_mlflow_model_directory(
    trained: Callable[[str, str], Path], tmp_path: Path
) -> None:
    out = trained("mlflow", "healthy")
    context = tmp_path / "context"
    done = build(out, "mlflow-model", context)
    assert done.returncode == 0, done.stderr
    assert "mlflow model, modeldeploy[serve,mlflow,sklearn]" in done.stdout
    files = _files(context)
    assert {"Containerfile", "model/model.yaml", "model/profile.json"} <= files
    assert "model/mlflow-model/MLmodel" in files
    config = yaml.safe_load((context / "model" / "model.yaml").read_text())
    assert (config["framework"], config["artifact"]) == ("mlflow", "mlflow-model")
    profile = Profile.model_validate_json((context / "model" / "profile.json").read_bytes())
    assert profile.output.task == "classification"
    assert profile.output.confidence is not None  # logged with predict_proba
    containerfile = (context / "Containerfile").read_text()
    assert "MLFLOW_DISABLE_TELEMETRY=true" in containerfile
    assert '"mlflow-skinny==' in containerfile
    _answers_its_golden_requests(context / "model")


def test_leaky_training_data_are_refused_and_nothing_is_written(
    trained: Callable[[str, str], Path], tmp_path: Path
) -> None:
    out = trained("sklearn", "leaky")
    parent = tmp_path / "contexts"
    parent.mkdir()
    refused = build(out, "model.joblib", parent / "leaky")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "leak the label: last_change_hour" in refused.stderr
    assert "leakage: " in refused.stderr  # each flag's reason
    assert list(parent.iterdir()) == []  # no context, no staging directory left


@pytest.fixture(scope="module")
def runtime_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's modeldeploy wheel (no release of it is on the package index)."""
    out = tmp_path_factory.mktemp("wheel")
    uv = subprocess.run(
        [ROOT / "hack" / "pyenv.sh", "uv"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {**os.environ, "PATH": f"{Path(uv).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--installer", "uv", "--outdir", out, ROOT],
        env=env, capture_output=True, timeout=300, check=True,
    )  # fmt: skip
    return out / f"modeldeploy-{__version__}-py3-none-any.whl"


def test_a_generated_context_builds_into_an_image_that_serves(
    trained: Callable[[str, str], Path],
    runtime_wheel: Path,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    out = trained("sklearn", "healthy")
    context = tmp_path / "context"
    done = build(out, "model.joblib", context, "--wheel", runtime_wheel)
    assert done.returncode == 0, done.stderr
    assert f"wheels/{runtime_wheel.name}" in _files(context)
    image = ensure_context_image(registry, context, "ml/churn-built", "1", print)
    reference = image.reference(registry.host)
    pulled = subprocess.run(
        ["podman", "pull", "--tls-verify=false", reference],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    port = free_port()
    name = f"md-test-built-{port}"
    started = subprocess.run(
        [
            "podman", "run", "-d", "--rm", "--name", name, "--network", "host", "--read-only",
            "--tmpfs", "/tmp", "-e", f"MODELDEPLOY_PORT={port}", "-e", "MODELDEPLOY_HOST=127.0.0.1",
            reference,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    golden = Profile.model_validate_json((context / "model" / "profile.json").read_bytes())
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5) as http:

            def ready() -> bool:
                try:
                    return http.get("/v2/models/churn/ready").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, timeout=120, interval=0.2, what="the built image's container Ready")
            answer = http.post("/v2/models/churn/infer", json=golden.golden[-1].request)
            metadata = http.get("/v2/models/churn").json()
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", name], capture_output=True, check=False)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    assert outputs["label"] == golden.golden[-1].expected["label"]  # the batch of all rows
    assert (metadata["platform"], metadata["versions"]) == ("sklearn", ["1"])
    print(
        f"\nbuilt {reference}: {image.compressed_bytes / 2**20:.0f} MiB compressed, "
        f"{'cached' if image.cached else f'built in {image.build_seconds:.0f} s'}"
    )
