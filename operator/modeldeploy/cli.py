"""The `modeldeploy` command line (also installed as `kubectl-modeldeploy`).

Each command imports its heavy dependencies lazily so that `modeldeploy --help` stays fast
and model images need not install the operator's libraries.
"""

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


def main() -> None:
    app()
