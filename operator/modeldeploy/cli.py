"""The `modeldeploy` command line (also installed as `kubectl-modeldeploy`).

Each command imports its heavy dependencies lazily so that `modeldeploy --help` stays fast
and model images need not install the operator's libraries.
"""

import contextlib
import secrets
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modeldeploy import contract
from modeldeploy.console.commands import register as register_console_commands
from modeldeploy.console.prometheus_options import (
    PrometheusAuthDir,
    PrometheusAuthType,
    PrometheusCaFile,
    PrometheusInsecureSkipVerify,
    PrometheusNamespaceLabel,
)
from modeldeploy.contract import OPERATOR_METRICS_PORT
from modeldeploy.process_exit import end_within, exit_status
from modeldeploy.serving.limits import ServerLimits

if TYPE_CHECKING:
    from modeldeploy.serving.server import RunOptions

app = typer.Typer(
    name="modeldeploy",
    help="Ship machine-learning models to Kubernetes safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


dev_app = typer.Typer(help="Local development stack (kwokctl cluster + Prometheus).")
app.add_typer(dev_app, name="dev")


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


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


@dev_app.command("demo")
def dev_demo(
    rate: Annotated[float, typer.Option(min=1, max=200, help="Client requests per second.")] = 40,
    containers: Annotated[
        bool,
        typer.Option(
            envvar="MODELDEPLOY_DEMO_CONTAINERS",
            help="Run the releases' real images (built offline, pulled by digest from a local "
            "registry) as podman containers instead of local processes.",
        ),
    ] = False,
    gateway_api: Annotated[
        bool,
        typer.Option(
            "--gateway-api",
            envvar="MODELDEPLOY_DEMO_GATEWAY_API",
            help="Send the traffic through an HTTPRoute of the demo's (traffic.mode "
            "gatewayAPI): the operator sets its weights, the client traffic follows them.",
        ),
    ] = False,
) -> None:
    """The whole loop on this machine: v1 stable, a skewed v2 rolled back on drift, a healthy
    v3 promoted through every step, printed as a timeline (brings the stack up first)."""
    import signal
    import sys

    from modeldeploy.devenv import stack
    from modeldeploy.devenv.demo import Demo, DemoError, summary

    # SIGTERM (e.g. from `timeout` or CI) unwinds like Ctrl-C, so child processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state = stack.up(_say)
    demo = Demo(
        stack.demo_cluster(),
        state.prometheus_url,
        Path(state.prometheus_targets),
        stack.run_dir(),
        rate=rate,
        say=typer.echo,
        containers=containers,
        gateway_api=gateway_api,
    )
    try:
        result = demo.run()
    except DemoError as error:
        typer.secho(f"demo failed: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from error
    for line in summary(result):
        typer.echo(line)
    typer.echo(
        f"\nThe cluster and Prometheus stay up: export KUBECONFIG={state.kubeconfig}; "
        f"Prometheus at {state.prometheus_url}. `make down` removes them."
    )


@dev_app.command("down")
def dev_down() -> None:
    """Stop Prometheus and delete the local cluster."""
    from modeldeploy.devenv import stack

    stack.down(_say)


@dev_app.command("images")
def dev_images(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Just this image (repeatable).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the images as JSON.")] = False,
) -> None:
    """Build the base, operator and example model images offline and push them by digest to
    the local registry (cached: an unchanged image is never rebuilt)."""
    import json
    from dataclasses import asdict

    from modeldeploy.devenv.images import ImageBuildError, images_with_registry
    from modeldeploy.devenv.tools import ToolsMissingError

    try:
        images = images_with_registry(_say, only)
    except (ImageBuildError, ToolsMissingError, ValueError) as err:
        typer.secho(f"cannot build images: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from err
    if json_output:
        typer.echo(json.dumps({name: asdict(image) for name, image in images.items()}, indent=1))
        return
    for image in images.values():
        typer.echo(f"{image.name:<10} {image.repository}@{image.digest}  "
                   f"{image.compressed_bytes / 2**20:6.1f} MiB")  # fmt: skip


@dev_app.command("pod-runner")
def dev_pod_runner(
    *,
    image_map: Annotated[
        Path | None,
        typer.Option(help="Process mode: image map, e.g. examples/churn/images.yaml.", exists=True),
    ] = None,
    containers: Annotated[
        bool,
        typer.Option(
            help="Container mode: run each pod's own image (from a 127.0.0.1 registry) with podman."
        ),
    ] = False,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace; all if absent.")
    ] = None,
    kubeconfig: Annotated[
        str | None,
        typer.Option(help="Cluster (loopback only); default $KUBECONFIG, else the demo stack's."),
    ] = None,
    targets_dir: Annotated[
        Path | None,
        typer.Option(help="Prometheus file_sd directory; default the demo stack's Prometheus."),
    ] = None,
    job: Annotated[str, typer.Option(help="file_sd file name and job label.")] = (
        "modeldeploy-pods"
    ),
    state_dir: Annotated[
        Path | None,
        typer.Option(help="endpoints.json, logs; default ~/.cache/modeldeploy/pod-runner."),
    ] = None,
    max_processes: Annotated[int, typer.Option(min=1, max=100, help="Refuse pods beyond.")] = 20,
    reflect_readiness: Annotated[
        bool, typer.Option(help="Pods are Ready only once their local process is.")
    ] = True,
    prepare_only: Annotated[
        bool, typer.Option(help="Build the map's images, print them as JSON, and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Run a real model server on 127.0.0.1 for every Running pod of a known image: a local
    process per the image map, or (--containers) the pod's image as a podman container."""
    import json
    import logging
    import os

    from modeldeploy.devenv import stack
    from modeldeploy.devenv.containers import ContainerImages
    from modeldeploy.devenv.imagemap import ImageMap, ImageMapError
    from modeldeploy.devenv.podrunner import (
        PodRunner,
        RunnerConfig,
        default_state_dir,
        run_until_signalled,
    )

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s [pod-runner] %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every readiness probe
    if (image_map is None) == (not containers):
        typer.secho("give either --image-map or --containers", err=True, fg=typer.colors.RED)
        raise typer.Exit(2)
    try:
        images = ImageMap.load(image_map) if image_map is not None else ContainerImages()
    except ImageMapError as err:
        typer.secho(str(err), err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err
    state = stack.read_state()
    config = RunnerConfig(
        images,
        state_dir or default_state_dir(),
        namespace=namespace,
        targets_dir=targets_dir or (Path(state.prometheus_targets) if state else None),
        job=job,
        max_processes=max_processes,
        reflect_readiness=reflect_readiness,
    )
    if prepare_only:
        if not isinstance(images, ImageMap):
            typer.secho("--prepare-only needs --image-map", err=True, fg=typer.colors.RED)
            raise typer.Exit(2)
        launches = images.prepare(config.build_root, _say)
        typer.echo(json.dumps({image: {"model_dir": str(launch.model_dir),
                                       "data_dir": str(launch.data_dir)}
                               for image, launch in launches.items()}, indent=1))  # fmt: skip
        return
    if config.targets_dir is None:
        _say("no --targets-dir and no demo stack: Prometheus targets are not published")
    if kubeconfig is None and not os.environ.get("KUBECONFIG") and state is not None:
        kubeconfig = state.kubeconfig
    try:
        run_until_signalled(PodRunner(config, kubeconfig))
    except (ImageMapError, RuntimeError, ValueError) as err:
        typer.secho(f"pod runner: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err


def _load_routing(
    via: str, http_route: str | None, namespace: str | None, cohort_header: str | None
) -> dict[str, str] | None:
    """`dev load`'s routing options checked; the cohort's headers (None: no cohort)."""
    if via not in ("service", "pods", "route"):
        raise ValueError(f"--via must be service, pods or route, not {via!r}")
    if (via == "route") != (http_route is not None):
        raise ValueError("--http-route goes with --via route, and only with it")
    if http_route is not None and namespace is None:
        raise ValueError("--via route needs --namespace (the HTTPRoute's)")
    if cohort_header is None:
        return None
    header, sep, value = cohort_header.partition("=")
    if not sep or not header.strip() or http_route is None:
        raise ValueError("--cohort-header is HEADER=VALUE, with --via route")
    return {header.strip(): value}


@dev_app.command("load")
def dev_load(
    *,
    name: Annotated[str, typer.Option(help="The ModelDeployment (and its client Service).")],
    data: Annotated[Path, typer.Option(help="CSV of real rows, e.g. OUT/data/holdout.csv.")],
    count: Annotated[int, typer.Option(min=1, max=1_000_000, help="Requests at most.")],
    duration: Annotated[float, typer.Option(min=0.1, max=3600, help="Seconds at most.")],
    rate: Annotated[float, typer.Option(min=0.01, max=1000, help="Requests per second.")] = 20,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Its namespace; any if absent.")
    ] = None,
    profile: Annotated[
        Path | None, typer.Option(help="profile.json; default OUT/model/ next to OUT/data/.")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=64, help="Rows per request.")] = 1,
    shift: Annotated[
        list[str] | None, typer.Option(help="Drift FEATURE=K: add K standard deviations.")
    ] = None,
    missing: Annotated[
        list[str] | None, typer.Option(help="Drift FEATURE=SHARE: that share set missing.")
    ] = None,
    unseen: Annotated[
        list[str] | None, typer.Option(help="Drift FEATURE=SHARE: an unseen category.")
    ] = None,
    malformed: Annotated[
        float, typer.Option(min=0, max=1, help="Share of malformed requests (400).")
    ] = 0.0,
    via: Annotated[
        str,
        typer.Option(
            help="service: the pods Service NAME selects; pods: all pods of NAME; route: "
            "through a Gateway, by the weights of --http-route (read from the cluster)."
        ),
    ] = "service",
    http_route: Annotated[
        str | None, typer.Option(help="With --via route: the HTTPRoute of NAME's traffic.")
    ] = None,
    cohort_header: Annotated[
        str | None,
        typer.Option(
            help="With --via route: HEADER=VALUE on --cohort-share of the requests, routed by "
            "the rule they match (a cohort phase; a cookie: Cookie=NAME=VALUE)."
        ),
    ] = None,
    cohort_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share of requests with --cohort-header.")
    ] = 0.1,
    endpoints: Annotated[
        Path | None, typer.Option(help="The pod runner's endpoints.json (default its own).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Sending threads.")] = 8,
    labels: Annotated[
        str | None,
        typer.Option(help="Post each answered row's label (this --data column) back, by id."),
    ] = None,
    labels_after: Annotated[
        float, typer.Option(min=0, max=600, help="With --labels: seconds until a label is sent.")
    ] = 5.0,
    wrong_labels: Annotated[
        float,
        typer.Option(min=0, max=1, help="With --labels: share of labels sent as another value."),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of row sampling and drift.")] = 0,
    progress: Annotated[float, typer.Option(min=0, help="Seconds between progress lines.")] = 5,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Send steady V2 infer requests to the local servers of NAME's Ready pods (bounded)."""
    import json

    from modeldeploy.devenv.endpoints import Endpoint
    from modeldeploy.devenv.loadgen import (
        CohortLoad,
        EndpointSource,
        LoadSpec,
        RouteSource,
        default_profile,
        run_load,
    )
    from modeldeploy.devenv.podrunner import ENDPOINTS_FILE, default_state_dir
    from modeldeploy.devenv.traffic import (
        Drift,
        Router,
        choose_uniform,
        parse_assignments,
        read_labels,
        read_rows,
    )
    from modeldeploy.devenv.traffic import wrong_labels as with_wrong_labels  # the option's name
    from modeldeploy.profile_schema import Profile, RegressionOutput

    try:
        profile_path = profile or default_profile(data)
        model_profile = Profile.model_validate_json(profile_path.read_bytes())
        features = model_profile.features
        rows = read_rows(data, features)
        numeric = isinstance(model_profile.output, RegressionOutput)
        truth = read_labels(data, labels, numeric=numeric) if labels is not None else None
        if wrong_labels and truth is None:
            raise ValueError("--wrong-labels goes with --labels")
        if truth is not None and wrong_labels:
            truth = with_wrong_labels(truth, wrong_labels, seed)
        drift = Drift(
            shift=parse_assignments(shift or (), "--shift"),
            missing=parse_assignments(missing or (), "--missing"),
            unseen=parse_assignments(unseen or (), "--unseen"),
            malformed=malformed,
        )
        drift.validate(features)
        spec = LoadSpec(
            rate, count, duration, batch, seed, workers=workers,
            label_delay=labels_after if labels is not None else None,
        )  # fmt: skip
        cohort_headers = _load_routing(via, http_route, namespace, cohort_header)
    except (OSError, ValueError) as err:
        typer.secho(f"cannot load: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err
    published = endpoints or default_state_dir() / ENDPOINTS_FILE
    source: Callable[[], Sequence[Endpoint]]
    router: Router = choose_uniform
    cohort = None
    if http_route is not None and namespace is not None:
        weights = _route_weights(namespace, http_route, name)
        through = RouteSource(published, namespace, weights, cohort=cohort_headers)
        source, router = through, through.choose
        if cohort_headers is not None:
            cohort = CohortLoad(cohort_headers, cohort_share, through.choose_cohort)
    else:
        source = EndpointSource(
            published, namespace, name, via="pods" if via == "pods" else "service"
        )
    report = run_load(
        spec,
        rows,
        features,
        source,
        drift=drift,
        labels=truth,
        router=router,
        cohort=cohort,
        progress=(lambda r: _say(r.summary().splitlines()[0])) if progress else None,
        progress_every=progress or 5.0,
    )
    typer.echo(json.dumps(report.to_dict(), indent=1) if json_output else report.summary())


def _route_weights(
    namespace: str, route: str, name: str
) -> Callable[[Mapping[str, str]], tuple[tuple[str, int], ...]]:
    """The (Service, weight) pairs of the HTTPRoute's rule for a request with these headers,
    read from the cluster at each call (the load generator's refresh); none while it cannot
    be read."""
    from modeldeploy.kube import Kube, KubeError
    from modeldeploy.routing.gateway_api import backend_weights, observe_route

    kube = Kube()

    def read(headers: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
        try:
            body = kube.get_route(namespace, route)
        except KubeError:
            return ()
        return backend_weights(observe_route(body) if body else None, name, headers)

    return read


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
            help="Seconds between passes over the ModelDeployments whose time-based step "
            "(step interval, bake, analysis round) is due, or whose last reconcile could not "
            "finish (default 10).",
        ),
    ] = None,
    resync: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            envvar="MODELDEPLOY_RESYNC",
            help="Seconds between reconciles of every ModelDeployment, due or not: the "
            "level-based safety net (default 300).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            envvar="MODELDEPLOY_RECONCILE_WORKERS",
            help="Reconciles at once (default 8): they wait on the apiserver, not on this "
            "process' CPU.",
        ),
    ] = None,
    liveness: Annotated[
        str | None, typer.Option(help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.")
    ] = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            envvar="MODELDEPLOY_PROMETHEUS_URL",
            help="Prometheus for ModelDeployments without spec.prometheus; without any, "
            "analysis is off and steps advance on time.",
        ),
    ] = None,
    prometheus_endpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--prometheus-endpoint",
            help="NAME=URL (repeatable): a Prometheus a ModelDeployment may name in "
            "spec.prometheus.endpoint; the --prometheus-url is the endpoint `default`.",
        ),
    ] = None,
    analysis_workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            envvar="MODELDEPLOY_ANALYSIS_WORKERS",
            help="Prometheus query threads, shared fairly: one ModelDeployment runs at most "
            "a quarter of them.",
        ),
    ] = 8,
    prometheus_auth_type: PrometheusAuthType = "none",
    prometheus_auth_dir: PrometheusAuthDir = None,
    prometheus_namespace_label: PrometheusNamespaceLabel = "namespace",
    prometheus_ca_file: PrometheusCaFile = None,
    prometheus_insecure_skip_verify: PrometheusInsecureSkipVerify = False,
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            envvar="MODELDEPLOY_METRICS_PORT",
            help="Port of the operator's own /metrics (0: off).",
        ),
    ] = OPERATOR_METRICS_PORT,
    metrics_address: Annotated[
        str, typer.Option(envvar="MODELDEPLOY_METRICS_ADDRESS", help="Address of /metrics.")
    ] = "0.0.0.0",
    leader_elect: Annotated[
        bool,
        typer.Option(
            envvar="MODELDEPLOY_LEADER_ELECT",
            help="Run as one of several replicas: only the holder of a coordination.k8s.io "
            "Lease reconciles and writes; the others watch and take over when it is gone.",
        ),
    ] = False,
    lease_namespace: Annotated[
        str | None,
        typer.Option(
            envvar="POD_NAMESPACE",
            help="Namespace of the leader Lease (default: the operator pod's own).",
        ),
    ] = None,
    lease_name: Annotated[
        str | None,
        typer.Option(
            envvar="MODELDEPLOY_LEASE_NAME",
            help="Name of the leader Lease (default modeldeploy-operator).",
        ),
    ] = None,
    lease_identity: Annotated[
        str | None,
        typer.Option(
            envvar="POD_NAME",
            help="This replica's name in the Lease (default: host name + a random suffix).",
        ),
    ] = None,
    lease_duration: Annotated[
        float | None,
        typer.Option(
            min=1,
            envvar="MODELDEPLOY_LEASE_DURATION",
            help="Seconds a lease not renewed stays its holder's: the failover time (default 10).",
        ),
    ] = None,
    lease_renew_deadline: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            envvar="MODELDEPLOY_LEASE_RENEW_DEADLINE",
            help="The leader stops writing this long after its last good renewal "
            "(< lease duration; default 7).",
        ),
    ] = None,
    lease_retry_period: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            envvar="MODELDEPLOY_LEASE_RETRY_PERIOD",
            help="Seconds between renewals, and between a standby's looks at the Lease "
            "(default 2).",
        ),
    ] = None,
    allow_privileged_models: Annotated[
        bool,
        typer.Option(
            envvar="MODELDEPLOY_ALLOW_PRIVILEGED_MODELS",
            help="Run ModelDeployments whose pod template has securityProfile privileged and "
            "asks for privileges (privileged, privilege escalation, capabilities, root); "
            "without it they get a Warning Event PrivilegedNotAllowed and are left alone.",
        ),
    ] = False,
    proxy_image: Annotated[
        str,
        typer.Option(
            envvar="MODELDEPLOY_PROXY_IMAGE",
            help="The image of `modeldeploy proxy` (this operator's image has it), run beside "
            "the server of a ModelDeployment with spec.externalServer; part of such "
            "revisions. Without it those get a Warning Event ProxyImageNotConfigured and are "
            "left alone.",
        ),
    ] = "",
    webhook_host: Annotated[
        list[str] | None,
        typer.Option(
            "--webhook-host",
            help="A host webhook URLs may point at (repeatable; *.domain: its subdomains). "
            "Without any, no webhook is called: gates refuse, notifications fail.",
        ),
    ] = None,
    watch_http_routes: Annotated[
        bool,
        typer.Option(
            envvar="MODELDEPLOY_WATCH_HTTP_ROUTES",
            help="Watch HTTPRoutes (needs list and watch on them), so that a change to a "
            "traffic.httpRoute's weights by someone else is undone at once; without it, at "
            "the next reconcile (the resync when nothing else happens).",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Run the operator (Kopf) against the cluster of KUBECONFIG or the in-cluster config."""
    from modeldeploy.analysis.endpoints import parse_endpoint
    from modeldeploy.api.types import is_image
    from modeldeploy.handlers import run_operator
    from modeldeploy.leader import LeaseSettings
    from modeldeploy.measure import AnalysisSettings, auth_type
    from modeldeploy.webhooks import WebhookSettings

    try:
        endpoints = dict(parse_endpoint(text) for text in prometheus_endpoint or [])
        analysis = AnalysisSettings(
            prometheus_url=prometheus_url or None,
            endpoints=endpoints,
            workers=analysis_workers,
            auth_type=auth_type(prometheus_auth_type),
            auth_dir=prometheus_auth_dir,
            namespace_label=prometheus_namespace_label,
            ca_file=prometheus_ca_file,
            insecure_skip_verify=prometheus_insecure_skip_verify,
        )
        webhooks = WebhookSettings(tuple(webhook_host or ()))
        if proxy_image and not is_image(proxy_image):
            raise ValueError(f"--proxy-image {proxy_image!r} is not a container image reference")
        lease = None
        if leader_elect:
            if not lease_namespace:
                raise ValueError("--leader-elect needs --lease-namespace (or POD_NAMESPACE)")
            identity = lease_identity or f"{socket.gethostname()}-{secrets.token_hex(4)}"
            defaults = LeaseSettings(namespace=lease_namespace, identity=identity)
            # Unset flags keep LeaseSettings' own defaults (written once, there).
            lease = replace(
                defaults,
                name=lease_name or defaults.name,
                duration=_given(lease_duration, defaults.duration),
                renew_deadline=_given(lease_renew_deadline, defaults.renew_deadline),
                retry_period=_given(lease_retry_period, defaults.retry_period),
            )
    except ValueError as err:
        typer.secho(f"cannot run the operator: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err
    run_operator(
        namespace or [],
        interval,
        liveness,
        verbose,
        resync=resync,
        workers=workers,
        analysis=analysis,
        lease=lease,
        metrics_address=metrics_address,
        metrics_port=metrics_port,
        allow_privileged_models=allow_privileged_models,
        proxy_image=proxy_image or None,
        webhooks=webhooks,
        http_routes=watch_http_routes,
    )


# The flags `serve` and `proxy` share (server.RunOptions).
HostOption = Annotated[
    str, typer.Option(envvar=contract.ENV_SERVE_HOST, help="Address to listen on.")
]
PortOption = Annotated[int, typer.Option(envvar=contract.ENV_SERVE_PORT, help="Port to listen on.")]
GrpcPortOption = Annotated[
    int | None,
    typer.Option(
        envvar=contract.ENV_SERVE_GRPC_PORT,
        min=1,
        max=65535,
        help="Also serve V2 gRPC on this port (needs the grpc extra); off unless set.",
    ),
]
PredictionLogOption = Annotated[
    str | None, typer.Option(help="Sampled prediction log file ('-' = stdout).")
]
LogSampleRateOption = Annotated[
    float | None, typer.Option(min=0.0, max=1.0, help="Share of requests logged.")
]
RedactOption = Annotated[
    list[str] | None, typer.Option(help="Input/output never logged (repeatable).")
]
InstrumentationOption = Annotated[
    bool, typer.Option(help="Export model metrics (turn off only to benchmark).")
]
LogLevelOption = Annotated[str, typer.Option(help="debug, info, warning, error.")]
BodyTimeoutOption = Annotated[
    float, typer.Option(min=0.01, help="Seconds a request body may take to arrive (408).")
]
InferenceThreadsOption = Annotated[
    int, typer.Option(min=1, max=64, help="Threads running inference, off the event loop.")
]
MaxConnectionsOption = Annotated[
    int, typer.Option(min=1, help="Concurrent connections before uvicorn answers 503.")
]
KeepAliveOption = Annotated[
    int, typer.Option(min=1, help="Seconds an idle keep-alive connection is kept.")
]
MaxHeaderBytesOption = Annotated[
    int, typer.Option(min=1024, help="Request line plus headers, at most (h11).")
]
TerminationLogOption = Annotated[
    str | None,
    typer.Option(
        envvar=contract.ENV_TERMINATION_LOG,
        help="File to write why it exits to (the kubelet's terminationMessagePath); "
        "default /dev/termination-log when it is there and writable.",
    ),
]


def _serving(run: Callable[[], None], what: str) -> None:
    """Runs `serve` or `proxy`, with their one scheme of exit codes: 2 when what is to be
    served cannot be, 3 when the server cannot start, 4 when warm-up finds it broken."""
    from modeldeploy.serving.config import ModelDirError
    from modeldeploy.serving.server import BROKEN_IMAGE_EXIT_CODE, StartupFailed, WarmupFailed

    try:
        run()
    except ModelDirError as err:
        typer.secho(f"cannot serve {what}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err
    except StartupFailed as err:
        typer.secho(str(err), err=True, fg=typer.colors.RED)
        raise typer.Exit(3) from err
    except WarmupFailed as err:
        typer.secho(f"not serving {what}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(BROKEN_IMAGE_EXIT_CODE) from err


@app.command("serve")
def serve(
    *,
    model_dir: Annotated[
        Path, typer.Option(help="Model directory: model.yaml, profile.json, artifacts.")
    ],
    host: HostOption = "127.0.0.1",
    port: PortOption = contract.SERVING_PORT,
    grpc_port: GrpcPortOption = None,
    prediction_log: PredictionLogOption = None,
    log_sample_rate: LogSampleRateOption = None,
    redact: RedactOption = None,
    instrumentation: InstrumentationOption = True,
    log_level: LogLevelOption = "info",
    body_timeout: BodyTimeoutOption = ServerLimits.body_timeout_s,
    inference_threads: InferenceThreadsOption = ServerLimits.inference_threads,
    max_connections: MaxConnectionsOption = ServerLimits.max_connections,
    keep_alive: KeepAliveOption = ServerLimits.keep_alive_s,
    max_header_bytes: MaxHeaderBytesOption = ServerLimits.max_header_bytes,
    termination_log: TerminationLogOption = None,
) -> None:
    """Serve a model directory: Open Inference Protocol V2 REST (and gRPC) and /metrics.

    Exits 2 when the directory cannot be served, 3 when the server cannot start, 4 when
    warm-up finds the image broken (wrong golden outputs, model errors, no golden requests);
    golden requests that stay slow leave it running, not ready."""
    from modeldeploy.serving.server import serve as run

    options = _run_options(**locals())  # the shared flags, named as here
    _serving(lambda: run(model_dir, options), str(model_dir))


@app.command("proxy")
def proxy(
    *,
    profile: Annotated[
        Path,
        typer.Option(help="The model's training profile (profile.json, with golden requests)."),
    ],
    upstream: Annotated[
        str, typer.Option(help="The V2 server in front of which to stand: http://HOST:PORT.")
    ],
    upstream_model: Annotated[str, typer.Option(help="The model's name on the upstream server.")],
    model_name: Annotated[
        str | None,
        typer.Option(
            help="The model's name here (default: --upstream-model); the pod's "
            "MODELDEPLOY_MODEL_NAME wins."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML: version, warmup, golden, prediction_log, limits, labels, "
            "upstream (serving/proxy_config.py)."
        ),
    ] = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = contract.SERVING_PORT,
    grpc_port: GrpcPortOption = None,
    prediction_log: PredictionLogOption = None,
    log_sample_rate: LogSampleRateOption = None,
    redact: RedactOption = None,
    instrumentation: InstrumentationOption = True,
    log_level: LogLevelOption = "info",
    body_timeout: BodyTimeoutOption = ServerLimits.body_timeout_s,
    inference_threads: InferenceThreadsOption = ServerLimits.inference_threads,
    max_connections: MaxConnectionsOption = ServerLimits.max_connections,
    keep_alive: KeepAliveOption = ServerLimits.keep_alive_s,
    max_header_bytes: MaxHeaderBytesOption = ServerLimits.max_header_bytes,
    termination_log: TerminationLogOption = None,
) -> None:
    """Stand in front of any V2 server: the runtime's validation, metrics, drift bins,
    prediction log, shadow and golden-request readiness around its model, REST and gRPC.

    Ready once the upstream's model is and the profile's golden requests through it pass;
    not ready while it is not. Exits as `serve` does: 2 bad input (flags, profile,
    --config), 3 the server cannot start, 4 the golden requests fail through the upstream."""
    from modeldeploy.serving.proxy import proxy as run

    options = _run_options(**locals())
    _serving(
        lambda: run(
            profile, upstream, upstream_model, options, model_name=model_name, config_path=config
        ),
        f"{upstream_model} at {upstream}",
    )


def _run_options(
    *,
    host: str,
    port: int,
    grpc_port: int | None,
    prediction_log: str | None,
    log_sample_rate: float | None,
    redact: list[str] | None,
    instrumentation: bool,
    log_level: str,
    body_timeout: float,
    inference_threads: int,
    max_connections: int,
    keep_alive: int,
    max_header_bytes: int,
    termination_log: str | None,
    **command: Any,  # the command's own arguments
) -> "RunOptions":
    from modeldeploy.serving.server import RunOptions
    from modeldeploy.serving.termination import termination_log as resolve_termination_log

    return RunOptions(
        host=host,
        port=port,
        grpc_port=grpc_port,
        instrumentation=instrumentation,
        log_path=prediction_log,
        log_sample_rate=log_sample_rate,
        redact=redact or (),
        log_level=log_level,
        limits=ServerLimits(
            body_timeout_s=body_timeout,
            inference_threads=inference_threads,
            max_connections=max_connections,
            keep_alive_s=keep_alive,
            max_header_bytes=max_header_bytes,
        ),
        termination_log=resolve_termination_log(termination_log),
    )


@app.command("profile")
def profile(
    *,
    model_dir: Annotated[Path, typer.Option(help="Model directory with its model.yaml.")],
    data: Annotated[Path, typer.Option(help="Training data: .csv, .parquet, .npy or .npz.")],
    target: Annotated[
        str | None,
        typer.Option(help="Label column: left out of the features, checked for leakage."),
    ] = None,
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
    background: Annotated[
        int,
        typer.Option(min=0, max=10_000, help="Training rows kept for explanations (0: none)."),
    ] = 100,
    leakage_threshold: Annotated[
        float,
        typer.Option(
            min=0.5, max=1.0, help="Flag a feature that alone predicts --target this well (0-1)."
        ),
    ] = 0.95,
    refuse_leaky: Annotated[
        bool,
        typer.Option(
            "--refuse-leaky", help="Write no profile, exit 3, if a feature leaks --target."
        ),
    ] = False,
    holdout: Annotated[
        Path | None,
        typer.Option(
            help="Held-out rows (as --data, with --target): the model's accuracy on them is "
            "recorded, the stable's labelled accuracy is held against it."
        ),
    ] = None,
) -> None:
    """Write the model's profile.json: schema, bins, baselines and golden requests; with
    --target, flag features that leak the label; with --holdout, record the accuracy."""
    from modeldeploy.profiling.holdout import Holdout
    from modeldeploy.profiling.io import profile_model_dir
    from modeldeploy.profiling.leakage import REFUSED_EXIT_CODE, LeakageCheck, LeakyTrainingData
    from modeldeploy.serving.config import ModelDirError
    from modeldeploy.serving.pipeline import ModelError

    try:
        if refuse_leaky and target is None:
            raise ValueError("--refuse-leaky needs --target (the label to check against)")
        if holdout is not None and target is None:
            raise ValueError("--holdout needs --target (the label column of its rows)")
        columns = _profile_table(data, names, drop or ())
        leakage = held = None
        if target is not None:
            labels = _pop_column(columns, target, data)
            leakage = LeakageCheck(labels, target, leakage_threshold, refuse_leaky)
        if holdout is not None and target is not None:
            held_columns = _profile_table(holdout, names, drop or ())
            held = Holdout(held_columns, _pop_column(held_columns, target, holdout), target)
        path, written = profile_model_dir(
            model_dir,
            columns,
            types=dict.fromkeys(categorical or (), "string"),
            nullable=nullable or (),
            n_bins=bins,
            golden=golden,
            seed=seed,
            leakage=leakage,
            background=background,
            holdout=held,
        )
    except LeakyTrainingData as err:
        for flag in err.flags:
            typer.secho(f"leakage: {flag.reason}", err=True, fg=typer.colors.RED)
        typer.secho(f"not profiling {model_dir}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(REFUSED_EXIT_CODE) from err
    except (ModelDirError, ModelError, ValueError, OSError) as err:
        typer.secho(f"cannot profile {model_dir}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err
    for flag in written.leakage or ():
        typer.secho(f"warning: leakage: {flag.reason}", err=True, fg=typer.colors.YELLOW)
    if written.quality is not None:
        quality = written.quality
        typer.echo(
            f"holdout accuracy {quality.holdout_accuracy:.1%} on {quality.holdout_rows} rows"
        )
    typer.echo(f"wrote {path}")


@app.command("build")
def build(
    model: Annotated[
        Path, typer.Argument(help="Trained model file (.joblib, .json, .txt, .onnx) or MLflow dir.")
    ],
    *,
    data: Annotated[
        Path, typer.Option(help="Training data as the model consumed it (.csv, .parquet, ...).")
    ],
    target: Annotated[str, typer.Option(help="Label column of --data (checked for leakage).")],
    framework: Annotated[
        str, typer.Option(help="auto (from the file), sklearn, xgboost, lightgbm, onnx, mlflow.")
    ] = "auto",
    output: Annotated[
        Path | None, typer.Option(help="Directory to write (new or empty); default NAME-VERSION.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Model name (default: the file's name, lowercased).")
    ] = None,
    version: Annotated[str, typer.Option(help="Model version.")] = "1",
    classes: Annotated[
        str | None, typer.Option(help="Format classifiers: labels in probability order, a,b.")
    ] = None,
    holdout: Annotated[
        Path | None, typer.Option(help="Held-out rows (as --data): their accuracy is recorded.")
    ] = None,
    leakage_threshold: Annotated[
        float, typer.Option(min=0.5, max=1.0, help="Refuse a feature predicting --target so well.")
    ] = 0.95,
    wheel: Annotated[
        Path | None,
        typer.Option(help="Bundle this modeldeploy wheel (default: the package index's release)."),
    ] = None,
) -> None:
    """Write a model image's build context: Containerfile, model.yaml, profile.json (with
    golden requests) and the model. Exits 3, writing nothing, when the training data fail the
    profile's checks (a feature leaking --target), 2 on bad input."""
    from modeldeploy import __version__
    from modeldeploy.buildctx.context import TrainingData, write_context
    from modeldeploy.buildctx.plan import (
        REFUSED_EXIT_CODE,
        BadBuildInput,
        BuildRefused,
        BuildRequest,
        parse_classes,
    )
    from modeldeploy.serving.config import ModelDirError
    from modeldeploy.serving.pipeline import ModelError

    model_name = name or model.name.split(".")[0].lower().replace("_", "-")
    target_dir = output or Path(f"{model_name}-{version}")
    try:
        request = BuildRequest(
            model_name,
            version,
            __version__,
            framework,
            parse_classes(classes),
            None if wheel is None else wheel.name,
        )
        training = TrainingData(data, target, holdout, leakage_threshold)
        plan, written = write_context(model, training, target_dir, request, wheel)
    except BuildRefused as err:
        typer.secho(f"not building {model}: {err}", err=True, fg=typer.colors.RED)
        typer.secho(f"nothing written to {target_dir}", err=True, fg=typer.colors.RED)
        raise typer.Exit(REFUSED_EXIT_CODE) from err
    except (BadBuildInput, ModelDirError, ModelError, ValueError, OSError) as err:
        typer.secho(f"cannot build {model}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err
    if written.quality is not None:
        typer.echo(f"holdout accuracy {written.quality.holdout_accuracy:.1%}")
    typer.echo(
        f"wrote {target_dir}: {plan.framework} model, modeldeploy[{','.join(plan.extras)}], "
        f"{len(written.golden)} golden requests; build it with "
        f"`buildah bud -t {model_name}:{version} {target_dir}`"
    )


def _profile_table(path: Path, names: str | None, drop: Sequence[str]) -> dict[str, Any]:
    from modeldeploy.profiling.io import read_table

    columns = read_table(path, names.split(",") if names else ())
    for column in drop:
        _pop_column(columns, column, path)
    return columns


def _pop_column(columns: dict[str, Any], name: str, path: Path) -> Any:
    values = columns.pop(name, None)
    if values is None:
        raise ValueError(f"{path} has no column {name!r}")
    return values


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

    _generate(output, stale_crd, write_crd, check=check)


def _generate(
    output: Path,
    stale: Callable[[Path], str | None],
    write: Callable[[Path], Path],
    *,
    check: bool,
) -> None:
    """Write a generated file, or with `check` only say whether it is current (exit 1 if not)."""
    if check:
        problem = stale(output)
        if problem:
            typer.secho(problem, err=True, fg=typer.colors.RED)
            raise typer.Exit(1)
        typer.echo(f"{output} is up to date")
    else:
        typer.echo(f"wrote {write(output)}")


docs_app = typer.Typer(help="User documentation generated from the code.")
app.add_typer(docs_app, name="docs")


@docs_app.command("reference")
def docs_reference(
    *,
    check: Annotated[
        bool, typer.Option("--check", help="Only verify that the reference is up to date.")
    ] = False,
    output: Annotated[Path, typer.Option(help="The reference file.")] = Path("docs/reference.md"),
) -> None:
    """Write the field reference: every field, default, limit and rule of the API models."""
    from modeldeploy.reference import stale_reference, write_reference

    _generate(output, stale_reference, write_reference, check=check)


# Rollouts from a terminal: list, status, history, explain-verdict, promote, approve, abort,
# pause, resume, retry, kill, unkill, and version (modeldeploy.console; kubernetes is imported
# lazily).
register_console_commands(app)


def command_line() -> None:
    """Runs the command `sys.argv` names; ends with SystemExit, as every click program."""
    from modeldeploy.console.commands import program_name

    # `kubectl modeldeploy --help` names the plugin the way people type it.
    app(prog_name=program_name(sys.argv[0]), complete_var="_MODELDEPLOY_COMPLETE")


def main() -> None:
    """The `modeldeploy` and `kubectl-modeldeploy` programs (console scripts): the command,
    then the process's end within `process_exit.EXIT_DEADLINE_S`. Only for a process of its
    own: in-process callers use `command_line`."""
    try:
        command_line()
    except SystemExit as exited:
        # What is buffered goes out first, however slowly a pipe's reader (a pager) takes it:
        # the deadline is for what is left after the output.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        end_within(exit_status(exited.code))
        raise
