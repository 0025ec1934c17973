"""Leakage flags on the churn example: its `leaky` variant is flagged and refused, its real
data are not (real `examples/churn/build.py` and `modeldeploy profile` processes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modeldeploy.profiling.leakage import REFUSED_EXIT_CODE
from modeldeploy.serving.process import modeldeploy_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BUILD = Path(__file__).resolve().parents[2] / "examples" / "churn" / "build.py"


def build(out: Path, variant: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BUILD), str(out), "--variant", variant, "--rows", "3000"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr
    return result


def profile(model_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    data = model_dir.parent / "data" / "train.csv"
    command = [*modeldeploy_command(), "profile", "--model-dir", str(model_dir),
               "--data", str(data), "--target", "churned", "--seed", "7", *extra]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("churn-leaky")
    return out / "model", build(out, "leaky").stderr


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("churn-healthy")
    return out / "model", build(out, "healthy").stderr


def test_the_leaky_variant_is_flagged_with_the_reason(leaky: tuple[Path, str]) -> None:
    model_dir, warnings = leaky
    assert (
        "warning: leakage: last_change_hour alone predicts churned with a balanced accuracy of "
        "1.000, at least 0.95" in warnings
    )
    assert (
        "warning: leakage: 100% of the rows with churned = churn have last_change_hour = 0, "
        "against 0.0% of the other rows" in warnings
    )
    flags = json.loads((model_dir / "profile.json").read_text())["leakage"]
    assert [(f["feature"], f["kind"]) for f in flags] == [
        ("last_change_hour", "separates-label"),
        ("last_change_hour", "class-concentrated"),
    ]


def test_refuse_leaky_writes_no_profile_of_the_leaky_variant(leaky: tuple[Path, str]) -> None:
    model_dir, _ = leaky
    (model_dir / "profile.json").unlink()
    result = profile(model_dir, "--refuse-leaky")
    assert result.returncode == REFUSED_EXIT_CODE, result.stderr
    assert "leakage: last_change_hour alone predicts churned" in result.stderr
    assert "refusing training data whose feature(s) leak the label: last_change_hour" in (
        result.stderr
    )
    assert not (model_dir / "profile.json").exists()


def test_the_real_churn_data_are_not_flagged(healthy: tuple[Path, str]) -> None:
    model_dir, warnings = healthy
    assert "leakage" not in warnings
    assert "leakage" not in json.loads((model_dir / "profile.json").read_text())
    built = (model_dir / "profile.json").read_text()
    holdout = model_dir.parent / "data" / "holdout.csv"  # as build.py profiles it
    result = profile(model_dir, "--refuse-leaky", "--holdout", str(holdout))
    assert result.returncode == 0, result.stderr
    assert "leakage" not in result.stderr
    assert (model_dir / "profile.json").read_text() == built
