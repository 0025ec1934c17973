"""A thread pool shared fairly among owners (ModelDeployments): one owner whose Prometheus
never answers holds at most `per_owner` threads, and owners take turns for the others.

A plain FIFO pool lets one owner's queries, stuck for their whole HTTP timeout, occupy every
thread while its neighbours' queries wait in line past their own round's deadline. Here the
next query to start is the oldest of the next owner in turn that runs fewer than `per_owner`,
and a query whose future was cancelled (its round gave up on it) never starts.
"""

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class FairPool:
    def __init__(self, workers: int, per_owner: int, name: str = "pool") -> None:
        if workers < 1 or not 1 <= per_owner <= workers:
            raise ValueError("need 1 <= per_owner <= workers")
        self.per_owner = per_owner
        self._queues: OrderedDict[Hashable, deque[tuple[Future[Any], Callable[[], Any]]]]
        self._queues = OrderedDict()
        self._running: dict[Hashable, int] = {}
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, owner: Hashable, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("pool is closed")
            self._queues.setdefault(owner, deque()).append((future, call))
            self._ready.notify()
        return future

    def running(self, owner: Hashable) -> int:
        with self._ready:
            return self._running.get(owner, 0)

    def close(self) -> None:
        """Cancel what has not started; running calls finish on their own (daemon threads)."""
        with self._ready:
            self._closed = True
            for queue in self._queues.values():
                for future, _ in queue:
                    future.cancel()
            self._queues.clear()
            self._ready.notify_all()

    def _next(self) -> tuple[Hashable, Future[Any], Callable[[], Any]] | None:
        """The oldest call of the first owner in turn below its share (lock held); that
        owner goes to the back of the turn."""
        for owner, queue in self._queues.items():
            if self._running.get(owner, 0) < self.per_owner:
                future, call = queue.popleft()
                if queue:
                    self._queues.move_to_end(owner)
                else:
                    del self._queues[owner]
                return owner, future, call
        return None

    def _work(self) -> None:
        while True:
            with self._ready:
                picked = self._next()
                while picked is None and not self._closed:
                    self._ready.wait()
                    picked = self._next()
                if picked is None:
                    return
                owner, future, call = picked
                if not future.set_running_or_notify_cancel():
                    continue
                self._running[owner] = self._running.get(owner, 0) + 1
            try:
                future.set_result(call())
            except BaseException as error:  # the future carries it to the caller
                future.set_exception(error)
            finally:
                with self._ready:
                    left = self._running[owner] - 1
                    if left:
                        self._running[owner] = left
                    else:
                        del self._running[owner]
                    self._ready.notify()
