"""The observed state of a ModelDeployment, written only by the operator.

Besides what users read (phase, revisions, weight, conditions, last analysis, history), it
holds what a level-based operator needs to carry on after a restart: when the current step
started, consecutive failures, since when data is missing, the bake deadline, and which
revision was abandoned by a rollback (so that it is not retried by itself).
"""

from typing import Annotated, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel, ListMapKey
from modeldeploy.api.rollout import MAX_STEPS
from modeldeploy.api.types import Timestamp
from modeldeploy.api.webhooks import MAX_WEBHOOKS, NotifyEvent, WebhookName

HISTORY_LIMIT = 20
MAX_CHECKS = 256
MAX_POD_PROBLEMS = 10
MAX_POD_MESSAGE = 256
MAX_PENDING_EVENTS = 32
MAX_EVENT_MESSAGE = 1024
MAX_PENDING_NOTIFICATIONS = 16
MAX_NOTIFIED_CHECKS = 16

Phase = Literal[
    "Pending", "Progressing", "Paused", "Promoting", "Stable", "RolledBack", "Killed", "Degraded"
]
# Reconciling and Stalled are kstatus' own types, so that tools that know only kstatus (Flux's
# default health check, `kstatus`-based waits) see a rollout as in progress and a rollback as
# failed; they mirror Progressing and the terminal kinds of Degraded.
ConditionType = Literal["Ready", "Progressing", "Degraded", "Killed", "Reconciling", "Stalled"]
ConditionStatus = Literal["True", "False", "Unknown"]
Verdict = Literal["pass", "fail", "inconclusive"]
HistoryEvent = Literal[
    "Started", "Promoted", "RolledBack", "Aborted", "KillSwitchEngaged", "KillSwitchReleased"
]
Revision = Annotated[str, Field(min_length=1, max_length=63)]
Message = Annotated[str, Field(max_length=4096)]
Count = Annotated[int, Field(ge=0)]


class Condition(ApiModel):
    """A kstatus-compatible condition (as metav1.Condition)."""

    type: ConditionType
    """Ready: serving on a stable revision with minWarm Ready pods. Progressing: a rollout is
    under way. Degraded: something needs attention (e.g. stable drifting, rolled back).
    Killed: the kill switch is engaged. Reconciling (kstatus): True while Progressing is True.
    Stalled (kstatus): True when the spec cannot be reached as it stands (rolled back, apply
    failed, warm-up timed out)."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Annotated[str, Field(min_length=1, max_length=128)]
    """One CamelCase word for machines, e.g. AnalysisFailed."""
    message: Message = ""
    """What happened, for people."""
    last_transition_time: Timestamp
    """When status last changed."""
    observed_generation: Count | None = None
    """The metadata.generation this condition was computed from."""


class CheckResult(ApiModel):
    """One check of one analysis."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The check, e.g. latency-p99, error-rate, feature-psi/age, custom/accuracy."""
    value: float | None = None
    """Measured value (absent when there was no data)."""
    threshold: float
    """The bound it was compared with."""
    samples: Count = 0
    """Observations the value rests on."""
    verdict: Verdict
    """pass, fail, or inconclusive (too few samples or no data: never a pass)."""


class AnalysisResult(ApiModel):
    """The most recent analysis of the revision under test."""

    time: Timestamp
    """When it ran."""
    since: Timestamp | None = None
    """Start of the evidence the checks weigh: the revision's first round (its sequential
    tests look at everything since); unset for the stable's drift monitor after bakeTime,
    which looks at the last analysis.window."""
    revision: Revision | None = None
    """The revision analysed."""
    samples: Count = 0
    """Requests the revision served since `since` (or in the window)."""
    waiting: Literal["samples", "no-data", "timed-out"] | None = None
    """Why the round gave no verdict: not enough evidence yet, no data (Prometheus
    unreachable, a refused query, missing series), or noDataTimeout passed."""
    verdict: Verdict
    """fail if any check failed, else inconclusive if any was, else pass."""
    checks: Annotated[list[CheckResult], Field(max_length=MAX_CHECKS)] = Field(default_factory=list)
    """Every check with its value, threshold, samples and verdict."""


class HistoryEntry(ApiModel):
    """A rollout event, newest last."""

    revision: Revision
    """Revision concerned."""
    version: Annotated[str, Field(max_length=63)]
    """Its model version."""
    image: Annotated[str, Field(max_length=512)]
    """Its image."""
    event: HistoryEvent
    """What happened."""
    reason: Message = ""
    """Why, for people (e.g. the failed check with value and threshold)."""
    time: Timestamp
    """When."""


class PodProblem(ApiModel):
    """A pod of the stable or canary revision that does not start or serve, as its kubelet
    (or the scheduler) reports it."""

    revision: Revision
    """Revision the pod belongs to (its modeldeploy.io/revision label)."""
    pod: Annotated[str, Field(min_length=1, max_length=253)]
    """The pod's name."""
    container: Annotated[str, Field(max_length=253)] = ""
    """The container concerned (empty for the pod as a whole, e.g. Unschedulable)."""
    reason: Annotated[str, Field(min_length=1, max_length=128)]
    """ErrImagePull, ImagePullBackOff, InvalidImageName, ErrImageNeverPull,
    CreateContainerConfigError, CreateContainerError, CrashLoopBackOff, OOMKilled,
    Unschedulable, or NotReady (Ready=False although its containers run)."""
    message: Annotated[str, Field(max_length=MAX_POD_MESSAGE)] = ""
    """What the kubelet or the scheduler said (truncated)."""
    restarts: Count = 0
    """The container's restartCount."""


class PendingEvent(ApiModel):
    """An Event written into status with the transition it reports, before it is posted."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Event object's name, fixed when the transition was written: posting it again
    (after a restart) is refused as AlreadyExists instead of making a duplicate."""
    type: Literal["Normal", "Warning"]
    """Normal or Warning."""
    reason: Annotated[str, Field(min_length=1, max_length=128)]
    """The Event's reason, e.g. Promoted."""
    message: Annotated[str, Field(max_length=MAX_EVENT_MESSAGE)] = ""
    """The Event's message."""
    time: Timestamp
    """When the transition was decided."""


class GateAnswer(ApiModel):
    """The last answer of a gate webhook about the canary revision."""

    webhook: WebhookName
    """The webhook (spec.rollout.webhooks[].name)."""
    revision: Revision
    """The revision it was asked about."""
    step: Annotated[int, Field(ge=0, le=MAX_STEPS - 1)] | None = None
    """The step it was asked about (absent: a preRollout gate, or a step gate about the
    shadow phase)."""
    approved: bool
    """A 2xx answer; anything else refused."""
    message: Annotated[str, Field(max_length=MAX_EVENT_MESSAGE)] = ""
    """What it answered (HTTP status and the start of its body), or why it could not be
    asked (the webhook refused by the operator's rules is never called)."""
    time: Timestamp
    """When it was asked; a refusal is asked again analysis.interval later."""


class PendingNotification(ApiModel):
    """A notification written into status with the transition it reports, until a receiver
    took it (2xx) or it failed its last delivery round."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Idempotency key, sent in the payload: the same on every attempt, also after an
    operator restart, so a receiver can drop a duplicate."""
    webhook: WebhookName
    """The notify webhook it goes to."""
    event: NotifyEvent
    """Promoted, RolledBack, Degraded, KillSwitchEngaged or KillSwitchReleased."""
    revision: Revision | None = None
    """The revision concerned."""
    message: Annotated[str, Field(max_length=MAX_EVENT_MESSAGE)] = ""
    """What happened, for people."""
    checks: Annotated[list[CheckResult], Field(max_length=MAX_NOTIFIED_CHECKS)] = Field(
        default_factory=list
    )
    """For RolledBack: the failing checks with value, threshold and samples."""
    time: Timestamp
    """When the transition was decided."""
    attempts: Count = 0
    """Delivery rounds that failed so far."""
    next_attempt_at: Timestamp | None = None
    """When the next delivery round is due (absent: at once)."""


class ModelDeploymentStatus(ApiModel):
    """Observed state, written by the operator."""

    phase: Phase = "Pending"
    """Pending, Progressing (rollout under way), Paused (spec.rollout.paused or waiting for
    approval), Promoting, Stable, RolledBack (the new revision was abandoned; stable serves),
    Killed (kill switch engaged), Degraded (serving but something needs attention)."""
    message: Message = ""
    """One line on the current state, for people."""
    observed_generation: Count | None = None
    """The metadata.generation the operator last acted on."""
    stable_revision: Revision | None = None
    """Revision serving as stable."""
    canary_revision: Revision | None = None
    """Revision being rolled out, if any."""
    previous_stable_revision: Revision | None = None
    """Stable revision before the last promotion, kept warm until bakeUntil."""
    failed_revision: Revision | None = None
    """Revision abandoned by the last rollback or abort; not retried by itself (a new spec
    revision, or annotation modeldeploy.io/retry=<revision>, is needed)."""
    canary_weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Effective share of live traffic (percent, rounded) the canary serves."""
    requested_weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Share of live traffic the current step asks for (percent; 0 outside a step). With
    replica ratios canaryWeight can differ from it: the Progressing condition and a Warning
    Event CoarseTrafficSplit say so when it is more than twice as much."""
    step: Annotated[int, Field(ge=0, le=MAX_STEPS - 1)] | None = None
    """0-based index of the current canary step (absent outside a rollout, while only
    shadowing, and in the cohort phase)."""
    step_started_at: Timestamp | None = None
    """When the current step (or shadow or cohort phase) started."""
    cohort: Annotated[str, Field(max_length=4400)] | None = None
    """In the cohort phase (spec.rollout.canary.cohort): the requests the canary serves alone,
    e.g. `header x-canary=true`; absent outside it."""
    consecutive_failures: Count = 0
    """Failed analyses in a row of the revision under test."""
    no_data_since: Timestamp | None = None
    """Since when analyses gave no verdict (for analysis.noDataTimeout)."""
    bake_until: Timestamp | None = None
    """End of the bake time after the last promotion."""
    conditions: Annotated[list[Condition], Field(max_length=8), ListMapKey("type")] = Field(
        default_factory=list
    )
    """Ready, Progressing, Degraded, Killed, and kstatus' Reconciling and Stalled."""
    last_analysis: AnalysisResult | None = None
    failed_analysis: AnalysisResult | None = None
    """The failing analysis that rolled failedRevision back, kept when later rounds (of the
    stable) replace lastAnalysis; absent when the rollback had another cause."""
    pod_problems: Annotated[list[PodProblem], Field(max_length=MAX_POD_PROBLEMS)] = Field(
        default_factory=list
    )
    """Pods of the stable and canary revisions that do not start or serve (at most 10,
    canary first); a new problem here is also posted once as a Warning Event PodProblem."""
    history: Annotated[list[HistoryEntry], Field(max_length=HISTORY_LIMIT)] = Field(
        default_factory=list
    )
    """The last 20 rollout events, oldest first."""
    pending_events: Annotated[list[PendingEvent], Field(max_length=MAX_PENDING_EVENTS)] = Field(
        default_factory=list
    )
    """Events of the last transition not yet known to be posted: written with it, posted right
    after, then cleared. An operator stopped in between posts them when it starts again."""
    gates: Annotated[list[GateAnswer], Field(max_length=MAX_WEBHOOKS), ListMapKey("webhook")] = (
        Field(default_factory=list)
    )
    """The last answer of each gate webhook about the canary (cleared when the rollout
    ends): an approval is never asked again for the same revision and step."""
    pending_notifications: Annotated[
        list[PendingNotification], Field(max_length=MAX_PENDING_NOTIFICATIONS)
    ] = Field(default_factory=list)
    """Notifications not yet delivered: written with the transition, delivered right after,
    retried (at most 5 rounds, 30s apart and doubling), so an operator restart loses none."""
