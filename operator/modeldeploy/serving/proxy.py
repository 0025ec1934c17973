"""`modeldeploy proxy`: the runtime in front of any V2 server (issue 20).

The proxy is the runtime (server.assemble_runtime) whose model is a remote V2 server
(upstream.py): the same REST (JSON and binary tensor data) and gRPC front ends, validation
against the profile, metrics contract, drift bins, prediction log, labels, shadow and golden
requests as `modeldeploy serve`, so the operator's analysis cannot tell one from the other.
Its readiness is the upstream's AND the golden requests' through it (upstream_health.py).

What the runtime does around a model it runs itself and a proxy cannot do around a remote
one is refused, not ignored: preprocessing, explanations and the fallback belong to the
upstream (proxy_config.py). The features are binned as the clients send them (the upstream
preprocesses, if it does, after the proxy has counted).
"""

import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from modeldeploy.serving.app import Runtime
from modeldeploy.serving.config import ModelDirError
from modeldeploy.serving.explain import CannotExplain
from modeldeploy.serving.keepalive import ConnectionPool
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.proxy_config import load_proxy_config
from modeldeploy.serving.server import (
    DEFAULT_OPTIONS,
    RunOptions,
    assemble_runtime,
    load_profile,
    run,
)
from modeldeploy.serving.upstream import UpstreamModel, check_outputs
from modeldeploy.serving.upstream_health import UpstreamHealth, http_probe

NOT_EXPLAINED = CannotExplain("a proxy does not explain its upstream's model")
HEALTH_TIMEOUT_S = 2.0  # of a readiness probe's connect, send and read


def upstream_url(url: str) -> str:
    """`url` checked: http(s), a host, no query or fragment; without a trailing slash."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelDirError(f"--upstream {url!r} must be an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ModelDirError(f"--upstream {url!r} must have no query or fragment")
    try:
        parts.port  # noqa: B018  (raises on a port that is no number)
    except ValueError as err:
        raise ModelDirError(f"--upstream {url!r}: {err}") from err
    return url.rstrip("/")


def load_proxy_runtime(
    profile_path: Path,
    upstream: str,
    upstream_model: str,
    *,
    model_name: str | None = None,
    config_path: Path | None = None,
    options: RunOptions = DEFAULT_OPTIONS,
    env: Mapping[str, str] = os.environ,
) -> Runtime:
    """Everything `proxy` needs, checked before the port opens (the upstream is not called:
    it may well start after the proxy)."""
    url = upstream_url(upstream)
    config = load_proxy_config(config_path, model_name or upstream_model, env)
    profile = load_profile(profile_path)
    problem = check_outputs(profile.output, config.upstream)
    if problem is not None:
        raise ModelDirError(problem)
    settings = config.upstream
    pool = ConnectionPool(url, size=settings.connections, timeout_s=settings.timeout_s)
    model = UpstreamModel(pool, upstream_model, profile.features, profile.output, settings)
    pipeline = InferencePipeline(
        profile.features, model, max_batch=config.limits.max_batch, explainer=NOT_EXPLAINED
    )
    # Probes on a connection of their own: never queued behind inference requests.
    probes = ConnectionPool(url, size=1, timeout_s=HEALTH_TIMEOUT_S)
    health = UpstreamHealth(
        http_probe(probes, upstream_model), interval_s=settings.health_interval_s, url=url
    )
    return assemble_runtime(config, profile, pipeline, options, env=env, upstream=health)


def proxy(
    profile_path: Path,
    upstream: str,
    upstream_model: str,
    options: RunOptions = DEFAULT_OPTIONS,
    *,
    model_name: str | None = None,
    config_path: Path | None = None,
) -> None:
    """`modeldeploy proxy`: serves until told to stop (server.run: its exceptions)."""

    def load() -> Runtime:
        return load_proxy_runtime(
            profile_path,
            upstream,
            upstream_model,
            model_name=model_name,
            config_path=config_path,
            options=options,
        )

    run(load, options, f"{upstream_model} at {upstream}")
