"""Shadow mirroring: a share of inference requests is copied to another version.

The caller's answer never waits for the shadow, nor shares anything with it but the
process: the endpoint takes the copy (`copy`: the sampling decision and the request's trace
context) while it answers, and queues it (`offer`) only once the answer is sent. `offer`
never blocks: the queue is bounded, and a copy that finds it full is dropped. Worker threads
of the mirror's own post the copies, each over a keep-alive connection of its own with a
short timeout, so none of it runs on the event loop that answers clients or on the inference
threads (keepalive.py: the standard library's `http.client`, not httpx). Results
are counted in `shadow_requests_total{result}`; the shadow's answers are ignored (it exports
its own metrics, which is what the operator compares). With tracing on, a mirrored request
carries the trace context of the request it copies: the shadow's span is a child of the
original's.
"""

import logging
import os
import queue
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from modeldeploy import tracing
from modeldeploy.contract import ENV_SHADOW_PERCENT, ENV_SHADOW_URL, SHADOW_HEADER
from modeldeploy.serving.config import ModelDirError
from modeldeploy.serving.keepalive import FAILURES, KeepAliveConnection
from modeldeploy.serving.monitor import Monitor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MirroredRequest:
    """A copy to send: the request's path and body, and the headers it cannot be read or
    traced without (binary tensor data's length, the trace context)."""

    path: str
    body: bytes
    headers: Mapping[str, str]


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
        # None: a worker's signal to stop
        self._queue: queue.Queue[MirroredRequest | None] = queue.Queue(maxsize=queue_size)
        self._worker_count = workers
        self._timeout_s = timeout_s  # of each connect, send and read
        self._random = (rng or random.Random()).random
        self._workers: list[threading.Thread] = []

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

    def copy(
        self, path: str, body: bytes, framing: Mapping[str, str] | None = None
    ) -> MirroredRequest | None:
        """The copy of a request to mirror, or None when the sample leaves it out; called in
        the request's context (its trace). `framing`: headers the body cannot be read
        without (binary tensor data's length). The body is the request's, not copied again."""
        if self.percent <= 0 or self._random() * 100 >= self.percent:
            return None
        return MirroredRequest(path, body, {**(framing or {}), **tracing.outgoing()})

    def offer(self, request: MirroredRequest) -> None:
        """Never blocks: queues the copy, or drops it (counted) when the queue is full."""
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            self._monitor.observe_shadow("dropped")

    def start(self) -> None:
        self._workers = [
            threading.Thread(target=self._work, name=f"shadow-{i}", daemon=True)
            for i in range(self._worker_count)
        ]
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        """Drops what is still queued (counted), then waits for each worker's request in
        flight (bounded by the timeouts)."""
        while True:
            try:
                if self._queue.get_nowait() is not None:
                    self._monitor.observe_shadow("dropped")
            except queue.Empty:
                break
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()
        self._workers = []

    def _work(self) -> None:
        connection = KeepAliveConnection(self.url, self._timeout_s)
        headers = {"content-type": "application/json", SHADOW_HEADER: "1"}
        while (request := self._queue.get()) is not None:
            try:
                connection.request(
                    "POST", request.path, request.body, {**headers, **request.headers}
                )
            except FAILURES as err:
                self._monitor.observe_shadow("failed")
                log.debug("shadow request failed: %r", err)
            else:
                self._monitor.observe_shadow("sent")
        connection.close()
