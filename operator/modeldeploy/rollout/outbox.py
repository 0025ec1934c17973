"""The Event outbox: Events survive an operator killed between the status write and the post.

A plan's Events are written into `status.pendingEvents` together with the transition they
report, posted after the status write, and cleared by one more status write. An operator
stopped anywhere in between finds them in status when it starts again and posts them then.
Each pending Event carries its Event object's name, fixed when it was written: posting it a
second time (it was posted, but not yet cleared, before the kill) is refused by the
apiserver as AlreadyExists, which counts as posted. So no Event is lost or duplicated, and
a reconcile without Events writes nothing more than before.

The plan's notices go the same way (`status.pendingNotifications`, `rollout.webhooks`),
named after the Events' names, so a notification's idempotency key is fixed with it.
"""

import hashlib
from datetime import datetime

from modeldeploy.api import (
    MAX_EVENT_MESSAGE,
    MAX_PENDING_EVENTS,
    MAX_PENDING_NOTIFICATIONS,
    ModelDeploymentStatus,
    Owner,
    PendingEvent,
)
from modeldeploy.rollout.plan import Plan, Subject
from modeldeploy.rollout.webhooks import notifications


def decision_key(subject: Subject, version: str, part: str) -> str:
    """`<name>.` + 16 hex of sha256 over uid, `version` (the ModelDeployment's
    resourceVersion the status write is conditioned on) and `part` (which decision of that
    write): at most one write succeeds on a given version, so two decisions never share a
    key, and the same decision computed again (after a restart) gets the same one."""
    digest = hashlib.sha256(f"{subject.uid}/{version}/{part}".encode()).hexdigest()
    return f"{subject.name}.{digest[:16]}"


def event_name(subject: Subject, version: str, index: int) -> str:
    """The name of the `index`th Event of the transition written over `version`."""
    return decision_key(subject, version, str(index))


def event_message(message: str, owner: Owner | None) -> str:
    """An Event's text, at most MAX_EVENT_MESSAGE characters, ending with the owning team
    when the spec names one: a long message is cut before it, so who to call survives."""
    suffix = f" [owner: {owner.team}]" if owner is not None else ""
    room = MAX_EVENT_MESSAGE - len(suffix)
    body = message if len(message) <= room else message[: room - 3] + "..."
    return body + suffix


def with_outbox(
    subject: Subject, decided: Plan, version: str, now: datetime
) -> ModelDeploymentStatus:
    """The status to write: the plan's, with what the stored status still had pending (an
    earlier process' Events, not known to be posted; notifications not yet delivered) and
    the plan's own Events and notifications after them."""
    made = [
        PendingEvent(
            name=event_name(subject, version, index),
            type=event.type,
            reason=event.reason,
            message=event_message(event.message, subject.spec.owner),
            time=now.replace(microsecond=0),
        )
        for index, event in enumerate(decided.events)
    ]
    pending = [*subject.status.pending_events, *made][-MAX_PENDING_EVENTS:]
    offset = len(decided.events)
    names = [event_name(subject, version, offset + i) for i in range(len(decided.notices))]
    told = notifications(
        subject.spec.rollout.webhooks, decided.notices, names, now.replace(microsecond=0)
    )
    notified = [*subject.status.pending_notifications, *told][-MAX_PENDING_NOTIFICATIONS:]
    return decided.status.model_copy(
        update={"pending_events": pending, "pending_notifications": notified}
    )


def posted(status: ModelDeploymentStatus) -> ModelDeploymentStatus:
    """The status once its pending Events are posted."""
    return status.model_copy(update={"pending_events": []})
