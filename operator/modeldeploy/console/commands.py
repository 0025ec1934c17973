"""The typer commands: list, status, history, explain-verdict, report, promote, approve, abort,
pause, resume, retry, kill, unkill, version. `register(app)` adds them to the `modeldeploy` app.

Each command is a thin shell: read through `access`, decide with the pure modules, print.
Failures leave through `boundary()`: a message on stderr and the exit code of its class
(never a traceback; MODELDEPLOY_DEBUG=1 shows one for unexpected errors).

Only typer and the standard library are imported here at module level: `modeldeploy serve`
imports this module too (registration), and model images have no kubernetes client.
"""

import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.exceptions import TyperException

from modeldeploy.console.completion import complete_names
from modeldeploy.console.exits import CliError, ExitCode, exit_codes_help
from modeldeploy.console.prometheus_options import (
    PrometheusAuthDir,
    PrometheusAuthType,
    PrometheusCaFile,
    PrometheusInsecureSkipVerify,
    PrometheusNamespaceLabel,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from modeldeploy.console.access import Cluster, Target
    from modeldeploy.console.steering import Change

DEBUG_ENV = "MODELDEPLOY_DEBUG"
DEFAULT_TIMEOUT = "5m"
EPILOG = exit_codes_help()


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class WaitPhase(StrEnum):
    """The phases of modeldeploy.api.Phase (a unit test keeps them equal; the API is not
    imported here, see the module docstring)."""

    Pending = "Pending"
    Progressing = "Progressing"
    Paused = "Paused"
    Promoting = "Promoting"
    Stable = "Stable"
    RolledBack = "RolledBack"
    Killed = "Killed"
    Degraded = "Degraded"


class KillMode(StrEnum):
    """modeldeploy.api.KillSwitch.mode (a unit test keeps them equal)."""

    scaleToZero = "scaleToZero"
    fallback = "fallback"


Name = Annotated[
    str,
    typer.Argument(
        help="Name of the ModelDeployment.",
        metavar="NAME",
        show_default=False,
        autocompletion=complete_names,
    ),
]
OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="table for people; json or yaml for scripts.")
]
KEYWORD = inspect.Parameter.KEYWORD_ONLY
TARGET_PARAMETERS = (
    inspect.Parameter(
        "namespace",
        KEYWORD,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--namespace",
                "-n",
                help="Namespace (default: the context's, else default).",
                metavar="NS",
            ),
        ],
    ),
    inspect.Parameter(
        "context",
        KEYWORD,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option("--context", help="kubeconfig context (default: the current one)."),
        ],
    ),
    inspect.Parameter(
        "kubeconfig",
        KEYWORD,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)."
            ),
        ],
    ),
    inspect.Parameter(
        "as_user",
        KEYWORD,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option("--as", help="Impersonate this user, as kubectl --as.", metavar="USER"),
        ],
    ),
)


def targeted(command: Callable[..., None]) -> Callable[..., None]:
    """`command(..., target)` as a typer command with kubectl's --namespace/-n, --context,
    --kubeconfig and --as options in place of `target`, run inside the error boundary."""
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.name != "target"]

    def wrapper(
        *args: Any,
        namespace: str | None = None,
        context: str | None = None,
        kubeconfig: str | None = None,
        as_user: str | None = None,
        **kwargs: Any,
    ) -> None:
        from modeldeploy.console.access import Target

        target = Target(
            kubeconfig=kubeconfig, context=context, namespace=namespace, as_user=as_user
        )
        with boundary():
            command(*args, target=target, **kwargs)

    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*own, *TARGET_PARAMETERS]
    )
    return wrapper


def connected(target: "Target") -> "Cluster":
    from modeldeploy.console.access import Cluster

    return Cluster(target)


def report(error: CliError) -> None:
    typer.secho(f"error: {error.message}", err=True, fg=typer.colors.RED)
    if error.hint:
        typer.secho(f"hint: {error.hint}", err=True)


@contextmanager
def boundary() -> Iterator[None]:
    """Every failure becomes a message on stderr and the exit code of its class."""
    try:
        yield
    except CliError as err:
        report(err)
        raise typer.Exit(int(err.code)) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort, TyperException):  # usage errors: typer reports them
        raise
    except ModuleNotFoundError as err:
        report(
            CliError(
                ExitCode.INTERNAL,
                f"the cluster commands need {err.name}, which is not installed",
                f"pip install 'modeldeploy[{'report' if err.name == 'plotly' else 'operator'}]'",
            )
        )
        raise typer.Exit(int(ExitCode.INTERNAL)) from None
    except Exception as err:
        if os.environ.get(DEBUG_ENV):
            raise
        report(
            CliError(
                ExitCode.INTERNAL,
                f"unexpected {type(err).__name__}: {err}",
                f"this is a bug; {DEBUG_ENV}=1 shows the traceback",
            )
        )
        raise typer.Exit(int(ExitCode.INTERNAL)) from None


def emit(data: Any, output: Output, *, compact: bool = False) -> None:
    """Machine-readable output on stdout (never through rich: no markup, no wrapping).
    `compact`: one JSON document per line, or YAML documents separated by ---."""
    if output is Output.yaml:
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        sys.stdout.write(f"---\n{text}" if compact else text)
    else:
        sys.stdout.write((json.dumps(data) if compact else json.dumps(data, indent=2)) + "\n")
    sys.stdout.flush()


def parse_timeout(text: str) -> float:
    """Seconds from "300", "300s", "5m" or "1h30m"."""
    from modeldeploy.api import parse_duration

    if text.isdigit():
        return float(text)
    try:
        return parse_duration(text).total_seconds()
    except ValueError as err:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 5m or 1h") from err


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# --- reading ----------------------------------------------------------------------------


@targeted
def list_command(
    *,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="In every namespace.")
    ] = False,
    output: OutputOption = Output.table,
    target: "Target",
) -> None:
    """List ModelDeployments with phase, canary share, revisions, step and last verdict."""
    from modeldeploy.console import render, views

    with connected(target) as cluster:
        items = [views.summary(obj) for obj in cluster.model_deployments(all_namespaces)]
        where = "any namespace" if all_namespaces else f"namespace {cluster.namespace}"
    if output is not Output.table:
        emit({"items": items}, output)
    elif not items:
        typer.echo(f"No ModelDeployments found in {where}.", err=True)
    else:
        render.console().print(render.list_view(items, _now(), all_namespaces))


def _status(view: dict[str, Any], obj: dict[str, Any]) -> "RenderableType":
    from modeldeploy.console import render, views

    return render.status_view(view, views.analysis_of(obj), _now())


def _show(view: dict[str, Any], obj: dict[str, Any], output: Output) -> None:
    from modeldeploy.console import render

    if output is Output.table:
        render.console().print(_status(view, obj))
    else:
        emit(view, output)


class _Follower:
    """How `status -w` shows each state: in place on a terminal, else (CI logs, pipes) a
    new block per change; -o json|yaml: one document per change."""

    def __init__(self, output: Output) -> None:
        from rich.live import Live

        from modeldeploy.console import render

        self.output = output
        self.console = render.console()
        live = output is Output.table and self.console.is_terminal
        self.live = Live(console=self.console, auto_refresh=False) if live else None
        self.shown = ""

    def show(self, view: dict[str, Any], obj: dict[str, Any]) -> None:
        state = json.dumps(view, sort_keys=True)
        if self.live is not None:
            self.live.update(_status(view, obj), refresh=True)  # ages tick on every read
        elif state != self.shown:
            if self.output is not Output.table:
                emit(view, self.output, compact=True)
            else:
                if self.shown:
                    self.console.rule(time.strftime("%H:%M:%S"))
                self.console.print(_status(view, obj))
        self.shown = state

    def __enter__(self) -> "_Follower":
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()


@dataclass(frozen=True)
class Follow:
    """What `status -w/--wait-for` does."""

    watch: bool
    wait_for: str | None
    timeout: float
    interval: float
    output: Output


def _read_status(cluster: "Cluster", obj: dict[str, Any]) -> dict[str, Any]:
    """The status summary with its Events and the tree of what the object owns."""
    from modeldeploy.console import views
    from modeldeploy.console.objects import objects_view

    view = views.summary(obj, cluster.events(obj))
    route_name = views.rollout_of(obj).traffic.http_route
    namespace = str((obj.get("metadata") or {}).get("namespace", ""))
    route = cluster.http_route(namespace, route_name) if route_name else None
    view["objects"] = objects_view(obj, cluster.owned(obj), route)
    return view


def _follow(cluster: "Cluster", name: str, how: Follow) -> None:
    """Read every `interval` seconds until the phase is reached (or the rollout settled
    otherwise) or `timeout` passes. Watching shows every state; only waiting says what it
    waits for on stderr and shows the last state."""
    from modeldeploy.console.exits import wait_outcome

    deadline = time.monotonic() + how.timeout
    said = ""
    with _Follower(how.output) as follower:
        while True:
            obj = cluster.get(name)
            view = _read_status(cluster, obj)
            code, why = wait_outcome(view, how.wait_for) if how.wait_for else (None, "")
            if how.watch:
                follower.show(view, obj)
            elif code is None and why != said:
                typer.echo(f"{time.strftime('%H:%M:%S')} {why}", err=True)
                said = why
            if code is None and time.monotonic() < deadline:
                time.sleep(max(0.0, min(how.interval, deadline - time.monotonic())))
                continue
            break
    if not how.watch:
        _show(view, obj, how.output)
    if code is ExitCode.ROLLOUT_FAILED:
        raise CliError(code, why, f"`modeldeploy explain-verdict {name}` says why")
    if code is None and how.wait_for:
        raise CliError(
            ExitCode.TIMEOUT,
            f"{name} did not reach {how.wait_for} within {how.timeout:g}s; last: {why}",
        )


@targeted
def status_command(
    name: Name,
    *,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow live until --timeout (Ctrl-C stops).")
    ] = False,
    wait_for: Annotated[
        WaitPhase | None,
        typer.Option(
            "--wait-for",
            help="Wait until this phase (exit 0); exit 3 if the rollout settles otherwise "
            "(e.g. RolledBack), 4 on timeout.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        str, typer.Option(help="Bound of --watch/--wait-for: 90s, 5m, 1h30m.")
    ] = DEFAULT_TIMEOUT,
    interval: Annotated[
        float, typer.Option(min=0.2, help="Seconds between reads while following.")
    ] = 2.0,
    output: OutputOption = Output.table,
    target: "Target",
) -> None:
    """Show a rollout: phase, traffic, checks, conditions, owned objects, events.

    Phase and message, owner, traffic split, stable/canary/previous/failed
    revisions, the step, the last analysis (each check with value, threshold,
    samples and verdict), conditions, a tree of the objects it owns (Deployments
    with Ready/total pods, pods, HPA, PDB, Services with their selectors, route
    weights) and recent Events.
    -w follows it live; --wait-for PHASE waits for a phase, e.g. in CI.
    """
    seconds = parse_timeout(timeout)
    with connected(target) as cluster:
        if watch or wait_for:
            phase = wait_for.value if wait_for else None
            _follow(cluster, name, Follow(watch, phase, seconds, interval, output))
            return
        obj = cluster.get(name)
        view = _read_status(cluster, obj)
    _show(view, obj, output)


def _read(target: "Target", name: str) -> dict[str, Any]:
    with connected(target) as cluster:
        return cluster.get(name)


@targeted
def history_command(name: Name, *, output: OutputOption = Output.table, target: "Target") -> None:
    """Show the audit trail: status.history merged with the object's Events, oldest first.

    status.history keeps the last 20 transitions (Started, Promoted, RolledBack,
    Aborted, KillSwitchEngaged/Released) with revision, model version and reason;
    the Events add what the apiserver still holds (by default for 1 h): verdicts,
    refusals, ignored commands. Older decisions are in the operator's audit log.
    """
    from modeldeploy.console import render, views

    with connected(target) as cluster:
        obj = cluster.get(name)
        events = cluster.events(obj)
    entries = views.trail_view(obj, events)
    if output is not Output.table:
        namespace = (obj.get("metadata") or {}).get("namespace")
        emit(
            {"name": name, "namespace": namespace, "eventsRead": events is not None,
             "items": entries},
            output,
        )  # fmt: skip
        return
    if events is None:
        typer.echo("Events: not readable (no permission to list events); history only", err=True)
    if not entries:
        typer.echo(f"{name} has no history yet.", err=True)
    else:
        render.console().print(render.history_table(entries, _now()))


@targeted
def explain_command(name: Name, *, output: OutputOption = Output.table, target: "Target") -> None:
    """Explain why the last decision was taken.

    The failing checks with value, threshold and samples,
    consecutive failures against analysis.failureLimit,
    missing data against analysis.noDataTimeout and what onNoData does then.
    """
    from modeldeploy.console import render
    from modeldeploy.console.explain import explain

    result = explain(_read(target, name))
    if output is Output.table:
        render.console().print(render.explanation(result))
    else:
        emit(result, output)


@targeted
def report_command(
    name: Name,
    *,
    prometheus_url: Annotated[
        str,
        typer.Option(
            envvar="MODELDEPLOY_PROMETHEUS_URL",
            help="The Prometheus the operator analyses with (its --prometheus-url).",
        ),
    ],
    prometheus_namespace_label: PrometheusNamespaceLabel = "namespace",
    prometheus_auth_type: PrometheusAuthType = "none",
    prometheus_auth_dir: PrometheusAuthDir = None,
    prometheus_ca_file: PrometheusCaFile = None,
    prometheus_insecure_skip_verify: PrometheusInsecureSkipVerify = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="HTML file to write (default: NAME-report.html).", dir_okay=False
        ),
    ] = None,
    target: "Target",
) -> None:
    """Write one self-contained HTML report on a rollout (opens offline).

    Per feature the serving histogram against the training profile (canary and
    stable), predictions and confidence, latency, the timeline from status.history
    with the canary's analysis rounds (replayed from Prometheus with the operator's
    statistics) and the last analysis' verdicts; a rolled-back revision's failing
    checks first. Needs modeldeploy's `report` extra (plotly). Prometheus is read
    as the operator reads its default one: same flags and environment variables
    for credentials and TLS.
    """
    from modeldeploy.analysis.config import QueryPlan, collect
    from modeldeploy.measure import (
        AnalysisSettings,
        auth_type,
        prometheus_connector,
    )
    from modeldeploy.report.model import build, report_plan
    from modeldeploy.report.page import render
    from modeldeploy.report.timeline import replay_plan, replayed_rounds

    try:
        settings = AnalysisSettings(
            prometheus_url=prometheus_url,
            auth_type=auth_type(prometheus_auth_type),
            auth_dir=prometheus_auth_dir,
            namespace_label=prometheus_namespace_label,
            ca_file=prometheus_ca_file,
            insecure_skip_verify=prometheus_insecure_skip_verify,
        )
        auth = settings.default_auth()
    except ValueError as err:  # CredentialsError too
        raise CliError(ExitCode.USAGE, f"cannot read Prometheus: {err}") from err
    obj = _read(target, name)
    now = _now()
    plan = report_plan(obj, now, prometheus_namespace_label)
    replay = replay_plan(obj, plan)
    with closing(prometheus_connector(settings)(prometheus_url, auth)) as prometheus:
        answers = collect(prometheus, QueryPlan(plan.queries), plan.at.timestamp())
        # Each replayed round's queries at its own instant, as the operator asked them.
        rounds = (
            replayed_rounds(
                replay,
                [
                    collect(prometheus, queries, at.timestamp())
                    for at, queries in zip(replay.instants, replay.queries, strict=True)
                ],
            )
            if replay is not None
            else ()
        )
    path = output or Path(f"{name}-report.html")
    path.write_text(render(build(obj, plan, answers.results, now, rounds)), encoding="utf-8")
    typer.echo(str(path))


# --- steering ---------------------------------------------------------------------------


def steer(target: "Target", name: str, decide: Callable[[dict[str, Any]], "Change"]) -> None:
    with connected(target) as cluster:
        change = cluster.steer(name, decide)
    typer.echo(change.done)


@targeted
def promote_command(
    name: Name,
    *,
    full: Annotated[
        bool, typer.Option("--full", help="Promote now even with steps ahead (skips them).")
    ] = False,
    target: "Target",
) -> None:
    """Promote the canary now.

    Sets annotation modeldeploy.io/promote=<canaryRevision>.
    At the last step (or waiting for approval) as is; with steps still ahead only
    with --full, which skips them: the operator promotes in one go.
    """
    from modeldeploy.console import steering

    steer(target, name, lambda obj: steering.promote(obj, full=full))


@targeted
def kill_command(
    name: Name,
    *,
    mode: Annotated[
        KillMode | None,
        typer.Option(
            help="scaleToZero, or fallback (needs spec.fallback). Default: the spec's.",
            show_default=False,
        ),
    ] = None,
    target: "Target",
) -> None:
    """Engage the kill switch: traffic leaves the model at once.

    Sets spec.killSwitch.engaged=true (and mode, if given).
    The rest of the spec is kept, so `unkill` restores the previous state.
    """
    from modeldeploy.console import steering

    steer(target, name, lambda obj: steering.set_kill_switch(obj, True, mode and mode.value))


def _simple_steering(decision: str, *args: Any, doc: str) -> Callable[..., None]:
    """A command that takes only the name: `steering.<decision>(obj, *args)` decides."""

    def decide(obj: dict[str, Any]) -> "Change":
        from modeldeploy.console import steering

        function: Callable[..., Change] = getattr(steering, decision)
        return function(obj, *args)

    def command(name: Name, *, target: "Target") -> None:
        steer(target, name, decide)

    command.__doc__ = doc
    return targeted(command)


SIMPLE_STEERING: dict[str, Callable[..., None]] = {
    "approve": _simple_steering(
        "approve",
        doc="Approve a canary waiting for a person at its last step.\n\n"
        "For rollout.requireApproval: sets annotation modeldeploy.io/promote=<canaryRevision>.",
    ),
    "abort": _simple_steering(
        "abort",
        doc="Roll the canary back now, as if its analysis had failed.\n\n"
        "Sets annotation modeldeploy.io/abort=<canaryRevision>; the stable keeps serving.",
    ),
    "pause": _simple_steering(
        "set_paused",
        True,
        doc="Hold the rollout where it is.\n\n"
        "Sets spec.rollout.paused=true; failed analyses still roll back.",
    ),
    "resume": _simple_steering(
        "set_paused", False, doc="Let a paused rollout go on.\n\nSets spec.rollout.paused=false."
    ),
    "retry": _simple_steering(
        "retry",
        doc="Roll out the rolled-back revision once more.\n\n"
        "Sets annotation modeldeploy.io/retry=<failedRevision>.",
    ),
    "unkill": _simple_steering(
        "set_kill_switch",
        False,
        doc="Release the kill switch: the model serves again.\n\n"
        "Sets spec.killSwitch.engaged=false.",
    ),
}


# --- about the CLI itself ---------------------------------------------------------------


def version_command(*, output: OutputOption = Output.table) -> None:
    """Print the version of modeldeploy.

    -o json|yaml adds what a bug report needs: the Python, the platform and the
    versions of kopf, kubernetes and pydantic (null when not installed).
    """
    from modeldeploy.console.version import version_report

    report = version_report()
    if output is Output.table:
        typer.echo(report["version"])
    else:
        emit(report, output)


# --- registration -----------------------------------------------------------------------


def program_name(argv0: str) -> str:
    """`kubectl modeldeploy` when run as the kubectl plugin, else the script's name."""
    base = Path(argv0).name
    return f"kubectl {base.removeprefix('kubectl-')}" if base.startswith("kubectl-") else base


def _name_program(ctx: typer.Context) -> None:
    # Usage lines and errors of subcommands say what people type: `kubectl modeldeploy ...`.
    ctx.info_name = program_name(sys.argv[0])


def register(app: typer.Typer) -> None:
    """Add the commands to `app` (the `modeldeploy` CLI), in the order help lists them."""
    simple = SIMPLE_STEERING
    commands: list[tuple[str, Callable[..., None]]] = [
        ("list", list_command),
        ("status", status_command),
        ("history", history_command),
        ("explain-verdict", explain_command),
        ("report", report_command),
        ("promote", promote_command),
        *((c, simple[c]) for c in ("approve", "abort", "pause", "resume", "retry")),
        ("kill", kill_command),
        ("unkill", simple["unkill"]),
    ]
    for command, function in commands:
        app.command(command, epilog=EPILOG)(function)
    app.command("version")(version_command)  # no cluster: none of the exit codes above
    if app.registered_callback is None:
        app.callback()(_name_program)
