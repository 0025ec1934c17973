"""The audit trail: every decision the operator takes, as one JSON line on the
`modeldeploy.audit` logger, beyond what status and Events keep.

    records = decisions(subject, decided, version, now)   # pure: the plan's decisions
    write(records)                                        # one JSON document per line

What survives what (docs/concepts.md, "Audit trail"): `status.history` keeps the last
HISTORY_LIMIT transitions and survives operator restarts; Events are kept by the apiserver
for its `--event-ttl` (1 h by default); these lines last as long as the platform's log
store keeps the operator's output. Each line carries `key`: for an Event, the Event object's
name (fixed in the outbox, so a line logged again after a restart has the same key and the
Event can be found from it); for a consumed command or an analysis round, a key made the
same way from the status write that recorded it.

Written after the status write that records the decisions succeeded, so a plan refused
(the object changed meanwhile) and made again is logged once, as it was taken.
"""

import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from modeldeploy.rollout import Event, Plan, Subject
from modeldeploy.rollout.outbox import decision_key, event_message, event_name

AUDIT_LOGGER = "modeldeploy.audit"
Kind = Literal["event", "command", "verdict"]
Record = dict[str, Any]
ROUND_REASONS = {
    "pass": "AnalysisPassed",
    "fail": "AnalysisFailed",
    "inconclusive": "AnalysisInconclusive",
}
"""A round's `reason`: the verdict, named as the Events about rounds are."""
FIELDS = (
    "time", "kind", "key", "namespace", "name", "uid", "generation", "type", "reason",
    "message", "revision", "phase", "team",
)  # fmt: skip
"""Every record has these fields, in this order (null where they do not apply)."""

log = logging.getLogger(AUDIT_LOGGER)


def _stamp(now: datetime) -> str:
    return now.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _record(subject: Subject, decided: Plan, now: datetime, kind: Kind, **fields: Any) -> Record:
    owner = subject.spec.owner
    base: Record = {
        "time": _stamp(now),
        "kind": kind,
        "namespace": subject.namespace,
        "name": subject.name,
        "uid": subject.uid,
        "generation": subject.generation,
        "phase": decided.status.phase,
        "team": owner.team if owner is not None else None,
    }
    merged = {**base, **fields}
    return {field: merged.get(field) for field in FIELDS}


def decisions(subject: Subject, decided: Plan, version: str, now: datetime) -> list[Record]:
    """The decisions of one plan written over `version`: its Events (transitions, verdicts
    that changed something, refusals, ignored commands), the commands it consumed, and the
    analysis round it concluded."""
    records = [
        _record(
            subject, decided, now, "event",
            key=event_name(subject, version, index), type=event.type, reason=event.reason,
            message=event_message(event.message, subject.spec.owner),
        )
        for index, event in enumerate(decided.events)
    ]  # fmt: skip
    for annotation in decided.remove_annotations:
        value = subject.annotations.get(annotation, "")
        records.append(
            _record(
                subject, decided, now, "command",
                key=decision_key(subject, version, f"command/{annotation}"),
                reason="CommandConsumed", message=f"{annotation}={value}", revision=value,
            )
        )  # fmt: skip
    signal = decided.round
    if signal is not None:
        records.append(
            _record(
                subject, decided, now, "verdict",
                key=decision_key(subject, version, f"round/{signal.revision}"),
                reason=ROUND_REASONS[signal.verdict], message=signal.reason,
                revision=signal.revision,
                type="Warning" if signal.rollback or signal.verdict == "fail" else "Normal",
            )
        )  # fmt: skip
    return records


def unrecorded(body: Mapping[str, Any], key: str, event: Event, now: datetime) -> Record:
    """An Event about something status does not record (an invalid spec, a failed write) on
    the ModelDeployment `body`, posted once per operator process under `key`, its Event
    object's name."""
    meta = body.get("metadata") or {}
    fields: Record = {
        "time": _stamp(now), "kind": "event", "key": key, "namespace": meta.get("namespace"),
        "name": meta.get("name"), "uid": meta.get("uid"), "generation": meta.get("generation"),
        "type": event.type, "reason": event.reason, "message": event.message,
    }  # fmt: skip
    return {field: fields.get(field) for field in FIELDS}


class JsonLines(logging.Formatter):
    """The record's message as it is: already one JSON document."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def install() -> None:
    """Audit lines go to stderr as bare JSON, whatever MODELDEPLOY_LOG_FORMAT says for the
    other logs (a log pipeline selects them by the `kind`/`key` fields, or by the logger
    when it parses kopf's JSON); not also through the root logger, so never twice."""
    if any(isinstance(h.formatter, JsonLines) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def write(records: list[Record]) -> None:
    for record in records:
        log.info("%s", json.dumps(record, separators=(",", ":"), ensure_ascii=False))
