"""What one reconcile decided: objects to apply and delete, the new status, Events."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modeldeploy.api import ModelDeploymentSpec, ModelDeploymentStatus
from modeldeploy.resources.revision import RevisionSource
from modeldeploy.rollout.signal import AnalysisSignal
from modeldeploy.rollout.webhooks import GateAsk, Notice
from modeldeploy.routing import RoutePatch

Body = dict[str, Any]
EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Subject:
    """The ModelDeployment being reconciled, as read from the apiserver."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    annotations: Mapping[str, str] = field(default_factory=dict)
    proxy_image: str | None = None
    """The operator's `modeldeploy proxy` image (--proxy-image), for a spec whose image is an
    external V2 server: part of such a revision (None: the operator has none)."""

    def source(self) -> RevisionSource:
        """The revision the spec describes."""
        return RevisionSource.of(self.spec, self.proxy_image)


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str

    @classmethod
    def of(cls, body: Body) -> "ObjectRef":
        return cls(body["apiVersion"], body["kind"], body["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


class NewObject(dict[str, Any]):
    """A body in `Plan.apply` that the world does not have: created, which fails where an
    object of that name exists (someone else's need not carry the label the watches select
    by), never applied over it."""


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """Apply in order, then delete; write `status` first when it changed (it records the
    decisions, so that a crash between the two never loses one; the Events go into it too,
    `rollout.outbox`); then post the Events."""

    status: ModelDeploymentStatus
    apply: tuple[Body, ...] = ()
    """Bodies to server-side apply; a `NewObject` is created instead."""
    delete: tuple[ObjectRef, ...] = ()
    events: tuple[Event, ...] = ()
    remove_annotations: tuple[str, ...] = ()
    """One-shot commands consumed (acted on, or ignored as stale)."""
    route: RoutePatch | None = None
    """The HTTPRoute's weights to write (traffic.mode gatewayAPI), after `apply` (the
    Services it points at) and before `delete` (a rolled-back canary's Deployment)."""
    round: AnalysisSignal | None = None
    """The analysis round this reconcile concluded, if one ran (for logs and metrics; what
    it decided is in `status` and `events`)."""
    due: datetime | None = None
    """When to plan again on time alone: the earliest moment after this plan's `now` at which
    a decision that reads the clock can come out differently (a step's interval ends, the
    bake ends, a pod's readiness grace ends, the next analysis round, a refused gate's next
    ask, a notification's next delivery round). None: only a change (a watch event) can move
    this ModelDeployment on."""
    asks: tuple[GateAsk, ...] = ()
    """Gates this plan waits for that are due to be asked: the shell asks them and plans
    again with their answers (`rollout.webhooks`)."""
    notices: tuple[Notice, ...] = ()
    """What the notify webhooks are told of (written into status with the Events)."""
