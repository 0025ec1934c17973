"""The CLI with the real operator running: `status --wait-for` exit codes on real rollouts,
and the steering commands acted on by the operator (promote --full, abort, kill/unkill,
retry)."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    OperatorProcess,
    apply_object,
    ensure_crd,
    ensure_namespace,
    model_deployment,
    patch_model_deployment,
)

from modeldeploy.console.exits import ExitCode
from modeldeploy.devenv.cluster import KwokCluster

pytestmark = pytest.mark.integration

NAMESPACE = "cli-operator"
NAME = "churn"
HOLD = {"canary": {"steps": [25, 50]}, "stepInterval": "10m", "bakeTime": "2s"}
"""Steps long enough that only a person moves the rollout on."""


def modeldeploy(kube: KwokCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `modeldeploy` program, as a CI job would run it."""
    script = Path(sys.executable).parent / "modeldeploy"
    return subprocess.run(
        [str(script), *args, "-n", NAMESPACE, "--kubeconfig", str(kube.kubeconfig)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def wait_for(
    kube: KwokCluster, phase: str, timeout: str = "90s"
) -> subprocess.CompletedProcess[str]:
    return modeldeploy(kube, "status", NAME, "--wait-for", phase, "--timeout", timeout,
                       "--interval", "0.5")  # fmt: skip


def view(kube: KwokCluster) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(modeldeploy(kube, "status", NAME, "-o", "json").stdout)
    return data


def set_image(kube: KwokCluster, tag: str) -> None:
    spec = {"image": f"registry.example/churn:{tag}", "rollout": HOLD}
    patch_model_deployment(kube, NAMESPACE, NAME, {"spec": spec})


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    ensure_crd(kube)
    ensure_namespace(kube, NAMESPACE)
    with OperatorProcess(kube, NAMESPACE, Path(tmp_path_factory.mktemp(NAMESPACE))) as op:
        apply_object(kube, model_deployment(NAME, NAMESPACE, "registry.example/churn:1"))
        yield op
    kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_wait_for_stable_on_a_new_model_deployment(operator: OperatorProcess) -> None:
    run = wait_for(operator.kube, "Stable")
    assert run.returncode == ExitCode.OK, run.stderr
    assert f"{NAME} in {NAMESPACE}: Stable" in run.stdout


def test_promote_full_then_stable(operator: OperatorProcess) -> None:
    kube = operator.kube
    set_image(kube, "2")
    assert wait_for(kube, "Progressing").returncode == ExitCode.OK
    canary = view(kube)["canaryRevision"]
    refused = modeldeploy(kube, "promote", NAME)
    assert refused.returncode == ExitCode.REFUSED
    assert "with steps ahead (50%)" in refused.stderr
    promoted = modeldeploy(kube, "promote", NAME, "--full")
    assert promoted.returncode == ExitCode.OK, promoted.stderr
    run = wait_for(kube, "Stable")
    assert run.returncode == ExitCode.OK, run.stderr
    assert view(kube)["stableRevision"] == canary
    history = json.loads(modeldeploy(kube, "history", NAME, "-o", "json").stdout)["items"]
    assert (history[-1]["event"], history[-1]["revision"]) == ("Promoted", canary)


def test_abort_makes_wait_for_stable_fail(operator: OperatorProcess) -> None:
    kube = operator.kube
    set_image(kube, "3")
    assert wait_for(kube, "Progressing").returncode == ExitCode.OK
    canary = view(kube)["canaryRevision"]
    assert modeldeploy(kube, "abort", NAME).returncode == ExitCode.OK
    run = wait_for(kube, "Stable")
    assert run.returncode == ExitCode.ROLLOUT_FAILED, run.stderr
    assert f"error: {NAME} is RolledBack" in run.stderr
    explained = modeldeploy(kube, "explain-verdict", NAME)
    assert f"{canary} was aborted at" in explained.stdout
    assert "aborted by modeldeploy.io/abort" in explained.stdout


def test_kill_unkill_and_retry(operator: OperatorProcess) -> None:
    kube = operator.kube
    assert modeldeploy(kube, "kill", NAME).returncode == ExitCode.OK
    assert wait_for(kube, "Killed").returncode == ExitCode.OK
    assert wait_for(kube, "Stable", timeout="5s").returncode == ExitCode.ROLLOUT_FAILED
    assert modeldeploy(kube, "unkill", NAME).returncode == ExitCode.OK
    assert wait_for(kube, "RolledBack").returncode == ExitCode.OK
    assert modeldeploy(kube, "retry", NAME).returncode == ExitCode.OK
    run = wait_for(kube, "Progressing")
    assert run.returncode == ExitCode.OK, run.stderr
    assert view(kube)["failedRevision"] is None
