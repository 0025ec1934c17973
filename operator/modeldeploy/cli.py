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


# --- commands (one small function each; the logic lives in its own module) ---------------


def main() -> None:
    app()
