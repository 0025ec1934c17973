"""Leader election over a Lease: the pure step, the Lease written, and two replicas on one
simulated clock sharing one Lease store (never two leaders, a takeover after the lease
duration, a hand-over at once on release)."""

from typing import Any

import pytest

from modeldeploy.kube import Conflict, KubeError
from modeldeploy.leader import (
    LeaderElector,
    LeaseRecord,
    LeaseSettings,
    Step,
    lease_body,
    next_step,
)

pytestmark = pytest.mark.unit

Body = dict[str, Any]


def record(holder: str, version: str = "1", duration: float = 10) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration=duration, transitions=0, resource_version=version)


def test_next_step() -> None:
    assert next_step(None, "a", 0) is Step.CREATE
    assert next_step(record("a"), "a", 100) is Step.RENEW
    assert next_step(record(""), "b", 0) is Step.ACQUIRE
    assert next_step(record("a"), "b", 9.9) is Step.WAIT
    assert next_step(record("a"), "b", 10.1) is Step.ACQUIRE


def test_settings_refuse_a_deadline_past_the_duration() -> None:
    with pytest.raises(ValueError, match="renew deadline < lease duration"):
        LeaseSettings(namespace="ns", identity="a", duration=5, renew_deadline=7)


def test_lease_body_counts_transitions_and_releases_with_an_empty_holder() -> None:
    from datetime import UTC, datetime

    settings = LeaseSettings(namespace="ns", identity="b")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    taken = lease_body(settings, LeaseRecord("a", 10, 3, "7"), Step.ACQUIRE, now)
    assert taken["metadata"]["resourceVersion"] == "7"
    assert taken["spec"]["holderIdentity"] == "b"
    assert taken["spec"]["leaseTransitions"] == 4
    assert "acquireTime" in taken["spec"]
    renewed = lease_body(settings, LeaseRecord("b", 10, 4, "8"), Step.RENEW, now)
    assert renewed["spec"]["leaseTransitions"] == 4
    assert "acquireTime" not in renewed["spec"]
    released = lease_body(settings, LeaseRecord("b", 10, 4, "9"), Step.WAIT, now)
    assert released["spec"]["holderIdentity"] == ""
    created = lease_body(settings, None, Step.CREATE, now)
    assert "resourceVersion" not in created["metadata"]


class LeaseStore:
    """One Lease with optimistic concurrency, as the apiserver keeps it."""

    def __init__(self) -> None:
        self.body: Body | None = None
        self.version = 0
        self.down = False

    def get_lease(self, namespace: str, name: str) -> Body | None:
        if self.down:
            raise KubeError(503, "unavailable")
        return self.body

    def write_lease(self, body: Body) -> Body:
        if self.down:
            raise KubeError(503, "unavailable")
        sent = body["metadata"].get("resourceVersion")
        current = self.body["metadata"]["resourceVersion"] if self.body else None
        if sent != current:
            raise Conflict(409, "the object has been modified")
        self.version += 1
        self.body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return self.body


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def electors(store: LeaseStore, clock: Clock) -> tuple[LeaderElector, LeaderElector]:
    def one(identity: str) -> LeaderElector:
        settings = LeaseSettings(namespace="ns", identity=identity)
        return LeaderElector(store, settings, clock=clock)  # type: ignore[arg-type]

    return one("a"), one("b")


def test_one_leader_then_a_takeover_only_after_the_lease_duration() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.attempt()  # creates the Lease
    assert not b.attempt()
    leaders = []
    # a renews every 2 s for 20 s, then dies (stops renewing); b looks every 2 s.
    for tick in range(1, 40):
        clock.now = tick * 1.0
        if tick % 2 == 0:
            if clock.now <= 20:
                a.attempt()
            b.attempt()
        leaders.append((clock.now, a.is_leader(), b.is_leader()))
        assert not (a.is_leader() and b.is_leader()), f"two leaders at {clock.now}"
    a_last = max(t for t, la, _ in leaders if la)
    b_first = min(t for t, _, lb in leaders if lb)
    assert a_last < 20 + a.settings.renew_deadline  # a stopped writing on its own
    assert b_first > 20 + a.settings.duration  # b waited the whole lease duration
    assert b.transitions == 1
    assert store.body is not None
    assert store.body["spec"]["holderIdentity"] == "b"
    assert store.body["spec"]["leaseTransitions"] == 1


def test_a_leader_cut_off_from_the_apiserver_stops_writing() -> None:
    store, clock = LeaseStore(), Clock()
    a, _ = electors(store, clock)
    assert a.attempt()
    store.down = True
    clock.now = 6.9
    assert not a.attempt()
    assert a.is_leader()  # within its renew deadline
    clock.now = 7.0
    assert not a.is_leader()


def test_release_hands_over_at_once() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.attempt()
    clock.now = 1
    a.release()
    assert not a.is_leader()
    assert b.attempt()


def test_release_past_the_renew_deadline_still_hands_over() -> None:
    """A renewal late under load: no longer leading by its own clock, the holder on the
    Lease all the same; the shutdown releases it, and no attempt follows a release."""
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.attempt()
    clock.now = a.settings.renew_deadline + 1
    assert not a.is_leader()
    a.release()
    assert store.body is not None
    assert store.body["spec"]["holderIdentity"] == ""
    assert not a.attempt()
    assert store.body["spec"]["holderIdentity"] == ""
    assert b.attempt()


def test_release_on_a_stale_record_reads_the_lease_again() -> None:
    """A renewal that landed but whose answer was lost leaves the holder a stale
    resourceVersion: the release's Conflict is followed by one read and a release."""
    store, clock = LeaseStore(), Clock()
    a, _ = electors(store, clock)
    assert a.attempt()
    assert store.body is not None
    store.version += 1
    store.body["metadata"]["resourceVersion"] = str(store.version)
    a.release()
    assert store.body["spec"]["holderIdentity"] == ""


def test_release_never_clears_another_replicas_hold() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.attempt()
    assert not b.attempt()
    clock.now = a.settings.duration + 1  # a stopped renewing; b takes over
    assert b.attempt()
    a.release()
    assert store.body is not None
    assert store.body["spec"]["holderIdentity"] == "b"
    assert b.is_leader()


def test_a_renewal_restarts_the_standbys_wait() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.attempt()
    assert not b.attempt()
    clock.now = 8
    a.attempt()
    clock.now = 11  # 11 s since b first saw the Lease, 3 s since it changed
    assert not b.attempt()
    assert a.is_leader()


def test_a_lost_race_is_not_leadership() -> None:
    """b reads an expired-looking Lease, a (back from a pause) renews before b writes: b's
    write conflicts, a leads."""
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.attempt()
    assert not b.attempt()
    clock.now = 11
    body = store.get_lease("ns", "lease")
    assert a.attempt()  # a renews between b's read and b's write (it had stopped leading)
    store.get_lease = lambda namespace, name: body  # type: ignore[method-assign]
    assert not b.attempt()
    assert not b.is_leader()
    assert a.is_leader()
    assert store.body is not None
    assert store.body["spec"]["holderIdentity"] == "a"
