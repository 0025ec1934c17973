"""Readiness: the image answers its golden requests correctly and fast enough.

Wrong outputs fail warm-up for good (the image is broken: wrong weights, library or
preprocessing version); slow outputs are retried for a bounded number of rounds, since the
first calls pay for lazy loading and cold caches.
"""

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modeldeploy.profiling.schema import GoldenRequest
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


@dataclass
class Readiness:
    state: State = State.WARMING
    reason: str = "warming up: golden requests not yet answered"

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


def check_golden(pipeline: InferencePipeline, golden: GoldenRequest) -> tuple[str | None, float]:
    """Runs one golden request; returns (problem or None, latency in milliseconds)."""
    start = time.perf_counter()
    try:
        outputs = pipeline.infer(golden.request).outputs
    except (InvalidRequest, ModelError) as err:
        return f"{golden.name}: {err}", (time.perf_counter() - start) * 1000
    latency_ms = (time.perf_counter() - start) * 1000
    problem = mismatch(golden.expected, outputs)
    return (None if problem is None else f"{golden.name}: {problem}"), latency_ms


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
        readiness.state, readiness.reason = State.FAILED, "the profile has no golden requests"
        log.error("not ready: %s", readiness.reason)
        return
    for round_number in range(1, rounds + 1):
        slowest = 0.0
        for request in golden:
            problem, latency_ms = await asyncio.to_thread(check_golden, pipeline, request)
            if problem is not None:
                readiness.state = State.FAILED
                readiness.reason = f"golden request failed: {problem}"
                log.error("not ready: %s", readiness.reason)
                return
            slowest = max(slowest, latency_ms)
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
    readiness.state = State.FAILED
    readiness.reason = f"golden requests stayed slower than {max_latency_ms:g} ms: " + (
        readiness.reason.removeprefix("warming up: ")
    )
    log.error("not ready: %s", readiness.reason)
