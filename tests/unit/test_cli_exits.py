"""Exit codes of the CLI: apiserver answers -> error classes, --wait-for outcomes, and the
boundary that turns every failure into a message and a code (never a traceback)."""

import json
from pathlib import Path
from typing import Any, get_args

import pytest
from typer.testing import CliRunner

from modeldeploy.api import KillSwitch, Phase
from modeldeploy.cli import app
from modeldeploy.console.access import unreachable_reason
from modeldeploy.console.commands import KillMode, WaitPhase, parse_timeout, program_name
from modeldeploy.console.exits import MEANINGS, ExitCode, api_error, exit_codes_help, wait_outcome

pytestmark = pytest.mark.unit

WHERE = "in namespace ml (context dev, https://127.0.0.1:6443)"


def status_body(code: int, reason: str, message: str) -> str:
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
         "reason": reason, "message": message}
    )  # fmt: skip


def test_codes_are_distinct_documented_and_stable() -> None:
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0, "INTERNAL": 1, "USAGE": 2, "ROLLOUT_FAILED": 3, "TIMEOUT": 4, "NOT_FOUND": 5,
        "FORBIDDEN": 6, "UNREACHABLE": 7, "CONFIG": 8, "NO_CRD": 9, "REFUSED": 10,
        "API_ERROR": 11,
    }  # fmt: skip
    assert set(MEANINGS) == set(ExitCode)
    text = exit_codes_help()
    assert "  3  --wait-for: the rollout ended otherwise" in text
    assert "  4  --wait-for: not reached within --timeout" in text


def test_docs_list_every_code() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} | {MEANINGS[code]} |" in docs


@pytest.mark.parametrize(
    ("status", "body", "code", "says"),
    [
        (404, status_body(404, "NotFound", 'modeldeployments.modeldeploy.io "churn" not found'),
         ExitCode.NOT_FOUND, f"modeldeployment churn not found {WHERE}"),
        (404, "404 page not found\n", ExitCode.NO_CRD, "the CRD is not installed"),
        (404, None, ExitCode.NO_CRD, "does not serve ModelDeployments"),
        (403, status_body(403, "Forbidden", 'User "dev" cannot patch resource "modeldeployments"'),
         ExitCode.FORBIDDEN, 'no permission: User "dev" cannot patch resource'),
        (401, status_body(401, "Unauthorized", "Unauthorized"), ExitCode.FORBIDDEN, "401"),
        (422, status_body(422, "Invalid", "spec.killSwitch.mode: killSwitch.mode fallback needs"),
         ExitCode.REFUSED, "refused the change to modeldeployment churn: spec.killSwitch.mode"),
        (500, "boom", ExitCode.API_ERROR, "failed on modeldeployment churn"),
        (409, status_body(409, "Conflict", "the object has been modified"), ExitCode.API_ERROR,
         "the object has been modified"),
    ],
)  # fmt: skip
def test_api_answers_map_to_classes(
    status: int, body: str | None, code: ExitCode, says: str
) -> None:
    error = api_error(status, body, what="modeldeployment churn", where=WHERE)
    assert error.code is code
    assert says in error.message
    assert error.http_status == status


def view(phase: str, **fields: Any) -> dict[str, Any]:
    return {"name": "churn", "phase": phase, "message": "", "upToDate": True, **fields}


@pytest.mark.parametrize(
    ("current", "target", "code"),
    [
        (view("Stable"), "Stable", ExitCode.OK),
        (view("Progressing"), "Stable", None),
        (view("Paused"), "Stable", None),
        (view("Degraded"), "Stable", None),  # pods may come back
        (view("RolledBack"), "Stable", ExitCode.ROLLOUT_FAILED),
        (view("Killed"), "Stable", ExitCode.ROLLOUT_FAILED),
        (view("Stable"), "RolledBack", ExitCode.ROLLOUT_FAILED),  # promoted instead
        (view("RolledBack"), "RolledBack", ExitCode.OK),
        (view("Stable", upToDate=False), "Stable", None),  # status of the previous spec
        (view("RolledBack", upToDate=False), "Stable", None),
        (view("RolledBack", pendingCommands={"modeldeploy.io/retry": "9a"}), "Stable", None),
        (view(""), "Stable", None),  # no status yet
    ],
)
def test_wait_outcome(current: dict[str, Any], target: str, code: ExitCode | None) -> None:
    assert wait_outcome(current, target)[0] is code


def test_wait_outcome_says_why() -> None:
    _, why = wait_outcome(
        view("RolledBack", message="9a rolled back (latency-p99 720 > 600)"), "Stable"
    )
    assert why == "churn is RolledBack: 9a rolled back (latency-p99 720 > 600) (waited for Stable)"
    assert (
        "not yet observed generation 4"
        in wait_outcome(
            view("Stable", upToDate=False, generation=4, observedGeneration=3), "Stable"
        )[1]
    )


def test_choices_follow_the_api() -> None:
    assert [p.value for p in WaitPhase] == list(get_args(Phase))
    mode = KillSwitch.model_fields["mode"].annotation
    assert [m.value for m in KillMode] == list(get_args(mode))


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300), ("90s", 90), ("5m", 300), ("1h30m", 5400)]
)
def test_timeouts(text: str, seconds: float) -> None:
    assert parse_timeout(text) == seconds


def test_program_name_as_kubectl_plugin() -> None:
    assert program_name("/usr/local/bin/kubectl-modeldeploy") == "kubectl modeldeploy"
    assert program_name("/venv/bin/modeldeploy") == "modeldeploy"


def test_unreachable_reasons_are_short() -> None:
    class NewConnectionError(Exception):
        pass

    class MaxRetryError(Exception):
        reason = NewConnectionError(
            "<HTTPSConnection object at 0x7f>: Failed to establish a new connection: "
            "[Errno 111] Connection refused"
        )

    assert unreachable_reason(MaxRetryError()) == "Connection refused"
    assert unreachable_reason(TimeoutError("read timed out. (read timeout=30)")) == "timed out"


# --- the boundary, in process (no cluster needed for these) ------------------------------

runner = CliRunner()


def test_missing_kubeconfig_is_a_config_error_without_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "churn", "--kubeconfig", str(tmp_path / "none")])
    assert result.exit_code == ExitCode.CONFIG
    assert f"error: no kubeconfig at {tmp_path / 'none'}" in result.stderr
    assert "Traceback" not in result.output


def test_malformed_kubeconfig_and_unknown_context(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("clusters: [\n")
    result = runner.invoke(app, ["list", "--kubeconfig", str(bad)])
    assert result.exit_code == ExitCode.CONFIG
    assert f"cannot read the kubeconfig {bad}" in result.stderr
    good = tmp_path / "kubeconfig"
    good.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: dev, context: {cluster: c, user: u}}]\n"
    )
    result = runner.invoke(app, ["history", "churn", "--kubeconfig", str(good), "--context", "x"])
    assert result.exit_code == ExitCode.CONFIG
    assert "context 'x' is not in the kubeconfig" in result.stderr
    assert "hint: its contexts: dev" in result.stderr


def test_bad_options_are_usage_errors() -> None:
    result = runner.invoke(app, ["status", "churn", "--wait-for", "Done"])
    assert result.exit_code == ExitCode.USAGE
    result = runner.invoke(app, ["status", "churn", "--timeout", "soon"])
    assert result.exit_code == ExitCode.USAGE
    assert "not a duration" in result.output


def test_unexpected_errors_are_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("kaputt")

    monkeypatch.setattr("modeldeploy.console.access._configure", broken)
    result = runner.invoke(app, ["list"])
    assert result.exit_code == ExitCode.INTERNAL
    assert "error: unexpected RuntimeError: kaputt" in result.stderr
    assert "MODELDEPLOY_DEBUG=1" in result.stderr
    assert "Traceback" not in result.output


def test_reports_prometheus_options_are_the_operators_and_checked_before_any_read(
    tmp_path: Path,
) -> None:
    """Wrong credentials options stop `report` with a usage error before it reads the cluster
    (here: none is reachable) or asks Prometheus."""
    base = ["report", "churn", "--prometheus-url", "http://127.0.0.1:9"]
    base += ["--kubeconfig", str(tmp_path / "none")]
    result = runner.invoke(app, [*base, "--prometheus-auth-type", "digest"])
    assert result.exit_code == ExitCode.USAGE
    assert "--prometheus-auth-type must be one of none, bearer, basic" in result.stderr
    result = runner.invoke(
        app, [*base, "--prometheus-auth-type", "bearer", "--prometheus-auth-dir", str(tmp_path)]
    )
    assert result.exit_code == ExitCode.USAGE
    assert f"cannot read Prometheus: cannot read {tmp_path / 'token'}" in result.stderr
    (tmp_path / "ca.pem").write_text("")
    result = runner.invoke(
        app,
        [*base, "--prometheus-ca-file", str(tmp_path / "ca.pem"),
         "--prometheus-insecure-skip-verify"],
    )  # fmt: skip
    assert result.exit_code == ExitCode.USAGE
    assert "a CA file or skip its verification, not both" in result.stderr
    # With readable credentials the options pass and the next step, the cluster, fails.
    (tmp_path / "token").write_text("t0ken\n")
    result = runner.invoke(
        app, [*base, "--prometheus-auth-type", "bearer", "--prometheus-auth-dir", str(tmp_path)]
    )
    assert result.exit_code == ExitCode.CONFIG
    assert "Traceback" not in result.output


def test_operator_refuses_a_proxy_image_that_is_no_image_reference() -> None:
    result = CliRunner().invoke(app, ["operator", "--proxy-image", "Registry Example/Proxy:1"])
    assert result.exit_code == 2
    assert "--proxy-image 'Registry Example/Proxy:1' is not a container image" in result.output
