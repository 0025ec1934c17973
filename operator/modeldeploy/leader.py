"""Leader election over a coordination.k8s.io Lease, the way client-go's leaderelection
does it, so that of two or more operator replicas exactly one writes.

    elector = LeaderElector(kube, LeaseSettings(namespace="modeldeploy", identity=pod))
    kube = Kube(may_write=elector.is_leader)   # every write asks first
    await elector.run(on_started_leading)      # forever: acquire, renew, or watch the holder

Why this and not Kopf's peering: peering pauses *all* replicas of the same priority and has
no lease, so it cannot say who may write. Time never crosses machines: a replica trusts only
its own monotonic clock.
- The holder renews every `retry_period` and counts itself leader only until
  `renew_deadline` after the *start* of its last successful renewal; past that every write
  is refused (`Kube.may_write`), also in the middle of a reconcile.
- A candidate takes the lease over only when the record it sees has not changed for the
  holder's `leaseDurationSeconds`, measured from when the candidate *saw* that record. As
  `renew_deadline < duration`, the old holder has stopped writing before anyone takes over.
- On a clean shutdown the holder releases the lease (empty holder), so that a rolling
  update hands over at once instead of after a lease duration.
"""

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from modeldeploy.kube import Conflict, Kube, KubeError

log = logging.getLogger("modeldeploy.leader")
Body = dict[str, Any]
DEFAULT_LEASE_NAME = "modeldeploy-operator"


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    identity: str
    name: str = DEFAULT_LEASE_NAME
    duration: float = 10.0
    """How long a lease that is not renewed stays the holder's (written into the Lease)."""
    renew_deadline: float = 7.0
    """The holder stops writing this long after the start of its last good renewal."""
    retry_period: float = 2.0
    """Between two renewals (holder) or two looks at the Lease (candidates)."""

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, "
                f"got {self.retry_period:g} / {self.renew_deadline:g} / {self.duration:g} s"
            )
        if not self.namespace or not self.identity:
            raise ValueError("leader election needs a namespace and an identity")


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    """holderIdentity ("" when released)."""
    duration: float
    transitions: int
    resource_version: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "LeaseRecord":
        spec = body.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(duration) if isinstance(duration, int) and duration > 0 else 0.0,
            transitions=transitions if isinstance(transitions, int) else 0,
            resource_version=str(body.get("metadata", {}).get("resourceVersion") or ""),
        )


class Step(StrEnum):
    CREATE = "create"
    ACQUIRE = "acquire"
    RENEW = "renew"
    WAIT = "wait"


def next_step(record: LeaseRecord | None, identity: str, unchanged_for: float) -> Step:
    """What a replica does after reading the Lease. `unchanged_for`: seconds (on its own
    clock) since it first saw this very record (same resourceVersion)."""
    if record is None:
        return Step.CREATE
    if record.holder == identity:
        return Step.RENEW
    if not record.holder or unchanged_for > record.duration:
        return Step.ACQUIRE
    return Step.WAIT


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(
    settings: LeaseSettings, record: LeaseRecord | None, step: Step, now: datetime
) -> Body:
    """The Lease to write for `step` (CREATE, ACQUIRE, RENEW, or WAIT meaning release)."""
    spec: Body = {
        "holderIdentity": settings.identity if step is not Step.WAIT else "",
        "leaseDurationSeconds": max(1, round(settings.duration)),
        "renewTime": _stamp(now),
        "leaseTransitions": record.transitions if record else 0,
    }
    if step in (Step.CREATE, Step.ACQUIRE):
        spec["acquireTime"] = _stamp(now)
        if record is not None:
            spec["leaseTransitions"] = record.transitions + 1
    metadata: Body = {"name": settings.name, "namespace": settings.namespace}
    if record is not None:
        metadata["resourceVersion"] = record.resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        settings: LeaseSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self._clock = clock
        self._record: LeaseRecord | None = None
        self._seen_at = 0.0  # when self._record was first seen
        self._leading_until = 0.0
        self._released = False
        # attempt() and release() run in threads: a renewal in flight when the shutdown
        # releases would make one of the two writes a Conflict (and the Lease not released).
        self._turn = threading.Lock()
        self.transitions = 0
        """Times this replica became the leader."""

    def is_leader(self) -> bool:
        return self._clock() < self._leading_until

    def attempt(self) -> bool:
        """One look at the Lease, then acquire, renew or wait. True when this replica just
        became the leader. Never raises: an API failure is one missed renewal. After
        release() it does nothing."""
        with self._turn:
            return False if self._released else self._attempt()

    def _attempt(self) -> bool:
        started = self._clock()
        was_leader = self.is_leader()
        record = self._record
        if not (was_leader and record is not None and record.holder == self.settings.identity):
            # The holder renews on the record it wrote last (a Conflict: someone else wrote
            # it since); everyone else reads what is there.
            try:
                record = self._read()
            except KubeError as err:
                log.warning("cannot read lease %s: %s", self.settings.name, err)
                return False
        if record is None or self._record is None or record != self._record:
            self._record, self._seen_at = record, started
        step = next_step(record, self.settings.identity, started - self._seen_at)
        if step is Step.WAIT:
            if was_leader:
                log.warning("lost the lease to %s: stopping writes", record and record.holder)
            self._leading_until = 0.0
            return False
        try:
            written = self.kube.write_lease(
                lease_body(self.settings, record, step, datetime.now(UTC))
            )
        except KubeError as err:
            level = logging.INFO if isinstance(err, Conflict) else logging.WARNING
            log.log(level, "cannot %s lease %s: %s", step, self.settings.name, err)
            if isinstance(err, Conflict):
                self._record = None  # read it again next time
            return False
        self._record, self._seen_at = LeaseRecord.of(written), started
        self._leading_until = started + self.settings.renew_deadline
        if was_leader:
            return False
        self.transitions += 1
        log.info(
            "%s is the leader (lease %s/%s, %s)",
            self.settings.identity,
            self.settings.namespace,
            self.settings.name,
            step,
        )
        return True

    def _read(self) -> LeaseRecord | None:
        """The Lease as it is now (None: it does not exist)."""
        body = self.kube.get_lease(self.settings.namespace, self.settings.name)
        return None if body is None else LeaseRecord.of(body)

    def release(self) -> None:
        """Give the lease up at once (clean shutdown) if this replica is the holder on the
        Lease, also past its own renew deadline (a late renewal under load): the write
        carries the resourceVersion read, so it can never clear another replica's hold."""
        with self._turn:
            self._released = True
            self._leading_until = 0.0
            try:
                self._write_release()
            except KubeError as err:
                log.warning("cannot release lease %s: %s", self.settings.name, err)

    def _write_release(self) -> None:
        for _ in range(2):  # after a Conflict our record is stale: read the Lease once more
            record = self._record
            if record is None or record.holder != self.settings.identity:
                return
            try:
                self.kube.write_lease(
                    lease_body(self.settings, record, Step.WAIT, datetime.now(UTC))
                )
            except Conflict:
                self._record = self._read()
                continue
            log.info("released lease %s", self.settings.name)
            return

    async def run(self, on_started_leading: Callable[[], None]) -> None:
        """Forever: one attempt per retry period (off the event loop, it blocks on I/O)."""
        while True:
            if await asyncio.to_thread(self.attempt):
                on_started_leading()
            await asyncio.sleep(self.settings.retry_period)
