"""Exit codes, one per class of outcome, so that a CI job can tell a rollout that failed
from one that ran out of time and from a cluster it could not reach.

Every failure a person can act on is a `CliError`: a message that says what happened in
their terms (never a traceback) and the code of its class.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    ROLLOUT_FAILED = 3
    TIMEOUT = 4
    NOT_FOUND = 5
    FORBIDDEN = 6
    UNREACHABLE = 7
    CONFIG = 8
    NO_CRD = 9
    REFUSED = 10
    API_ERROR = 11


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done; with --wait-for: the phase was reached",
    ExitCode.INTERNAL: "unexpected error (a bug; MODELDEPLOY_DEBUG=1 shows the traceback)",
    ExitCode.USAGE: "bad command line (unknown option, bad value)",
    ExitCode.ROLLOUT_FAILED: "--wait-for: the rollout ended otherwise (RolledBack, Killed...)",
    ExitCode.TIMEOUT: "--wait-for: not reached within --timeout",
    ExitCode.NOT_FOUND: "no such ModelDeployment",
    ExitCode.FORBIDDEN: "no permission (403) or not authenticated (401)",
    ExitCode.UNREACHABLE: "cluster unreachable (connection refused, timeout, TLS)",
    ExitCode.CONFIG: "bad kubeconfig or context",
    ExitCode.NO_CRD: "the ModelDeployment CRD is not installed in the cluster",
    ExitCode.REFUSED: "the command does not apply now (e.g. no rollout to abort), or the "
    "apiserver rejected the change",
    ExitCode.API_ERROR: "other apiserver error (5xx, conflicts that persisted)",
}


def exit_codes_help() -> str:
    """The table of exit codes, for --help epilogs and docs."""
    return "Exit codes:\n\n" + "\n".join(f"{int(code):>3}  {MEANINGS[code]}" for code in ExitCode)


@dataclass
class CliError(Exception):
    code: ExitCode
    message: str
    hint: str = ""
    http_status: int | None = None
    """The apiserver's status code, when the error is its answer."""

    def __str__(self) -> str:
        return self.message


def _status_object(body: str | bytes | None) -> dict[str, Any] | None:
    """The apiserver's `Status` object in an error body, if it is one."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == "Status" else None


def api_error(
    status: int,
    body: str | bytes | None,
    *,
    what: str,
    where: str,
    api: str = "modeldeploy.io/v1alpha1",
) -> CliError:
    """The CliError of a failed API call.

    `what` names the object or collection the call was about, e.g. "modeldeployment churn",
    `where` the namespace and context, e.g. "in namespace ml (context kwok-dev)".

    A 404 is "no such object" when the apiserver answers with a NotFound Status; a bare
    "404 page not found" means nothing serves the path: the CRD is not installed.
    """
    return replace(_api_error(status, body, what, where, api), http_status=status)


def _api_error(status: int, body: str | bytes | None, what: str, where: str, api: str) -> CliError:
    obj = _status_object(body)
    message = str(obj.get("message") or "") if obj else ""
    if status == 404:
        if obj is not None and obj.get("reason") == "NotFound":
            return CliError(
                ExitCode.NOT_FOUND,
                f"{what} not found {where}",
                "`modeldeploy list` shows the ModelDeployments of a namespace (-A: all)",
            )
        return CliError(
            ExitCode.NO_CRD,
            f"the cluster does not serve ModelDeployments ({api}) {where}: "
            "the CRD is not installed",
            "install it: kubectl apply --server-side -f crds/ (or the Helm chart)",
        )
    if status == 401:
        return CliError(
            ExitCode.FORBIDDEN,
            f"the cluster did not accept the credentials {where} (401 Unauthorized)",
            "log in again or check the user entry of the kubeconfig",
        )
    if status == 403:
        return CliError(
            ExitCode.FORBIDDEN,
            f"no permission: {message or f'access to {what} is forbidden'}",
            "ask for a Role that grants this verb on modeldeployments.modeldeploy.io",
        )
    if status in (400, 422):
        return CliError(
            ExitCode.REFUSED, f"the apiserver refused the change to {what}: {message or status}"
        )
    return CliError(
        ExitCode.API_ERROR,
        f"the apiserver failed on {what} {where}: {status} {message}".rstrip(),
    )


SETTLED_PHASES = ("Stable", "RolledBack", "Killed")
"""Phases in which a rollout is over (for the spec observed): none is left by itself."""


def wait_outcome(view: Mapping[str, Any], target: str) -> tuple[ExitCode | None, str]:
    """Whether `status --wait-for target` is done: (OK, why) when the phase is reached,
    (ROLLOUT_FAILED, why) when the rollout settled otherwise (e.g. RolledBack while waiting
    for Stable), (None, why) while waiting.

    A status older than the spec (observedGeneration behind generation), or with a command
    annotation the operator has not consumed yet, never counts: it describes the past."""
    name, phase = view.get("name", "?"), view.get("phase") or ""
    if not phase:
        return None, f"{name} has no status yet (is the operator running?)"
    if not view.get("upToDate"):
        return None, (
            f"{name}: the operator has not yet observed generation {view.get('generation')} "
            f"(status is of {view.get('observedGeneration')})"
        )
    pending = ", ".join(f"{k}={v}" for k, v in (view.get("pendingCommands") or {}).items())
    if pending:
        return None, f"{name}: the operator has not yet acted on {pending}"
    message = view.get("message") or ""
    now = f"{name} is {phase}" + (f": {message}" if message else "")
    if phase == target:
        return ExitCode.OK, now
    if phase in SETTLED_PHASES:
        return ExitCode.ROLLOUT_FAILED, f"{now} (waited for {target})"
    return None, now
