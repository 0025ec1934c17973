"""`modeldeploy serve` and `modeldeploy proxy` (proxy.py): one runtime assembly
(`assemble_runtime`) around the pipeline that answers, served with uvicorn (`run`)."""

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from modeldeploy import tracing
from modeldeploy.contract import SERVING_PORT
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.app import Runtime, create_app, missing_probabilities
from modeldeploy.serving.attribution_sampler import AttributionSampler
from modeldeploy.serving.config import (
    ModelDirError,
    PredictionLogConfig,
    ServingConfig,
    load_config,
    warmup_max_latency_ms,
)
from modeldeploy.serving.explain import CannotExplain, Explainer, explainer_for
from modeldeploy.serving.fallback import check_fallback, load_fallback
from modeldeploy.serving.golden import GoldenReplays, GoldenSchedule
from modeldeploy.serving.limits import DEFAULT_LIMITS, ServerLimits
from modeldeploy.serving.model import Model, load_model, load_preprocess
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.predlog import PredictionLog
from modeldeploy.serving.protocol import InvalidRequest, Reason, RequestParser
from modeldeploy.serving.shadow import Mirror
from modeldeploy.serving.termination import write_termination_message
from modeldeploy.serving.upstream_health import UpstreamHealth

log = logging.getLogger(__name__)


def load_profile(path: Path) -> Profile:
    try:
        return Profile.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as err:
        raise ModelDirError(f"cannot load profile {path}: {err}") from err


def load_explainer(model: Model, profile: Profile) -> Explainer | CannotExplain | None:
    """The model's explainer against the profile's background rows; why it cannot be
    explained (CannotExplain), or None when the profile has no background. Logged either
    way, so the image says at start whether `parameters.explain` will be answered."""
    if profile.background is None:
        log.info("explanations: off: the profile has no background rows")
        return None
    try:
        rows = RequestParser(profile.features, max_batch=1 << 30).parse(profile.background)
    except InvalidRequest as err:
        raise ModelDirError(f"the profile's background rows are invalid: {err.message}") from err
    try:
        explainer = explainer_for(model, rows.columns)
    except CannotExplain as err:
        log.warning("explanations: refused: %s", err)
        return err
    log.info(
        "explanations: in %s, relative to %.6g, the mean over %d background rows",
        explainer.space,
        explainer.expected,
        rows.rows,
    )
    return explainer


@dataclass(frozen=True)
class RunOptions:
    """How `serve` and `proxy` alike run: their shared flags."""

    host: str = "127.0.0.1"
    port: int = SERVING_PORT
    grpc_port: int | None = None  # the V2 gRPC service's too (on `host`); None: REST only
    instrumentation: bool = True
    log_path: str | None = None  # the prediction log's flags, over the configuration's
    log_sample_rate: float | None = None
    redact: Sequence[str] = ()
    log_level: str = "info"
    limits: ServerLimits = DEFAULT_LIMITS
    termination_log: Path | None = None

    def prediction_log(self, configured: PredictionLogConfig) -> PredictionLogConfig:
        """The configuration's prediction log with the flags given over it (redactions
        added to the configured ones)."""
        update = {
            "path": self.log_path,
            "sample_rate": self.log_sample_rate,
            "redact": [*configured.redact, *self.redact] if self.redact else None,
        }
        merged = configured.model_dump() | {k: v for k, v in update.items() if v is not None}
        return PredictionLogConfig.model_validate(merged)


DEFAULT_OPTIONS = RunOptions()


def assemble_runtime(
    config: ServingConfig,
    profile: Profile,
    pipeline: InferencePipeline,
    options: RunOptions = DEFAULT_OPTIONS,
    *,
    env: Mapping[str, str] = os.environ,
    attribution_rate: float = 0.0,
    upstream: UpstreamHealth | None = None,
) -> Runtime:
    """The one runtime `serve` and `proxy` both run, around the pipeline that answers: the
    same identity, metrics, warm-up and golden replays, prediction log, labels and shadow."""
    identity = Identity.resolve(config.name, config.version, config.revision, env)
    monitor = Monitor(
        profile,
        identity,
        invalid_reasons=list(Reason),
        enabled=options.instrumentation,
        attributions=attribution_rate > 0,
        fallback=pipeline.fallback is not None,
    )
    return Runtime(
        identity=identity,
        config=config,
        profile=profile,
        pipeline=pipeline,
        monitor=monitor,
        max_latency_ms=warmup_max_latency_ms(config, env),
        mirror=Mirror.from_env(monitor, env),
        prediction_log=PredictionLog.open(options.prediction_log(config.prediction_log), identity),
        limits=options.limits,
        golden=GoldenReplays(GoldenSchedule.of(config, env)),
        attribution_sampler=(
            AttributionSampler(pipeline, monitor, attribution_rate)
            if attribution_rate > 0
            else None
        ),
        upstream=upstream,
    )


def load_runtime(
    model_dir: Path, options: RunOptions = DEFAULT_OPTIONS, env: Mapping[str, str] = os.environ
) -> Runtime:
    """Everything `serve` needs, loaded and checked before the port opens."""
    config = load_config(model_dir)
    profile = load_profile(model_dir / config.profile)
    names = [f.name for f in profile.features]
    model = load_model(config, model_dir, names)
    missing = missing_probabilities(config, profile)
    if missing is not None:
        log.warning("the model answers %s", missing)
    explainer = load_explainer(model, profile)
    sample_rate = config.explain.sample_rate
    if sample_rate > 0 and not isinstance(explainer, Explainer):
        why = explainer or "its profile has no background rows (rebuild the profile)"
        raise ModelDirError(f"explain.sample_rate is {sample_rate:g} but {why}")
    check_fallback(config, profile)
    pipeline = InferencePipeline(
        profile.features,
        model,
        load_preprocess(config, model_dir),
        max_batch=config.limits.max_batch,
        explainer=explainer,
        fallback=load_fallback(config, model_dir),
    )
    return assemble_runtime(
        config, profile, pipeline, options, env=env, attribution_rate=sample_rate
    )


BROKEN_IMAGE_EXIT_CODE = 4
"""The exit code of `serve` and `proxy` after WarmupFailed (2: cannot serve, 3: did not
start)."""


class WarmupFailed(Exception):
    """Warm-up found the image broken (`Readiness.broken`); the message says why."""


class StartupFailed(Exception):
    """uvicorn did not start (the port is taken, say); its log says why."""


def run(load: Callable[[], Runtime], options: RunOptions, what: str) -> None:
    """Loads the runtime and serves it until told to stop; with `options.grpc_port`, the V2
    gRPC service too. A configuration that cannot be served (ModelDirError, from `load`)
    and an image that warm-up finds broken (WarmupFailed, after a graceful shutdown) end it
    with an exception, whose reason is also written to the termination log for the kubelet.
    `what` names what is served, in messages."""
    import uvicorn

    logging.basicConfig(
        level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    host, port, grpc_port = options.host, options.port, options.grpc_port
    termination_log = options.termination_log
    if grpc_port is not None:
        try:
            from modeldeploy.serving.v2grpc.service import grpc_service
        except ImportError as err:
            message = (
                f"--grpc-port {grpc_port} needs the grpc extra "
                f"(pip install 'modeldeploy[serve,grpc]'): {err}"
            )
            write_termination_message(termination_log, message)
            raise StartupFailed(message) from err
    try:
        runtime = load()
    except ModelDirError as err:
        write_termination_message(termination_log, f"cannot serve {what}: {err}")
        raise
    # Traces (when OTEL_* asks for them) name the model's service after the model.
    tracing.setup(runtime.identity.model, version=runtime.identity.version)

    def stop_broken(reason: str) -> None:
        write_termination_message(termination_log, reason)
        server.should_exit = True

    services = []
    if grpc_port is not None:
        address = f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"
        services.append(grpc_service(address, runtime.config.limits.max_body_bytes))
    limits = options.limits
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime, on_broken=stop_broken, services=services),
            host=host,
            port=port,
            log_level=options.log_level,
            access_log=False,
            lifespan="on",
            limit_concurrency=limits.max_connections,
            timeout_keep_alive=limits.keep_alive_s,
            h11_max_incomplete_event_size=limits.max_header_bytes,
        )
    )
    server.run()
    if runtime.readiness.broken:
        raise WarmupFailed(runtime.readiness.reason)
    if not server.started:
        ports = f"{port}" if grpc_port is None else f"{port} (gRPC {grpc_port})"
        raise StartupFailed(f"the server did not start on {host}:{ports}")


def serve(model_dir: Path, options: RunOptions = DEFAULT_OPTIONS) -> None:
    """`modeldeploy serve`: the model directory's own model (`run`)."""
    run(lambda: load_runtime(model_dir, options), options, str(model_dir))
