"""The reconcile queue: which ModelDeployment is reconciled next, by a fixed number of
workers (client-go's workqueue, reduced to what the operator needs).

    queue = WorkQueue(reconcile, workers=4)
    queue.add(key)                  # a watch event: ahead of every routine entry
    queue.add(key, urgent=False)    # the periodic pass
    await queue.run()               # forever

- A key is queued at most once, however many events ask for it meanwhile (a rollout's pods
  changing make one reconcile, not one per pod).
- Urgent keys (something changed: a spec, a kill switch, an owned object) go before routine
  ones (the periodic pass over every ModelDeployment): at 1,000 ModelDeployments the kill
  switch of one does not wait for a pass over the other 999.
- A key is never reconciled by two workers at once; asked for while it runs, it runs again
  right after.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("modeldeploy.operator")
K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, work: Callable[[K], Awaitable[None]], workers: int) -> None:
        self._work = work
        self._workers = workers
        # dicts as ordered sets: first in, first out, one entry per key
        self._urgent: dict[K, None] = {}
        self._routine: dict[K, None] = {}
        self._running: set[K] = set()
        self._again: dict[K, bool] = {}  # asked for while running -> urgent?
        self._ready = asyncio.Event()

    def add(self, key: K, *, urgent: bool = True) -> None:
        if key in self._running:
            self._again[key] = self._again.get(key, False) or urgent
            return
        if key in self._urgent or (not urgent and key in self._routine):
            return
        if urgent:
            self._routine.pop(key, None)
            self._urgent[key] = None
        else:
            self._routine[key] = None
        self._ready.set()

    def __len__(self) -> int:
        return len(self._urgent) + len(self._routine)

    def _take(self) -> K | None:
        for lane in (self._urgent, self._routine):
            if lane:
                key = next(iter(lane))
                del lane[key]
                return key
        return None

    async def _worker(self) -> None:
        while True:
            key = self._take()
            if key is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            self._running.add(key)
            try:
                await self._work(key)
            except Exception:
                log.exception("reconcile of %s failed", key)
            finally:
                self._running.discard(key)
                if key in self._again:
                    self.add(key, urgent=self._again.pop(key))

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self._workers)))
