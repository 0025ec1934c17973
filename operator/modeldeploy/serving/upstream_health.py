"""A proxy's readiness: its upstream server is ready AND the golden requests through it
pass (`modeldeploy proxy`, serving/proxy.py).

Before warm-up, the proxy waits for the upstream's model to be ready (a sidecar usually
starts before the server it fronts has loaded its model): polled every `interval_s`,
without bound (the operator's warm-up timeout decides), the reason saying what the
upstream answered. Then warm-up runs the golden requests through the upstream as `serve`
runs them through its model: wrong outputs mark the image broken (exit 4). Once ready, the
upstream is polled again every `interval_s`: when it stops being ready, readiness turns false
(state `upstream_unready`; infer answers 503); when it is ready again, the golden requests
are run through it once more, and only when they all match is the proxy ready again.
The golden replays (golden.py) run alongside, unchanged.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from modeldeploy.contract import GOLDEN_MATCH
from modeldeploy.profile_schema import GoldenRequest
from modeldeploy.serving.keepalive import FAILURES, ConnectionPool
from modeldeploy.serving.monitor import Monitor
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.warmup import GoldenCheck, Readiness, State, check_golden

log = logging.getLogger(__name__)
Probe = Callable[[], str | None]
"""Why the upstream is not ready, or None when it is (blocking: run off the event loop)."""


def ready_path(model: str) -> str:
    return f"/v2/models/{model}/ready"


def http_probe(pool: ConnectionPool, model: str) -> Probe:
    """The upstream's model readiness (`GET /v2/models/{model}/ready` answering 200)."""
    path = ready_path(model)

    def probe() -> str | None:
        try:
            reply = pool.request("GET", path)
        except FAILURES as err:
            return f"GET {path} failed: {err!r}"
        if reply.status == 200:
            return None
        return f"GET {path} answered {reply.status}"

    return probe


def lost(readiness: Readiness, why: str) -> bool:
    """Readiness after a probe found the upstream not ready; True when this turned it false.
    Only a proxy that served (ready, or mismatching) is turned."""
    if readiness.state is State.UPSTREAM_UNREADY:
        readiness.reason = f"upstream not ready: {why}"  # what it answers now
    if readiness.state not in (State.READY, State.MISMATCHING):
        return False
    readiness.state = State.UPSTREAM_UNREADY
    readiness.reason = f"upstream not ready: {why}"
    log.warning("not ready: %s", readiness.reason)
    return True


def regained(readiness: Readiness, checks: Sequence[GoldenCheck]) -> bool:
    """Readiness once the upstream is ready again and the golden requests were run through
    it (`checks`): ready when all matched; True when this made it ready."""
    if readiness.state is not State.UPSTREAM_UNREADY:
        return False
    problems = [c.problem for c in checks if c.result != GOLDEN_MATCH]
    if problems:
        readiness.reason = f"upstream ready again, but a golden request failed: {problems[0]}"
        return False
    readiness.state = State.READY
    readiness.reason = f"upstream ready again; {len(checks)} golden requests through it match"
    log.info("ready: %s", readiness.reason)
    return True


class UpstreamHealth:
    """The upstream's part in a proxy's readiness (module doc)."""

    def __init__(self, probe: Probe, *, interval_s: float = 1.0, url: str = "") -> None:
        self._probe = probe
        self.interval_s = interval_s
        self.url = url  # for messages

    async def wait_ready(self, readiness: Readiness) -> None:
        """Returns once the upstream is ready; until then, readiness says why it waits."""
        while (why := await asyncio.to_thread(self._probe)) is not None:
            readiness.reason = f"warming up: waiting for the upstream {self.url}: {why}"
            await asyncio.sleep(self.interval_s)
        log.info("upstream %s is ready", self.url)

    async def watch(
        self,
        pipeline: InferencePipeline,
        golden: Sequence[GoldenRequest],
        monitor: Monitor,
        readiness: Readiness,
        pool: Executor,
    ) -> None:
        """Follows the upstream's readiness forever (until cancelled)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval_s)
            why = await asyncio.to_thread(self._probe)
            if why is not None:
                lost(readiness, why)
                continue
            if readiness.state is not State.UPSTREAM_UNREADY:
                continue
            checks = []
            for request in golden:
                check = await loop.run_in_executor(pool, check_golden, pipeline, request)
                monitor.observe_golden(check.result, check.latency_ms / 1000)
                checks.append(check)
            regained(readiness, checks)
