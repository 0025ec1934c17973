"""The Event outbox, pure: a plan's Events go into the status written with the transition,
named so that posting one twice makes no duplicate, after what an earlier process left."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from test_rollout_machine import NAME, UID, base_spec

from modeldeploy.api import (
    MAX_EVENT_MESSAGE,
    MAX_PENDING_EVENTS,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PendingEvent,
)
from modeldeploy.rollout import Event, Plan, Subject
from modeldeploy.rollout.outbox import event_name, posted, with_outbox

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 12, 0, 0, 500_000, tzinfo=UTC)


def subject(status: ModelDeploymentStatus | None = None) -> Subject:
    spec = ModelDeploymentSpec.model_validate(base_spec())
    return Subject(NAME, "ml", UID, 1, spec, status or ModelDeploymentStatus())


def test_names_are_fixed_by_the_version_written_over_and_the_position() -> None:
    md = subject()
    assert event_name(md, "5", 0) == event_name(md, "5", 0)
    names = {event_name(md, v, i) for v in ("5", "6") for i in (0, 1)}
    assert len(names) == 4
    assert all(n.startswith(f"{NAME}.") and len(n) == len(NAME) + 17 for n in names)
    assert event_name(replace(md, uid="other"), "5", 0) not in names


def test_the_plans_events_follow_what_was_left_pending() -> None:
    left = PendingEvent(name="churn.left", type="Normal", reason="Deploying", message="m", time=NOW)
    md = subject(ModelDeploymentStatus(pending_events=[left]))
    events = (Event("Normal", "Promoted", "r2 is stable"), Event("Warning", "X", "y" * 5000))
    decided = Plan(status=ModelDeploymentStatus(phase="Stable"), events=events)
    status = with_outbox(md, decided, "7", NOW)
    assert status.phase == "Stable"
    assert [e.name for e in status.pending_events] == [
        "churn.left", event_name(md, "7", 0), event_name(md, "7", 1),
    ]  # fmt: skip
    assert [e.reason for e in status.pending_events] == ["Deploying", "Promoted", "X"]
    assert len(status.pending_events[2].message) == MAX_EVENT_MESSAGE
    assert status.pending_events[1].time == NOW.replace(microsecond=0)
    assert posted(status) == decided.status


def test_no_events_nothing_pending_leaves_the_status_as_planned() -> None:
    decided = Plan(status=ModelDeploymentStatus(phase="Stable"))
    assert with_outbox(subject(), decided, "5", NOW) == decided.status


def test_the_outbox_is_bounded() -> None:
    events = tuple(Event("Normal", "StepAdvanced", str(i)) for i in range(MAX_PENDING_EVENTS + 3))
    status = with_outbox(subject(), Plan(status=ModelDeploymentStatus(), events=events), "5", NOW)
    assert len(status.pending_events) == MAX_PENDING_EVENTS
    assert status.pending_events[-1].message == str(MAX_PENDING_EVENTS + 2)
