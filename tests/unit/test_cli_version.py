"""`modeldeploy version` (also as `kubectl modeldeploy version`): the version alone for
people and scripts, and with -o json what a bug report needs."""

import json
import subprocess
import sys
from importlib.metadata import version

import pytest
import yaml
from typer.testing import CliRunner

from modeldeploy import __version__
from modeldeploy.cli import app, command_line
from modeldeploy.console.version import REPORTED_LIBRARIES, installed_version, version_report

pytestmark = pytest.mark.unit

runner = CliRunner()


def test_prints_the_package_version_alone() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout == f"{__version__}\n"


@pytest.mark.parametrize("option", ["-o", "--output"])
def test_json_reports_python_platform_and_libraries(option: str) -> None:
    result = runner.invoke(app, ["version", option, "json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["version"] == __version__
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["python"]["executable"] == sys.executable
    assert report["platform"]
    # The dev environment has all of them.
    assert report["libraries"] == {name: version(name) for name in REPORTED_LIBRARIES}


def test_yaml_is_the_same_report() -> None:
    result = runner.invoke(app, ["version", "-o", "yaml"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout) == version_report()


def test_a_missing_library_is_null() -> None:
    assert installed_version("modeldeploy-no-such-distribution") is None


def test_bad_output_is_a_usage_error() -> None:
    result = runner.invoke(app, ["version", "-o", "xml"])
    assert result.exit_code == 2


def test_as_kubectl_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["/venv/bin/kubectl-modeldeploy", "version"])
    with pytest.raises(SystemExit) as exited:
        command_line()
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"{__version__}\n"


def test_imports_none_of_the_operators_libraries() -> None:
    """It must work in a model image (no kopf, no kubernetes client) and stay fast."""
    script = (
        "import sys; from modeldeploy.cli import main; sys.argv = ['modeldeploy', 'version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kopf', 'kubernetes'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == [__version__, "[]"]
