"""Pod problems, read from a pod's status as its kubelet (or the scheduler) writes it.

Pure: one raw Pod -> the problems of its containers (waiting reasons such as
ImagePullBackOff or CrashLoopBackOff, OOM kills, with the restart count and how the container
last ended, in its own words when it left any), or of the pod as a whole (Unschedulable;
Ready=False although every container runs). A container that runs and
is ready has no problem, whatever its last termination was: an OOM kill last week is not a
problem of today. Odd values become notes, never a crash; messages are truncated.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modeldeploy.api import MAX_POD_MESSAGE, PodProblem
from modeldeploy.resources.names import LABEL_REVISION

WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)
"""container state.waiting reasons that say the container cannot start (ContainerCreating
and PodInitializing only say it has not yet)."""
OOM_KILLED = "OOMKilled"
UNSCHEDULABLE = "Unschedulable"
NOT_READY = "NotReady"
MAX_REASON = 128
PODS_CANNOT_START = "pods cannot start"
"""How the reason of a rollback for pods that cannot start begins (history, conditions)."""


@dataclass(frozen=True)
class ObservedPod:
    name: str
    revision: str
    problems: tuple[PodProblem, ...]
    not_ready_since: datetime | None = None
    """When Ready turned False, for a NotReady problem: a pod that is only warming up is not
    one yet (the machine gives it a grace period)."""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _short(text: str, limit: int = MAX_POD_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _last_line(text: Any) -> str:
    lines = [line.strip() for line in text.splitlines()] if isinstance(text, str) else []
    return next((line for line in reversed(lines) if line), "")


def _exit(terminated: Mapping[str, Any]) -> str:
    """ "OOMKilled (exit code 137)", "Error (exit code 4): golden request failed: ..."

    With the container's own words: its termination message, or with
    FallbackToLogsOnError its log's end, of which the last line is where a crash ends."""
    reason = terminated.get("reason") or "terminated"
    code = terminated.get("exitCode")
    ended = f"{reason} (exit code {code})" if code is not None else str(reason)
    said = _last_line(terminated.get("message"))
    return f"{ended}: {said}" if said else ended


def _container(container: Mapping[str, Any]) -> tuple[str, str, str, int] | None:
    """(container, reason, message, restarts) of a container that cannot start or keeps
    being killed, else None."""
    restarts = container.get("restartCount")
    restarts = restarts if isinstance(restarts, int) and restarts >= 0 else 0
    state = _mapping(container.get("state"))
    waiting = _mapping(state.get("waiting"))
    terminated = _mapping(state.get("terminated"))
    last = terminated or _mapping(_mapping(container.get("lastState")).get("terminated"))
    name = str(container.get("name") or "")
    reason = waiting.get("reason")
    if reason in WAITING_REASONS:
        message = str(waiting.get("message") or "")
        if reason == "CrashLoopBackOff" and last:
            # Why it exited first: the kubelet's back-off text is what is cut when too long.
            ended = f"last exit: {_exit(last)}"
            message = f"{ended}; {message}" if message else ended
        return name, str(reason), message, restarts
    if last.get("reason") == OOM_KILLED and container.get("ready") is not True:
        return name, OOM_KILLED, _exit(last), restarts
    return None


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    conditions = status.get("conditions")
    found = (c for c in conditions or [] if isinstance(c, Mapping) and c.get("type") == kind)
    return next(found, {})


def _container_statuses(status: Mapping[str, Any], name: str, notes: list[str]) -> list[Any]:
    statuses: list[Any] = []
    for key in ("initContainerStatuses", "containerStatuses"):
        listed = status.get(key) or []
        if not isinstance(listed, list) or not all(isinstance(c, Mapping) for c in listed):
            notes.append(f"Pod {name}: unreadable status.{key}")
            continue
        statuses += listed
    return statuses


def observe_pod(body: Mapping[str, Any], notes: list[str]) -> ObservedPod | None:
    """The pod's revision and problems; None for a pod that is going or gone (terminating,
    Succeeded, Failed) or cannot be attributed (a note says why)."""
    meta = _mapping(body.get("metadata"))
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        notes.append("Pod without a name")
        return None
    revision = _mapping(meta.get("labels")).get(LABEL_REVISION)
    if not isinstance(revision, str) or not revision:
        notes.append(f"Pod {name}: no {LABEL_REVISION} label")
        return None
    status = body.get("status") or {}
    if not isinstance(status, Mapping):
        notes.append(f"Pod {name}: unreadable status")
        return None
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    found = (_container(c) for c in _container_statuses(status, name, notes))
    problems = [problem for problem in found if problem is not None]
    scheduled = _condition(status, "PodScheduled")
    ready = _condition(status, "Ready")
    since = None
    if scheduled.get("status") == "False" and scheduled.get("reason") == UNSCHEDULABLE:
        problems.append(("", UNSCHEDULABLE, str(scheduled.get("message") or ""), 0))
    elif not problems and ready.get("status") == "False":
        why = ": ".join(str(ready[k]) for k in ("reason", "message") if ready.get(k))
        problems.append(("", NOT_READY, why, 0))
        since = _time(ready.get("lastTransitionTime"))
    try:
        return ObservedPod(
            name=name,
            revision=revision,
            problems=tuple(
                PodProblem(
                    revision=revision,
                    pod=name,
                    container=container,
                    reason=_short(reason, MAX_REASON),
                    message=_short(message),
                    restarts=restarts,
                )
                for container, reason, message, restarts in problems
            ),
            not_ready_since=since,
        )
    except ValidationError as err:
        notes.append(f"Pod {name}: unreadable status: {err.errors()[0]['msg']}")
        return None


def describe(problem: PodProblem) -> str:
    """ "churn-abc-xyz: ImagePullBackOff: Back-off pulling image ..." """
    text = f"{problem.pod}: {problem.reason}"
    if problem.message:
        text += f": {problem.message}"
    if problem.restarts:
        text += f" ({problem.restarts} restarts)"
    return text
