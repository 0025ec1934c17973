"""The distributions of this checkout, as a user gets them: sdist and wheel built with
`python -m build`, checked by `twine check`, the wheel holding the package and nothing
else, and installed with its [operator] extra into a fresh virtualenv whose `modeldeploy`
(also as `kubectl modeldeploy`) runs. No cluster; slow (builds and installs), hence
integration. uv installs from its warm cache, so this works offline once the dev
environment exists."""

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Mapping
from email.parser import HeaderParser
from pathlib import Path

import pytest

from modeldeploy import __version__
from modeldeploy.devenv.tools import Toolchain

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "modeldeploy"
DIST_INFO = f"modeldeploy-{__version__}.dist-info"
SDIST_TOP = f"modeldeploy-{__version__}"
# Besides operator/modeldeploy and its egg-info: what an sdist of this project may hold.
SDIST_FILES = {"PKG-INFO", "pyproject.toml", "README.md", "LICENSE", "setup.cfg"}


def run(command: list[str | Path], env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,  # the assertion below shows the output
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def uv() -> Path:
    return Path(run([ROOT / "hack" / "pyenv.sh", "uv"]).strip())


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, uv: Path) -> Path:
    """sdist, then the wheel built from that sdist (so a file missing from the sdist shows)."""
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "PATH": f"{uv.parent}{os.pathsep}{os.environ['PATH']}"}
    run([sys.executable, "-m", "build", "--installer", "uv", "--outdir", out, ROOT], env)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    return dist / f"modeldeploy-{__version__}-py3-none-any.whl"


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    return dist / f"modeldeploy-{__version__}.tar.gz"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, uv: Path, wheel: Path) -> Path:
    """A fresh virtualenv with nothing but the wheel and its [operator] extra."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    run([uv, "venv", "-q", "--python", sys.executable, path])
    run([uv, "pip", "install", "-q", "--python", path / "bin" / "python", f"{wheel}[operator]"])
    return path


def test_twine_check_passes(wheel: Path, sdist: Path) -> None:
    out = run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist])
    assert out.count("PASSED") == 2


def test_wheel_holds_the_package_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package = {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyi"), PACKAGE / "py.typed"]
        if "__pycache__" not in path.parts
    }
    assert {n for n in names if not n.startswith(f"{DIST_INFO}/")} == package
    assert {n.removeprefix(f"{DIST_INFO}/") for n in names if n.startswith(DIST_INFO)} == {
        "METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt", "licenses/LICENSE"
    }  # fmt: skip


def test_wheel_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = HeaderParser().parsestr(archive.read(f"{DIST_INFO}/METADATA").decode())
        entry_points = archive.read(f"{DIST_INFO}/entry_points.txt").decode()
    assert metadata["Name"] == "modeldeploy"
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().startswith("# modeldeploy")  # the README
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}
    classifiers = metadata.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Typing :: Typed" in classifiers
    assert set(metadata.get_all("Provides-Extra") or []) == {
        "operator", "serve", "grpc", "sklearn", "explain", "xgboost", "lightgbm", "onnx",
        "mlflow", "profile", "report", "otel", "dev", "bench",
    }  # fmt: skip
    assert "modeldeploy = modeldeploy.cli:main" in entry_points
    assert "kubectl-modeldeploy = modeldeploy.cli:main" in entry_points


def test_sdist_holds_the_sources_only(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        files = {m.name.removeprefix(f"{SDIST_TOP}/") for m in archive.getmembers() if m.isfile()}
    strays = {
        f
        for f in files - SDIST_FILES
        if not f.startswith(("operator/modeldeploy/", "operator/modeldeploy.egg-info/"))
    }
    assert strays == set()
    assert {"LICENSE", "README.md", "operator/modeldeploy/py.typed"} <= files


def test_installed_wheel_runs(venv: Path, tools: Toolchain) -> None:
    bin_dir = venv / "bin"
    # Nothing from this checkout or the dev venv: only the fresh venv (and kubectl) on PATH.
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{tools.kube_bin}{os.pathsep}/usr/bin:/bin",
        "HOME": os.environ["HOME"],
    }
    assert run([bin_dir / "modeldeploy", "version"], env).strip() == __version__
    assert run([bin_dir / "kubectl-modeldeploy", "version"], env).strip() == __version__
    assert run([tools.kubectl, "modeldeploy", "version"], env).strip() == __version__
    report = json.loads(run([bin_dir / "modeldeploy", "version", "-o", "json"], env))
    assert report["version"] == __version__
    assert report["python"]["executable"] == str(bin_dir / "python")
    assert all(report["libraries"].values()), report["libraries"]  # [operator] brings them
    assert "Run the operator" in run([bin_dir / "modeldeploy", "operator", "--help"], env)
    # The operator's modules import with the extra's dependencies alone, from the venv.
    where = run(
        [bin_dir / "python", "-c", "import modeldeploy.handlers as h; print(h.__file__)"], env
    )
    assert where.startswith(str(venv / "lib"))
