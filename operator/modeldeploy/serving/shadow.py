"""Shadow mirroring: a share of inference requests is copied to another version.

The caller's response never waits for the shadow: `offer` only puts the body in a bounded
queue (dropping it when full), and a few background workers post it with short timeouts.
Results are counted in `shadow_requests_total{result}`; the shadow's answers are ignored
(it exports its own metrics, which is what the operator compares). With tracing on, a
mirrored request carries the trace context of the request it copies: the shadow's span is a
child of the original's.
"""

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Mapping

import httpx

from modeldeploy import tracing
from modeldeploy.contract import ENV_SHADOW_PERCENT, ENV_SHADOW_URL, SHADOW_HEADER
from modeldeploy.serving.config import ModelDirError
from modeldeploy.serving.monitor import Monitor

log = logging.getLogger(__name__)


class Mirror:
    def __init__(
        self,
        url: str,
        percent: float,
        monitor: Monitor,
        *,
        queue_size: int = 256,
        workers: int = 4,
        timeout_s: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.percent = percent
        self._monitor = monitor
        # (path, body, framing and trace context headers)
        self._queue: asyncio.Queue[tuple[str, bytes, dict[str, str]]] = asyncio.Queue(
            maxsize=queue_size
        )
        self._worker_count = workers
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 0.25))
        self._random = (rng or random.Random()).random
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_env(cls, monitor: Monitor, env: Mapping[str, str] = os.environ) -> "Mirror | None":
        """The operator sets the shadow's URL and share on the pods being mirrored."""
        url = env.get(ENV_SHADOW_URL, "").strip()
        if not url:
            return None
        if not url.startswith(("http://", "https://")):
            raise ModelDirError(f"{ENV_SHADOW_URL}={url!r} must be an http(s) URL")
        raw = env.get(ENV_SHADOW_PERCENT, "100").strip() or "100"
        try:
            percent = float(raw)
        except ValueError:
            percent = -1.0
        if not 0 <= percent <= 100:
            raise ModelDirError(f"{ENV_SHADOW_PERCENT}={raw!r} must be a number from 0 to 100")
        return cls(url, percent, monitor)

    def offer(self, path: str, body: bytes, framing: Mapping[str, str] | None = None) -> None:
        """Never blocks: samples, then queues the request or drops it when the queue is full.
        `framing`: headers the body cannot be read without (binary tensor data's length)."""
        if self.percent <= 0 or self._random() * 100 >= self.percent:
            return
        try:
            self._queue.put_nowait((path, body, {**(framing or {}), **tracing.outgoing()}))
        except asyncio.QueueFull:
            self._monitor.observe_shadow("dropped")

    async def start(self) -> None:
        limits = httpx.Limits(max_connections=self._worker_count)
        self._client = httpx.AsyncClient(timeout=self._timeout, limits=limits)
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._worker_count)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    async def _work(self) -> None:
        assert self._client is not None
        headers = {"content-type": "application/json", SHADOW_HEADER: "1"}
        while True:
            path, body, context = await self._queue.get()
            try:
                await self._client.post(
                    self.url + path, content=body, headers={**headers, **context}
                )
            except httpx.HTTPError as err:
                self._monitor.observe_shadow("failed")
                log.debug("shadow request failed: %r", err)
            else:
                self._monitor.observe_shadow("sent")
