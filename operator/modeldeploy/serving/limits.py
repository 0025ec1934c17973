"""Limits of one `modeldeploy serve` process, its flags (imported by the CLI: stdlib only)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLimits:
    """Limits of one `modeldeploy serve` process (its flags); the model's own limits, body
    size and batch, are `LimitsConfig` in model.yaml."""

    # The whole body must arrive within this, else 408: a stalled or trickling upload must
    # not hold a connection and a slot forever (uvicorn has no body timeout of its own).
    body_timeout_s: float = 5.0
    # Threads running inference; further requests wait for one, off the event loop.
    inference_threads: int = 4
    # uvicorn's limit_concurrency: past this many connections (or tasks) uvicorn answers 503
    # itself, before the app (not counted in requests_total).
    max_connections: int = 256
    # uvicorn's timeout_keep_alive: idle keep-alive connections are closed after this.
    keep_alive_s: int = 5
    # h11's max_incomplete_event_size (uvicorn's default): the request line plus headers.
    max_header_bytes: int = 16 * 1024


DEFAULT_LIMITS = ServerLimits()
