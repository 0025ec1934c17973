"""`modeldeploy serve`: load a model directory and serve it with uvicorn."""

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from modeldeploy import tracing
from modeldeploy.contract import SERVING_PORT
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.app import Runtime, create_app
from modeldeploy.serving.config import (
    ModelDirError,
    PredictionLogConfig,
    load_config,
    warmup_max_latency_ms,
)
from modeldeploy.serving.golden import GoldenReplays, GoldenSchedule
from modeldeploy.serving.limits import DEFAULT_LIMITS, ServerLimits
from modeldeploy.serving.model import load_model, load_preprocess
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.predlog import PredictionLog
from modeldeploy.serving.protocol import Reason
from modeldeploy.serving.shadow import Mirror
from modeldeploy.serving.termination import write_termination_message


def load_profile(path: Path) -> Profile:
    try:
        return Profile.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as err:
        raise ModelDirError(f"cannot load profile {path}: {err}") from err


def load_runtime(
    model_dir: Path,
    *,
    instrumentation: bool = True,
    prediction_log: PredictionLogConfig | None = None,
    limits: ServerLimits = DEFAULT_LIMITS,
    env: Mapping[str, str] = os.environ,
) -> Runtime:
    """Everything `serve` needs, loaded and checked before the port opens."""
    config = load_config(model_dir)
    profile = load_profile(model_dir / config.profile)
    identity = Identity.resolve(config.name, config.version, config.revision, env)
    names = [f.name for f in profile.features]
    pipeline = InferencePipeline(
        profile.features,
        load_model(config, model_dir, names),
        load_preprocess(config, model_dir),
        max_batch=config.limits.max_batch,
    )
    monitor = Monitor(profile, identity, invalid_reasons=list(Reason), enabled=instrumentation)
    return Runtime(
        identity=identity,
        config=config,
        profile=profile,
        pipeline=pipeline,
        monitor=monitor,
        max_latency_ms=warmup_max_latency_ms(config, env),
        mirror=Mirror.from_env(monitor, env),
        prediction_log=PredictionLog.open(prediction_log or config.prediction_log, identity),
        limits=limits,
        golden=GoldenReplays(GoldenSchedule.of(config, env)),
    )


BROKEN_IMAGE_EXIT_CODE = 4
"""`modeldeploy serve`'s exit code after WarmupFailed (2: cannot serve, 3: did not start)."""


class WarmupFailed(Exception):
    """Warm-up found the image broken (`Readiness.broken`); the message says why."""


class StartupFailed(Exception):
    """uvicorn did not start (the port is taken, say); its log says why."""


def serve(
    model_dir: Path,
    host: str = "127.0.0.1",
    port: int = SERVING_PORT,
    *,
    instrumentation: bool = True,
    log_path: str | None = None,
    log_sample_rate: float | None = None,
    redact: Sequence[str] = (),
    log_level: str = "info",
    limits: ServerLimits = DEFAULT_LIMITS,
    termination_log: Path | None = None,
    grpc_port: int | None = None,
) -> None:
    """Serve until told to stop; with `grpc_port`, the V2 gRPC service too (on `host`). A
    model directory that cannot be served (ModelDirError) and an image that warm-up finds
    broken (WarmupFailed, after a graceful shutdown) end it with an exception, whose reason
    is also written to `termination_log` for the kubelet."""
    import uvicorn

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
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
        config = load_config(model_dir)
        log_config = config.prediction_log.model_copy(
            update={
                k: v
                for k, v in {
                    "path": log_path,
                    "sample_rate": log_sample_rate,
                    "redact": [*config.prediction_log.redact, *redact] if redact else None,
                }.items()
                if v is not None
            }
        )
        runtime = load_runtime(
            model_dir,
            instrumentation=instrumentation,
            prediction_log=PredictionLogConfig.model_validate(log_config.model_dump()),
            limits=limits,
        )
    except ModelDirError as err:
        write_termination_message(termination_log, f"cannot serve {model_dir}: {err}")
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
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime, on_broken=stop_broken, services=services),
            host=host,
            port=port,
            log_level=log_level,
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
