"""How to reach the operator's Prometheus: the options `modeldeploy operator` and
`modeldeploy report` share (same flags, same environment variables), so that the report reads
Prometheus exactly as the operator does, with its credentials and TLS settings."""

from pathlib import Path
from typing import Annotated

import typer

PrometheusAuthType = Annotated[
    str,
    typer.Option(
        envvar="MODELDEPLOY_PROMETHEUS_AUTH_TYPE",
        help="none, bearer (file `token`) or basic (files `username`, `password`).",
    ),
]
PrometheusAuthDir = Annotated[
    Path | None,
    typer.Option(
        envvar="MODELDEPLOY_PROMETHEUS_AUTH_DIR",
        help="Directory with the default Prometheus' credentials (a mounted Secret).",
    ),
]
PrometheusNamespaceLabel = Annotated[
    str,
    typer.Option(
        envvar="MODELDEPLOY_PROMETHEUS_NAMESPACE_LABEL",
        help="Label holding the pod's namespace on scraped series ('' if none).",
    ),
]
PrometheusCaFile = Annotated[
    Path | None,
    typer.Option(
        envvar="MODELDEPLOY_PROMETHEUS_CA_FILE",
        exists=True,
        dir_okay=False,
        help="PEM CA bundle that verifies the default Prometheus' certificate (https) "
        "instead of the system CAs.",
    ),
]
PrometheusInsecureSkipVerify = Annotated[
    bool,
    typer.Option(
        envvar="MODELDEPLOY_PROMETHEUS_INSECURE_SKIP_VERIFY",
        help="Do not verify the default Prometheus' certificate (a test Prometheus only).",
    ),
]
