"""Readiness: the image answers its golden requests correctly and fast enough.

Wrong outputs, model errors and a profile without golden requests fail warm-up for good and
mark the image broken (wrong weights, library or preprocessing version: the same on every
node and every start, so `serve` exits with the reason for the kubelet to report). Slow
outputs are retried for a bounded number of rounds, since the first calls pay for lazy
loading and cold caches; slowness that outlasts them fails readiness but is no proof of a
broken image (a busy node, CPU throttling): the server keeps running, not Ready, and the
operator's warm-up timeout decides.
"""

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modeldeploy.contract import GOLDEN_ERROR, GOLDEN_MATCH, GOLDEN_MISMATCH
from modeldeploy.profile_schema import GoldenRequest
from modeldeploy.serving.pipeline import InferencePipeline, ModelError
from modeldeploy.serving.protocol import InvalidRequest

log = logging.getLogger(__name__)
# Golden outputs are compared with this tolerance: the same code on the same libraries
# reproduces them to ~1e-12; anything coarser means different weights or code.
TOLERANCE = 1e-6


class State(StrEnum):
    WARMING = "warming"
    READY = "ready"
    FAILED = "failed"
    MISMATCHING = "mismatching"
    """Ready once, then golden replays kept not matching (serving/golden.py); ready again
    after one that matches."""
    UPSTREAM_UNREADY = "upstream_unready"
    """A proxy's upstream server stopped being ready (serving/upstream_health.py); ready
    again once it is and the golden requests through it pass."""


@dataclass
class Readiness:
    state: State = State.WARMING
    reason: str = "warming up: golden requests not yet answered"
    broken: bool = False
    """Failed for a reason of the image itself, which no restart or other node changes."""

    def fail(self, reason: str, *, broken: bool) -> None:
        self.state, self.reason, self.broken = State.FAILED, reason, broken
        log.error("not ready: %s", reason)

    @property
    def ready(self) -> bool:
        return self.state is State.READY


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(expected, actual, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    return bool(expected == actual)


def mismatch(expected: Mapping[str, list[Any]], outputs: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the outputs differ from the expected ones, or None when they match."""
    produced = {o["name"]: o["data"] for o in outputs}
    for name, want in expected.items():
        got = produced.get(name)
        if got is None:
            return f"output {name!r} is missing"
        if len(got) != len(want):
            return f"output {name!r} has {len(got)} values, expected {len(want)}"
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            if not _same(w, g):
                return f"output {name!r}[{i}] is {g!r}, expected {w!r}"
    return None


@dataclass(frozen=True)
class GoldenCheck:
    """One golden request answered: its result (`contract.GOLDEN_RESULTS`), why it did not
    match (None when it did) and how long it took."""

    result: str
    problem: str | None
    latency_ms: float


def check_golden(pipeline: InferencePipeline, golden: GoldenRequest) -> GoldenCheck:
    """Runs one golden request and compares its outputs with the expected ones."""
    start = time.perf_counter()
    try:
        outputs = pipeline.infer(golden.request).outputs
    except (InvalidRequest, ModelError) as err:
        latency_ms = (time.perf_counter() - start) * 1000
        return GoldenCheck(GOLDEN_ERROR, f"{golden.name}: {err}", latency_ms)
    latency_ms = (time.perf_counter() - start) * 1000
    problem = mismatch(golden.expected, outputs)
    if problem is None:
        return GoldenCheck(GOLDEN_MATCH, None, latency_ms)
    return GoldenCheck(GOLDEN_MISMATCH, f"{golden.name}: {problem}", latency_ms)


async def warm_up(
    pipeline: InferencePipeline,
    golden: Sequence[GoldenRequest],
    readiness: Readiness,
    *,
    max_latency_ms: float,
    rounds: int,
) -> None:
    """Runs the golden requests off the event loop until they pass, then flips readiness."""
    if not golden:
        readiness.fail("the profile has no golden requests", broken=True)
        return
    for round_number in range(1, rounds + 1):
        slowest = 0.0
        for request in golden:
            check = await asyncio.to_thread(check_golden, pipeline, request)
            if check.problem is not None:
                readiness.fail(f"golden request failed: {check.problem}", broken=True)
                return
            slowest = max(slowest, check.latency_ms)
        if slowest <= max_latency_ms:
            readiness.state = State.READY
            readiness.reason = (
                f"{len(golden)} golden requests passed in round {round_number}, "
                f"slowest {slowest:.1f} ms <= {max_latency_ms:g} ms"
            )
            log.info("ready: %s", readiness.reason)
            return
        readiness.reason = (
            f"warming up: round {round_number}/{rounds} slowest golden request took "
            f"{slowest:.1f} ms > {max_latency_ms:g} ms"
        )
        log.info("%s", readiness.reason)
    slow = readiness.reason.removeprefix("warming up: ")
    bound = f"golden requests stayed slower than {max_latency_ms:g} ms"
    readiness.fail(f"{bound}: {slow}", broken=False)
