"""Golden requests replayed after warm-up: a model that degrades once it serves (a poisoned
cache, a drifting dependency) is caught, and a serving loop that stalls is no longer live.

Schedule. Once warm-up made the server Ready, every `interval_s` (model.yaml
`golden.interval_s`, default 30 s, or `MODELDEPLOY_GOLDEN_INTERVAL_S`; each wait jittered by
+-20% so that a Deployment's pods do not replay in step) the profile's golden requests are
answered again, one after the other, on the inference pool itself: a replay costs at most
one pool thread for the time of one golden request, and queues behind client requests like
any request, which is what makes it a probe of the pool. They go through the pipeline only,
not the HTTP handler: never in `requests_total`, the latency histogram, the drift bins, the
prediction log or the shadow. Outputs are compared as at warm-up (`warmup.check_golden`:
labels exactly, numbers within 1e-6); each golden request's result is counted in
`golden_checks_total{result=match|mismatch|error}` and its latency in
`golden_check_duration_seconds`.

Readiness. A replay matches when every golden request of it did. After `mismatch_limit`
(default 3) replays in a row that did not match (a mismatch or an error), readiness turns
false (state `mismatching`, the first problem as reason) and infer answers 503; the first
replay that matches again makes it ready again. Warm-up's own failures are left alone.

Liveness (`stalled`). The server is live unless a golden replay has been running for more
than `deadline_s` (model.yaml `golden.deadline_s`, default 60 s): then the inference pool
has completed neither that golden request nor, in that time, enough of the requests queued
before it to reach it. A slow but moving pool finishes the replay, however late, and is live
again. Before warm-up made the server Ready no replay runs, so warm-up is the operator's
warm-up timeout's business, not the kubelet's.
"""

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from random import Random

from modeldeploy.contract import GOLDEN_MATCH
from modeldeploy.profile_schema import GoldenRequest
from modeldeploy.serving.config import ServingConfig, golden_interval_s
from modeldeploy.serving.monitor import Monitor
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.warmup import GoldenCheck, Readiness, State, check_golden

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoldenSchedule:
    interval_s: float = 30.0
    deadline_s: float = 60.0
    mismatch_limit: int = 3
    jitter: float = 0.2
    """Each wait is `interval_s` times a uniform factor within 1 +- this."""

    @classmethod
    def of(cls, config: ServingConfig, env: Mapping[str, str] = os.environ) -> "GoldenSchedule":
        golden = config.golden
        return cls(golden_interval_s(config, env), golden.deadline_s, golden.mismatch_limit)

    def delay(self, rng: Random) -> float:
        """Seconds until the next replay."""
        return self.interval_s * rng.uniform(1 - self.jitter, 1 + self.jitter)


class GoldenReplays:
    """The replay loop of one server, with what liveness and readiness need from it."""

    def __init__(
        self,
        schedule: GoldenSchedule = GoldenSchedule(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.schedule = schedule
        self._clock = clock
        self._running_since: float | None = None
        self.failed_in_a_row = 0
        """Replays in a row that did not match."""

    def stalled(self) -> str | None:
        """Why the serving loop counts as stalled (not live), or None (module doc)."""
        since = self._running_since
        if since is None:
            return None
        running = self._clock() - since
        if running <= self.schedule.deadline_s:
            return None
        return (
            f"a golden replay has been running for {running:.0f} s, over the "
            f"{self.schedule.deadline_s:g} s deadline: the inference pool has stalled"
        )

    async def replay(
        self,
        pipeline: InferencePipeline,
        golden: Sequence[GoldenRequest],
        monitor: Monitor,
        readiness: Readiness,
        pool: Executor,
    ) -> list[GoldenCheck]:
        """One replay of every golden request on `pool`, counted and judged."""
        loop = asyncio.get_running_loop()
        checks = []
        self._running_since = self._clock()
        try:
            for request in golden:
                check = await loop.run_in_executor(pool, check_golden, pipeline, request)
                monitor.observe_golden(check.result, check.latency_ms / 1000)
                checks.append(check)
        finally:
            self._running_since = None
        self.judge(checks, readiness)
        return checks

    def judge(self, checks: Sequence[GoldenCheck], readiness: Readiness) -> None:
        """Readiness after a replay (module doc): only a Ready server is made unready, and
        only a mismatching one ready again."""
        problems = [c.problem for c in checks if c.result != GOLDEN_MATCH]
        if not problems:
            self.failed_in_a_row = 0
            if readiness.state is State.MISMATCHING:
                readiness.state = State.READY
                readiness.reason = f"{len(checks)} golden requests match again"
                log.info("ready: %s", readiness.reason)
            return
        self.failed_in_a_row += 1
        log.warning(
            "golden replay %d in a row did not match: %s", self.failed_in_a_row, problems[0]
        )
        limit = self.schedule.mismatch_limit
        if self.failed_in_a_row >= limit and readiness.state in (State.READY, State.MISMATCHING):
            readiness.state = State.MISMATCHING
            readiness.reason = (
                f"{self.failed_in_a_row} golden replays in a row did not match "
                f"(limit {limit}): {problems[0]}"
            )

    async def run(
        self,
        pipeline: InferencePipeline,
        golden: Sequence[GoldenRequest],
        monitor: Monitor,
        readiness: Readiness,
        pool: Executor,
        *,
        rng: Random | None = None,
    ) -> None:
        """Replays forever, one jittered interval apart (until cancelled)."""
        rng = rng or Random()
        while True:
            await asyncio.sleep(self.schedule.delay(rng))
            await self.replay(pipeline, golden, monitor, readiness, pool)
