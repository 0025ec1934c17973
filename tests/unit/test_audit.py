"""The audit trail, pure: each decision of a plan is one record with stable fields, keyed by
the Event's outbox name (or a key made the same way), the owner's team on every record."""

import json
import logging
from datetime import UTC, datetime

import pytest
from test_rollout_machine import NAME, UID, base_spec

from modeldeploy import audit
from modeldeploy.api import ANNOTATION_ABORT, MAX_EVENT_MESSAGE, ModelDeploymentSpec, Owner
from modeldeploy.api import ModelDeploymentStatus as Status
from modeldeploy.rollout import AnalysisSignal, Event, Plan, Subject
from modeldeploy.rollout.outbox import event_message, event_name, with_outbox

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 12, 0, 0, 250_000, tzinfo=UTC)
OWNER = {"team": "retention", "contact": "ml-oncall@example.com"}


def subject(owner: dict[str, str] | None = OWNER) -> Subject:
    spec = ModelDeploymentSpec.model_validate({**base_spec(), "owner": owner})
    return Subject(NAME, "ml", UID, 3, spec, Status(), {ANNOTATION_ABORT: "r2"})


def test_every_decision_of_a_plan_is_one_record_keyed_like_its_event() -> None:
    md = subject()
    rolled_back = Event("Warning", "RolledBack", "r2: failure 2 of 2: latency-p99")
    round_ = AnalysisSignal(revision="r2", verdict="fail", time=NOW, rollback=True, reason="p99")
    decided = Plan(
        status=Status(phase="RolledBack"),
        events=(rolled_back,),
        remove_annotations=(ANNOTATION_ABORT,),
        round=round_,
    )
    records = audit.decisions(md, decided, "41", NOW)
    assert [tuple(r) for r in records] == [audit.FIELDS] * 3
    event, command, verdict = records
    outbox = with_outbox(md, decided, "41", NOW).pending_events
    assert event["key"] == outbox[0].name == event_name(md, "41", 0)
    assert event["message"] == outbox[0].message == f"{rolled_back.message} [owner: retention]"
    assert {k: event[k] for k in ("time", "kind", "type", "reason", "phase", "team")} == {
        "time": "2026-11-20T12:00:00Z", "kind": "event", "type": "Warning",
        "reason": "RolledBack", "phase": "RolledBack", "team": "retention",
    }  # fmt: skip
    assert (command["kind"], command["message"], command["revision"]) == (
        "command", f"{ANNOTATION_ABORT}=r2", "r2",
    )  # fmt: skip
    assert (verdict["kind"], verdict["reason"], verdict["type"]) == (
        "verdict", "AnalysisFailed", "Warning",
    )  # fmt: skip
    keys = {r["key"] for r in records}
    assert len(keys) == 3
    # The same plan over the same version (made again after a restart) has the same keys.
    assert {r["key"] for r in audit.decisions(md, decided, "41", NOW)} == keys
    assert keys.isdisjoint(r["key"] for r in audit.decisions(md, decided, "42", NOW))


def test_without_an_owner_the_team_is_null_and_messages_unchanged() -> None:
    md = subject(None)
    decided = Plan(status=Status(), events=(Event("Normal", "Promoted", "r2 is stable"),))
    (record,) = audit.decisions(md, decided, "7", NOW)
    assert (record["team"], record["message"]) == (None, "r2 is stable")


def test_the_owner_survives_the_cut_of_a_long_event_message() -> None:
    owner = Owner(team="retention")
    cut = event_message("x" * 5000, owner)
    assert len(cut) == MAX_EVENT_MESSAGE
    assert cut.endswith("... [owner: retention]")
    assert event_message("short", None) == "short"
    assert len(event_message("y" * 5000, None)) == MAX_EVENT_MESSAGE


def test_lines_are_bare_json_on_the_audit_logger(caplog: pytest.LogCaptureFixture) -> None:
    md = subject()
    decided = Plan(status=Status(), events=(Event("Normal", "Promoted", "r2 is stable"),))
    with caplog.at_level(logging.INFO, logger=audit.AUDIT_LOGGER):
        audit.write(audit.decisions(md, decided, "7", NOW))
    (line,) = [r for r in caplog.records if r.name == audit.AUDIT_LOGGER]
    assert "\n" not in line.getMessage()
    assert json.loads(audit.JsonLines().format(line))["reason"] == "Promoted"


def test_an_unrecorded_event_is_keyed_by_its_event_name() -> None:
    body = {"metadata": {"namespace": "ml", "name": NAME, "uid": UID, "generation": 2}}
    record = audit.unrecorded(body, f"{NAME}.abc", Event("Warning", "ApplyFailed", "500"), NOW)
    assert tuple(record) == audit.FIELDS
    assert (record["key"], record["uid"], record["reason"], record["phase"]) == (
        f"{NAME}.abc", UID, "ApplyFailed", None,
    )  # fmt: skip
