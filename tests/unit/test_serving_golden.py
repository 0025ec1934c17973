"""Golden replays after warm-up (serving/golden.py): their schedule, that they compare as
warm-up does, what they count (and do not), when readiness turns and the liveness rule."""

import asyncio
import json
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from random import Random
from typing import Any

import numpy as np
import pytest
from starlette.types import Message
from test_serving import FEATURES, _golden, _profile, _samples, classify

from modeldeploy import contract as c
from modeldeploy.serving.app import InferencePath, Runtime, create_app
from modeldeploy.serving.config import ModelConfig, ModelDirError
from modeldeploy.serving.golden import GoldenReplays, GoldenSchedule
from modeldeploy.serving.model import CallableModel, Prediction
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.protocol import Reason
from modeldeploy.serving.v2grpc import grpc_predict_v2_pb2 as pb
from modeldeploy.serving.v2grpc.service import InferenceServicer
from modeldeploy.serving.warmup import Readiness, State, check_golden, mismatch

pytestmark = pytest.mark.unit

IDENTITY = Identity("m", "1", "r")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_schedule_comes_from_model_yaml_unless_the_env_says_otherwise() -> None:
    config = ModelConfig.model_validate(
        {"name": "m", "version": "1", "golden": {"interval_s": 10, "mismatch_limit": 5}}
    )
    assert GoldenSchedule.of(config, {}) == GoldenSchedule(10.0, 60.0, 5)
    assert GoldenSchedule.of(config, {c.ENV_GOLDEN_INTERVAL_S: "2.5"}).interval_s == 2.5
    assert GoldenSchedule.of(ModelConfig(name="m", version="1"), {}).interval_s == 30.0
    with pytest.raises(ModelDirError, match="not a positive number"):
        GoldenSchedule.of(config, {c.ENV_GOLDEN_INTERVAL_S: "0"})


def test_waits_are_jittered_within_a_fifth_of_the_interval() -> None:
    rng = Random(1)
    delays = [GoldenSchedule(interval_s=10).delay(rng) for _ in range(1000)]
    assert 8.0 <= min(delays) < 8.2
    assert 11.8 < max(delays) <= 12.0


def _setup(
    model: Any = classify, *, expected: str = "no", limit: int = 3
) -> tuple[InferencePipeline, Monitor, Readiness, GoldenReplays]:
    pipeline = InferencePipeline(FEATURES, CallableModel(model))
    monitor = Monitor(_profile([_golden(expected)]), IDENTITY, invalid_reasons=list(Reason))
    readiness = Readiness(State.READY, "warm")
    return pipeline, monitor, readiness, GoldenReplays(GoldenSchedule(mismatch_limit=limit))


def _replay(
    pipeline: InferencePipeline,
    monitor: Monitor,
    readiness: Readiness,
    replays: GoldenReplays,
    pool: ThreadPoolExecutor,
) -> str | None:
    checks = asyncio.run(replays.replay(pipeline, monitor.profile.golden, monitor, readiness, pool))
    (check,) = checks
    return check.problem


def _nonzero(monitor: Monitor, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in _samples(monitor).items() if n == name and v}


def test_a_replay_compares_as_warm_up_and_counts_only_golden_series() -> None:
    pipeline, monitor, readiness, replays = _setup(expected="yes")
    with ThreadPoolExecutor(1) as pool:
        problem = _replay(pipeline, monitor, readiness, replays, pool)
    golden = monitor.profile.golden[0]
    outputs = pipeline.infer(golden.request).outputs
    assert problem == f"g: {mismatch(golden.expected, outputs)}"  # warm-up's words, not a twin
    assert check_golden(pipeline, golden).problem == problem
    results = {
        dict(k)[c.LABEL_RESULT]: v for k, v in _nonzero(monitor, c.GOLDEN_CHECKS_TOTAL).items()
    }
    assert results == {c.GOLDEN_MISMATCH: 1.0}
    assert _nonzero(monitor, c.GOLDEN_CHECK_DURATION_SECONDS + "_count")
    assert not _nonzero(monitor, c.REQUESTS_TOTAL)
    assert not _nonzero(monitor, c.REQUEST_DURATION_SECONDS + "_count")
    assert not _nonzero(monitor, c.FEATURE_BIN_TOTAL)
    assert not _nonzero(monitor, c.PREDICTION_BIN_TOTAL)


def test_every_result_exists_at_zero_and_errors_are_counted_as_such() -> None:
    def failing(columns: Mapping[str, np.ndarray]) -> Prediction:
        raise RuntimeError("cache poisoned")

    pipeline, monitor, readiness, replays = _setup(failing)
    samples = _samples(monitor)
    for result in c.GOLDEN_RESULTS:
        labels = frozenset({**IDENTITY.__dict__, c.LABEL_RESULT: result}.items())
        assert samples[(c.GOLDEN_CHECKS_TOTAL, labels)] == 0
    with ThreadPoolExecutor(1) as pool:
        assert "cache poisoned" in str(_replay(pipeline, monitor, readiness, replays, pool))
    results = {
        dict(k)[c.LABEL_RESULT]: v for k, v in _nonzero(monitor, c.GOLDEN_CHECKS_TOTAL).items()
    }
    assert results == {c.GOLDEN_ERROR: 1.0}


def test_readiness_turns_false_after_the_limit_of_mismatches_and_back_on_a_match() -> None:
    drifted = threading.Event()

    def drifting(columns: Mapping[str, np.ndarray]) -> Prediction:
        return classify({**columns, "age": columns["age"] * (2.0 if drifted.is_set() else 1.0)})

    pipeline, monitor, readiness, replays = _setup(drifting, limit=3)
    with ThreadPoolExecutor(1) as pool:
        assert _replay(pipeline, monitor, readiness, replays, pool) is None
        drifted.set()
        for in_a_row in (1, 2):
            assert _replay(pipeline, monitor, readiness, replays, pool) is not None
            assert (readiness.state, replays.failed_in_a_row) == (State.READY, in_a_row)
        problem = _replay(pipeline, monitor, readiness, replays, pool)
        assert readiness.state is State.MISMATCHING
        assert not readiness.ready
        assert readiness.reason == f"3 golden replays in a row did not match (limit 3): {problem}"
        drifted.clear()
        assert _replay(pipeline, monitor, readiness, replays, pool) is None
        assert readiness.state is State.READY
        assert replays.failed_in_a_row == 0


def test_a_replay_leaves_warm_up_failures_alone() -> None:
    pipeline, monitor, readiness, replays = _setup(expected="yes", limit=1)
    readiness.fail("golden requests stayed slower than 1 ms", broken=False)
    with ThreadPoolExecutor(1) as pool:
        _replay(pipeline, monitor, readiness, replays, pool)
    assert readiness.state is State.FAILED


async def _get(runtime: Runtime, path: str) -> tuple[int, Any]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [], "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await create_app(runtime)(scope, receive, send)
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_live_is_503_once_a_replay_outlasts_its_deadline_on_a_stalled_pool() -> None:
    """The rule: not live while a golden replay has been running longer than deadline_s."""
    release = threading.Event()
    clock = _Clock()
    pipeline, monitor, readiness, _ = _setup()
    replays = GoldenReplays(GoldenSchedule(deadline_s=60), clock=clock)
    runtime = Runtime(
        identity=IDENTITY,
        config=ModelConfig(name="m", version="1"),
        profile=monitor.profile,
        pipeline=pipeline,
        monitor=monitor,
        max_latency_ms=500,
        readiness=readiness,
        golden=replays,
    )

    async def scenario() -> list[tuple[int, Any]]:
        with ThreadPoolExecutor(1) as pool:
            servicer = InferenceServicer(InferencePath(runtime, pool))

            async def grpc_live() -> bool:
                answer = await servicer.ServerLive(pb.ServerLiveRequest(), None)
                return bool(answer.live)

            blocked = pool.submit(release.wait)  # the one thread completes nothing
            replay = asyncio.create_task(
                replays.replay(pipeline, monitor.profile.golden, monitor, readiness, pool)
            )
            await asyncio.sleep(0)  # the replay is queued behind the stuck request
            answers = [await _get(runtime, c.LIVE_PATH)]
            clock.now += 60
            answers.append(await _get(runtime, c.LIVE_PATH))  # at the deadline: still live
            clock.now += 1
            answers.append(await _get(runtime, c.LIVE_PATH))
            assert not await grpc_live()  # the same rule on both transports
            release.set()
            blocked.result()
            await replay
            answers.append(await _get(runtime, c.LIVE_PATH))  # moving again
            assert await grpc_live()
        return answers

    first, at_deadline, stalled, moving = asyncio.run(scenario())
    assert first == at_deadline == moving == (200, {"live": True})
    assert stalled[0] == 503
    assert stalled[1]["live"] is False
    assert "running for 61 s, over the 60 s deadline" in stalled[1]["reason"]
