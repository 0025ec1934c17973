"""The reconcile queue: one entry per key, events before the periodic pass, never one key on
two workers, a key asked for while it runs runs again."""

import asyncio

import pytest

from modeldeploy.workqueue import WorkQueue

pytestmark = pytest.mark.unit


async def drain(queue: WorkQueue[str], done: list[str], count: int) -> None:
    task = asyncio.create_task(queue.run())
    for _ in range(200):
        if len(done) >= count and not len(queue):
            break
        await asyncio.sleep(0.01)
    task.cancel()


def test_urgent_keys_go_first_and_each_key_once() -> None:
    done: list[str] = []

    async def work(key: str) -> None:
        done.append(key)

    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue(work, workers=1)
        for key in ("a", "b", "c", "a", "b"):
            queue.add(key, urgent=False)  # the periodic pass
        queue.add("c")  # an event about c: ahead of a and b
        queue.add("c")
        assert len(queue) == 3
        await drain(queue, done, 3)

    asyncio.run(scenario())
    assert done == ["c", "a", "b"]


def test_a_key_is_never_on_two_workers_and_runs_again_when_asked_meanwhile() -> None:
    running: set[str] = set()
    overlaps: list[str] = []
    done: list[str] = []

    async def scenario() -> None:
        async def work(key: str) -> None:
            if key in running:
                overlaps.append(key)
            running.add(key)
            if not done:
                queue.add(key)  # events while it runs: once more, after it
                queue.add(key, urgent=False)
            await asyncio.sleep(0.02)
            running.discard(key)
            done.append(key)

        queue: WorkQueue[str] = WorkQueue(work, workers=4)
        queue.add("a")
        await drain(queue, done, 2)

    asyncio.run(scenario())
    assert done == ["a", "a"]
    assert overlaps == []


def test_a_failing_reconcile_does_not_stop_its_worker() -> None:
    done: list[str] = []

    async def work(key: str) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        done.append(key)

    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue(work, workers=1)
        queue.add("bad")
        queue.add("good")
        await drain(queue, done, 1)

    asyncio.run(scenario())
    assert done == ["good"]
