"""Kopf's start among thousands of objects, linear instead of quadratic.

Until every indexed object is indexed, Kopf holds a toggle per listed object in one
`ToggleSet` (`operator_indexed`), and each object's worker, once it has indexed its object,
waits on that set. `ToggleSet.make_toggle` and `drop_toggle` wake every waiter each time
(`notify_all`), although a waiter only waits for the set's state (`is_on()`) to change: with
n objects listed over time that is O(n^2) wake-ups. At 1,000 ModelDeployments (7,000
objects with their Deployments, Services, HPAs, PDBs and pods) a restarted operator did
nothing for 5.5 minutes; at 300, 22 s (bench/bench_scale.py --restart defaults).

`install()` makes both wake the waiters only when the set's state flips, which is all a
waiter can observe (`wait_for` tests `is_on()`; a single toggle's own `turn_to` still wakes
them as before). It patches Kopf's private class, so it checks that class' shape first and
leaves Kopf alone, with a warning, when a Kopf release has changed it.
"""

import logging
from collections.abc import Iterable
from typing import Any

from kopf._cogs.aiokits import aiotoggles

log = logging.getLogger(__name__)
_INSTALLED = "_modeldeploy_wakes_on_flips"


async def _make_toggle(
    self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    await _drop_toggles(self, (toggle,))


def _shaped_as_expected(toggle_set: Any) -> bool:
    probe = toggle_set(all)
    return all(
        hasattr(probe, attribute) for attribute in ("_condition", "_toggles", "is_on")
    ) and all(hasattr(toggle_set, m) for m in ("make_toggle", "drop_toggle", "drop_toggles"))


def install() -> bool:
    """Idempotent; False (and Kopf untouched) when its ToggleSet is not the expected one."""
    toggle_set: Any = aiotoggles.ToggleSet
    if getattr(toggle_set, _INSTALLED, False):
        return True
    if not _shaped_as_expected(toggle_set):
        log.warning("kopf's ToggleSet has changed: its start stays quadratic in the objects")
        return False
    toggle_set.make_toggle = _make_toggle
    toggle_set.drop_toggle = _drop_toggle
    toggle_set.drop_toggles = _drop_toggles
    setattr(toggle_set, _INSTALLED, True)
    return True
