"""The `modeldeploy` command line (also installed as `kubectl-modeldeploy`).

Each command imports its heavy dependencies lazily so that `modeldeploy --help` stays fast
and model images need not install the operator's libraries.
"""

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="modeldeploy",
    help="Ship machine-learning models to Kubernetes safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


dev_app = typer.Typer(help="Local development stack (kwokctl cluster + Prometheus).")
app.add_typer(dev_app, name="dev")


def _say(message: str) -> None:
    typer.secho(f"[modeldeploy] {message}", err=True, fg=typer.colors.CYAN)


@dev_app.command("up")
def dev_up() -> None:
    """Bring up the local cluster and Prometheus (reused when already running)."""
    from modeldeploy.devenv import stack

    state = stack.up(_say)
    typer.echo(
        "\nLocal stack is up (everything on 127.0.0.1):\n"
        f"  export KUBECONFIG={state.kubeconfig}\n"
        "  kubectl get nodes            # kwok-simulated nodes\n"
        f"  Prometheus: {state.prometheus_url}  (file_sd targets in {state.prometheus_targets})\n"
        "  make down                    # tear it all down"
    )


@dev_app.command("down")
def dev_down() -> None:
    """Stop Prometheus and delete the local cluster."""
    from modeldeploy.devenv import stack

    stack.down(_say)


# --- commands (one small function each; the logic lives in its own module) ---------------


@app.command("operator")
def operator(
    *,
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch this namespace (repeatable); all if absent."),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            envvar="MODELDEPLOY_RECONCILE_INTERVAL",
            help="Seconds between reconciles of every ModelDeployment (default 10).",
        ),
    ] = None,
    liveness: Annotated[
        str | None, typer.Option(help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Run the operator (Kopf) against the cluster of KUBECONFIG or the in-cluster config."""
    from modeldeploy.handlers import run_operator

    run_operator(namespace or [], interval, liveness, verbose)


@app.command("serve")
def serve(
    *,
    model_dir: Annotated[
        Path, typer.Option(help="Model directory: model.yaml, profile.json, artifacts.")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    prediction_log: Annotated[
        str | None, typer.Option(help="Sampled prediction log file ('-' = stdout).")
    ] = None,
    log_sample_rate: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Share of requests logged.")
    ] = None,
    redact: Annotated[
        list[str] | None, typer.Option(help="Input/output never logged (repeatable).")
    ] = None,
    instrumentation: Annotated[
        bool, typer.Option(help="Export model metrics (turn off only to benchmark).")
    ] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Serve a model directory: Open Inference Protocol V2 REST and /metrics."""
    from modeldeploy.serving.config import ModelDirError
    from modeldeploy.serving.server import serve as run

    try:
        run(
            model_dir,
            host,
            port,
            instrumentation=instrumentation,
            log_path=prediction_log,
            log_sample_rate=log_sample_rate,
            redact=redact or (),
            log_level=log_level,
        )
    except ModelDirError as err:
        typer.secho(f"cannot serve {model_dir}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err


@app.command("profile")
def profile(
    *,
    model_dir: Annotated[Path, typer.Option(help="Model directory with its model.yaml.")],
    data: Annotated[Path, typer.Option(help="Training data: .csv, .parquet, .npy or .npz.")],
    target: Annotated[str | None, typer.Option(help="Label column to leave out.")] = None,
    drop: Annotated[list[str] | None, typer.Option(help="Column to leave out.")] = None,
    names: Annotated[
        str | None, typer.Option(help="Comma-separated column names of a 2-D .npy.")
    ] = None,
    categorical: Annotated[
        list[str] | None, typer.Option(help="Treat this column as categorical.")
    ] = None,
    nullable: Annotated[
        list[str] | None, typer.Option(help="Accept nulls here even if training had none.")
    ] = None,
    bins: Annotated[int, typer.Option(min=2, max=50, help="Bins per numeric feature.")] = 10,
    golden: Annotated[int, typer.Option(min=1, max=100, help="Golden rows.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed for picking golden rows.")] = 0,
) -> None:
    """Write the model's profile.json: schema, bins, baselines and golden requests."""
    from modeldeploy.profiling.io import profile_model_dir, read_table
    from modeldeploy.serving.config import ModelDirError
    from modeldeploy.serving.pipeline import ModelError

    try:
        columns = read_table(data, names.split(",") if names else ())
        for column in [*(drop or ()), *([target] if target else [])]:
            if columns.pop(column, None) is None:
                raise ValueError(f"{data} has no column {column!r}")
        path = profile_model_dir(
            model_dir,
            columns,
            types=dict.fromkeys(categorical or (), "string"),
            nullable=nullable or (),
            n_bins=bins,
            golden=golden,
            seed=seed,
        )
    except (ModelDirError, ModelError, ValueError, OSError) as err:
        typer.secho(f"cannot profile {model_dir}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err
    typer.echo(f"wrote {path}")


@app.command("crd")
def crd(
    *,
    check: Annotated[
        bool, typer.Option("--check", help="Only verify that the CRD file is up to date.")
    ] = False,
    output: Annotated[Path, typer.Option(help="Directory of the CRD file.")] = Path("crds"),
) -> None:
    """Generate the ModelDeployment CRD from the API models (crds/ is never edited by hand)."""
    from modeldeploy.crd import stale_crd, write_crd

    if check:
        problem = stale_crd(output)
        if problem:
            typer.secho(problem, err=True, fg=typer.colors.RED)
            raise typer.Exit(1)
        typer.echo(f"{output} is up to date")
    else:
        typer.echo(f"wrote {write_crd(output)}")


def main() -> None:
    app()
