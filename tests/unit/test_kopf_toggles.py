"""Kopf's indexing barrier with modeldeploy.kopf_toggles installed: waiters are released
exactly when the set turns on, and woken a number of times linear in the objects, not
quadratic (what made a restart among 7,000 objects take minutes)."""

import asyncio

import pytest
from kopf._cogs.aiokits import aiotoggles

from modeldeploy import kopf_toggles

pytestmark = pytest.mark.unit
OBJECTS = 300


async def _listed_one_by_one(toggles: aiotoggles.ToggleSet) -> tuple[int, list[bool]]:
    """Kopf's pattern: a toggle per listed object, its worker drops it and waits for all;
    returns how often waiters looked at the set, and whether each was released early."""
    looks = 0
    original = toggles.is_on

    def counted() -> bool:
        nonlocal looks
        looks += 1
        return original()

    toggles.is_on = counted  # type: ignore[method-assign]
    blocker = await toggles.make_toggle(name="blocker")
    released_early: list[bool] = []

    async def worker(toggle: aiotoggles.Toggle) -> None:
        await toggles.drop_toggle(toggle)
        await toggles.wait_for(True)
        released_early.append(blocker in toggles)

    workers = []
    for i in range(OBJECTS):
        toggle = await toggles.make_toggle(name=str(i))
        workers.append(asyncio.create_task(worker(toggle)))
        await asyncio.sleep(0)  # the next object arrives after this one's worker ran
    await asyncio.sleep(0)
    assert not any(w.done() for w in workers)  # the blocker holds them all
    await toggles.drop_toggle(blocker)
    await asyncio.wait_for(asyncio.gather(*workers), timeout=10)
    return looks, released_early


def test_waiters_are_released_once_the_set_turns_on_and_woken_linearly() -> None:
    assert kopf_toggles.install()
    assert kopf_toggles.install()  # idempotent
    looks, released_early = asyncio.run(_listed_one_by_one(aiotoggles.ToggleSet(all)))
    assert released_early == [False] * OBJECTS
    # Each waiter looks when it starts waiting and when it is released, each change once
    # or twice: a few per object. Kopf's own notify-all on every change: ~OBJECTS^2 / 2.
    assert looks < 8 * OBJECTS


def test_a_single_toggle_turning_still_wakes_the_waiters() -> None:
    kopf_toggles.install()

    async def scenario() -> None:
        toggles = aiotoggles.ToggleSet(any)
        paused = await toggles.make_toggle(False, name="pause")
        waiter = asyncio.create_task(toggles.wait_for(True))
        await asyncio.sleep(0)
        assert not waiter.done()
        await paused.turn_to(True)
        await asyncio.wait_for(waiter, timeout=5)
        dropped = asyncio.create_task(toggles.wait_for(False))
        await asyncio.sleep(0)
        await toggles.drop_toggles([paused])  # any() of nothing: off again
        await asyncio.wait_for(dropped, timeout=5)

    asyncio.run(scenario())
