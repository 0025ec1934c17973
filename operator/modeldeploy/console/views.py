"""What the commands show, as plain data: a ModelDeployment object as read from the apiserver
(and its Events) -> JSON-ready dicts. `-o json|yaml` prints these; the tables render them.

Pure and forgiving: a status written by another operator version, or no status at all,
still gives a view (missing fields show as absent, never as an error).
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modeldeploy.api import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    ANNOTATION_RETRY,
    Analysis,
    KillSwitch,
    Rollout,
)
from modeldeploy.rollout.sizing import canary_steps

Body = dict[str, Any]
COMMAND_ANNOTATIONS = (ANNOTATION_PROMOTE, ANNOTATION_ABORT, ANNOTATION_RETRY)
RECENT_EVENTS = 10


def _mapping(value: Any) -> Body:
    return value if isinstance(value, dict) else {}


def rollout_of(obj: Mapping[str, Any]) -> Rollout:
    """spec.rollout with the API's defaults (the defaults alone when it cannot be read)."""
    try:
        return Rollout.model_validate(_mapping(_mapping(obj.get("spec")).get("rollout")))
    except ValidationError:
        return Rollout()


def analysis_of(obj: Mapping[str, Any]) -> Analysis:
    """spec.analysis with the API's defaults (the defaults alone when it cannot be read)."""
    try:
        return Analysis.model_validate(_mapping(_mapping(obj.get("spec")).get("analysis")))
    except ValidationError:
        return Analysis()


def kill_switch_of(obj: Mapping[str, Any]) -> KillSwitch:
    try:
        return KillSwitch.model_validate(_mapping(_mapping(obj.get("spec")).get("killSwitch")))
    except ValidationError:
        return KillSwitch()


def stage(step: int | None, steps: list[int], cohort: str | None = None) -> str:
    """ "step 2 of 4 (5%)", "cohort (header x-canary=true)" in the cohort phase, or "shadow"
    while the new revision only gets mirrored traffic."""
    if cohort is not None:
        return f"cohort ({cohort})"
    if step is None:
        return "shadow"
    if not steps:
        return f"step {step + 1}"
    index = min(step, len(steps) - 1)
    return f"step {index + 1} of {len(steps)} ({steps[index]}%)"


def stage_of(view: Mapping[str, Any]) -> str:
    """`stage` of a ModelDeployment's view."""
    return stage(view["step"], view["steps"], view.get("cohort"))


def remaining_steps(step: int | None, steps: list[int]) -> list[int]:
    """Percentages still ahead of the canary (all of them during the shadow phase)."""
    if step is None:
        return steps
    return steps[step + 1 :]


def event_time(event: Mapping[str, Any]) -> str:
    """When an Event last happened (core/v1 and events.k8s.io fill different fields)."""
    meta = _mapping(event.get("metadata"))
    series = _mapping(event.get("series"))
    for value in (
        event.get("lastTimestamp"),
        series.get("lastObservedTime"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        meta.get("creationTimestamp"),
    ):
        if value:
            return str(value)
    return ""


def events_view(events: Iterable[Mapping[str, Any]], limit: int = RECENT_EVENTS) -> list[Body]:
    """The most recent Events, oldest first."""
    rows = [
        {
            "time": event_time(e),
            "type": e.get("type") or "",
            "reason": e.get("reason") or "",
            "message": e.get("message") or e.get("note") or "",
            "count": e.get("count") or _mapping(e.get("series")).get("count") or 1,
        }
        for e in events
    ]
    rows.sort(key=lambda row: row["time"])
    return rows[-limit:] if limit else rows


def summary(obj: Mapping[str, Any], events: Iterable[Mapping[str, Any]] | None = None) -> Body:
    """Everything `status` shows. `events` None: not read (e.g. no permission to list them)."""
    meta = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    status = _mapping(obj.get("status"))
    rollout = rollout_of(obj)
    analysis = analysis_of(obj)
    kill = kill_switch_of(obj)
    annotations = _mapping(meta.get("annotations"))
    types = {w.name: w.type for w in rollout.webhooks}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    view: Body = {
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "generation": generation,
        "observedGeneration": observed,
        "upToDate": observed is not None and generation is not None and observed >= generation,
        "created": meta.get("creationTimestamp"),
        "model": _mapping(spec.get("model")),
        "owner": _mapping(spec.get("owner")) or None,
        "image": spec.get("image", ""),
        "phase": status.get("phase") or "",
        "message": status.get("message") or "",
        "canaryWeight": status.get("canaryWeight") or 0,
        "stableRevision": status.get("stableRevision"),
        "canaryRevision": status.get("canaryRevision"),
        "previousStableRevision": status.get("previousStableRevision"),
        "failedRevision": status.get("failedRevision"),
        "step": status.get("step"),
        "cohort": status.get("cohort"),
        "steps": list(canary_steps(rollout)),
        "stepStartedAt": status.get("stepStartedAt"),
        "bakeUntil": status.get("bakeUntil"),
        "paused": rollout.paused,
        "requireApproval": rollout.require_approval,
        "killSwitch": {"engaged": kill.engaged, "mode": kill.mode},
        "consecutiveFailures": status.get("consecutiveFailures") or 0,
        "failureLimit": analysis.failure_limit,
        "noDataSince": status.get("noDataSince"),
        "lastAnalysis": status.get("lastAnalysis"),
        "failedAnalysis": status.get("failedAnalysis"),
        "podProblems": [p for p in status.get("podProblems") or [] if isinstance(p, dict)],
        "gates": [
            {**g, "type": types.get(str(g.get("webhook")), "?")}
            for g in status.get("gates") or []
            if isinstance(g, dict)
        ],
        "pendingNotifications": len(status.get("pendingNotifications") or []),
        "conditions": list(status.get("conditions") or []),
        "pendingCommands": {k: v for k, v in annotations.items() if k in COMMAND_ANNOTATIONS},
    }
    if events is not None:
        view["events"] = events_view(events)
    return view


def history_view(obj: Mapping[str, Any]) -> list[Body]:
    """status.history, oldest first."""
    return [dict(entry) for entry in _mapping(obj.get("status")).get("history") or []]


def trail_view(obj: Mapping[str, Any], events: Iterable[Mapping[str, Any]] | None) -> list[Body]:
    """What `modeldeploy history` shows: status.history (the last HISTORY_LIMIT transitions,
    kept across operator restarts) merged with every Event the apiserver still holds about
    the object (for its --event-ttl: transitions older than the history, verdicts, refusals,
    ignored commands), oldest first. An Event's `key` is its name, the `key` of the
    operator's audit log line about it."""
    rows: list[Body] = [
        {
            "time": str(h.get("time") or ""),
            "source": "history",
            "type": "",
            "event": str(h.get("event") or ""),
            "revision": h.get("revision") or "",
            "version": h.get("version") or "",
            "reason": str(h.get("reason") or ""),
            "count": 1,
            "key": None,
        }
        for h in history_view(obj)
    ]
    rows += [
        {
            "time": event_time(e),
            "source": "event",
            "type": str(e.get("type") or ""),
            "event": str(e.get("reason") or ""),
            "revision": "",
            "version": "",
            "reason": str(e.get("message") or e.get("note") or ""),
            "count": e.get("count") or _mapping(e.get("series")).get("count") or 1,
            "key": _mapping(e.get("metadata")).get("name"),
        }
        for e in events or ()
    ]
    rows.sort(key=lambda row: str(row["time"]))  # stable: history first within a second
    return rows


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(text: str | None, now: datetime) -> str:
    """ "3m20s" since an RFC 3339 time, like kubectl's AGE ("" when unknown)."""
    then = parse_time(text)
    if then is None:
        return ""
    seconds = max(0, int((now - then).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if days < 7 and hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{seconds}s" if minutes < 10 and seconds else f"{minutes}m"
    return f"{seconds}s"
