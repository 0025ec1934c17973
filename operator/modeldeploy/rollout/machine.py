"""The rollout state machine: (spec, status, observed world, analysis signal, now) -> Plan.

Pure: no I/O, no clock. Each reconcile reads the bookkeeping from status, applies at most a
few transitions, lays out the objects the new state needs and reports the new status:

    new revision in the spec -> canary (shadow phase first when rollout.shadow.percent > 0,
    then the cohort phase when rollout.canary.cohort is set) -> steps, each held for
    stepInterval with its pods Ready (and, when analysis gates the rollout, a passing round)
    -> [approval gate] -> Promoting: the canary is scaled to the stable's current replicas
    and must be Ready -> switch: it becomes stable, the old stable stays warm as `previous`
    for bakeTime, then goes.

Rollback (analysis, abort, warm-up timeout, canary pods that certainly cannot start) only
moves traffic back to the stable, which is never touched during a rollout, and deletes the
canary; the kill switch freezes everything and takes traffic away until released. Pod
problems that are not certain (yet) are reported: in status and, when new, as an Event.

Two holds keep every crash between two writes safe:
- an object name it would write is taken by an object it does not control (`World.foreign`):
  that object is never written; the ModelDeployment is Degraded (ObjectNotOwned), the client
  Service selects the stable alone and the rollout does not move forward (no step, no
  promotion) until the name is free; rollbacks, aborts and the kill switch still act.
- a revision the plan removes still has its Deployment or running pods: a canary keeps zero
  replicas and the client Service selects the stable alone until they are gone, so the
  removed revision and the new one are never behind `<name>` together, whatever order the
  writes land in.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from modeldeploy.api import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    ANNOTATION_RETRY,
    HISTORY_LIMIT,
    MAX_POD_PROBLEMS,
    AnalysisResult,
    Condition,
    GateAnswer,
    HistoryEntry,
    HistoryEvent,
    ModelDeploymentStatus,
    NotifyEvent,
    PodProblem,
    Webhook,
    WebhookType,
    parse_duration,
)
from modeldeploy.resources.common import Body, Owner
from modeldeploy.resources.deployment import ShadowTarget, shadow_url
from modeldeploy.resources.names import (
    Track,
    deployment_name,
    fallback_name,
)
from modeldeploy.resources.revision import RevisionSource
from modeldeploy.rollout.layout import Layout, RevisionLayout, build, diff, foreign_in
from modeldeploy.rollout.plan import Event, EventType, Plan, Subject
from modeldeploy.rollout.podstatus import NOT_READY, OOM_KILLED, PODS_CANNOT_START, describe
from modeldeploy.rollout.report import (
    COARSE_SPLIT,
    MAX_MESSAGE,
    NO_PROXY_IMAGE,
    NOT_OWNED,
    PODS_FAILING_REASON,
    PRIVILEGED_NOT_ALLOWED,
    Facts,
    coarse_split_message,
    refused,
    render,
)
from modeldeploy.rollout.signal import NO_ANALYSIS, AnalysisInput
from modeldeploy.rollout.sizing import canary_steps
from modeldeploy.rollout.state import State
from modeldeploy.rollout.webhooks import GateAsk, Notice, answered, failing_checks
from modeldeploy.rollout.world import ForeignObject, ObservedDeployment, World
from modeldeploy.routing import Split, router_for
from modeldeploy.routing.base import load_replicas

UNPULLABLE_IMAGE = frozenset({"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
"""Certain at once. A lone ErrImagePull is not: the kubelet's first failed pull may be a
registry hiccup; it backs off (ImagePullBackOff) when the retry fails too."""
CRASHING = frozenset({"CrashLoopBackOff", OOM_KILLED})
CRASH_RESTART_LIMIT = 3
"""Restarts after which a crash-looping or OOM-killed canary container is certain not to
start: the kubelet's back-off has then waited 10 + 20 + 40 s for it to come up."""
READINESS_GRACE = timedelta(seconds=30)
"""A pod not Ready for this long although its containers run is reported (before that it
is warming up, which is no problem)."""


def cannot_start(problem: PodProblem) -> bool:
    """Certain: waiting longer changes nothing, the canary is rolled back now."""
    return problem.reason in UNPULLABLE_IMAGE or (
        problem.reason in CRASHING and problem.restarts >= CRASH_RESTART_LIMIT
    )


def _problem_key(problem: PodProblem) -> tuple[str, str, str, str]:
    """What makes a problem new (not its message: back-off messages change as it waits)."""
    return problem.revision, problem.pod, problem.container, problem.reason


@dataclass(frozen=True)
class Commands:
    """One-shot annotations; each names the revision it is meant for."""

    promote: str | None
    abort: str | None
    retry: str | None

    @classmethod
    def of(cls, annotations: dict[str, str]) -> "Commands":
        return cls(
            annotations.get(ANNOTATION_PROMOTE),
            annotations.get(ANNOTATION_ABORT),
            annotations.get(ANNOTATION_RETRY),
        )


def plan(
    subject: Subject,
    world: World,
    analysis: AnalysisInput = NO_ANALYSIS,
    now: datetime | None = None,
    apply_error: str | None = None,
    *,
    answers: tuple[GateAnswer, ...] = (),
) -> Plan:
    """Decide one reconcile. `now` must be timezone-aware (required; the default only
    exists to make the signature read well and raises). `apply_error` is the last failure
    to apply objects, if any, surfaced in status. `answers`: what the gates of this plan's
    `asks` answered (the shell asked them; `rollout.webhooks`).
    `modeldeploy.reconcile.plan` concludes the analysis round first and calls this."""
    if now is None or now.tzinfo is None:
        raise ValueError("plan() needs a timezone-aware `now`")
    now = now.replace(microsecond=0)
    return _Reconcile(subject, world, analysis, now, apply_error, answers=answers).run()


def refuse_privileges(subject: Subject, privileges: tuple[str, ...], now: datetime) -> Plan:
    """The Plan of an operator without --allow-privileged-models for a spec that asks for
    `privileges` (see `refuse`)."""
    why = (
        f"spec.{', spec.'.join(privileges)}: this operator runs no privileged model pods "
        "(start it with --allow-privileged-models, chart value allowPrivilegedModels)"
    )
    return refuse(subject, PRIVILEGED_NOT_ALLOWED, why, now)


def refuse_without_proxy(subject: Subject, now: datetime) -> Plan:
    """The Plan of an operator without a proxy image for a spec with an external server
    (see `refuse`): half of such a pod cannot be built."""
    why = (
        "spec.externalServer: this operator has no modeldeploy proxy image to run beside an "
        "external V2 server (start it with --proxy-image or MODELDEPLOY_PROXY_IMAGE; the "
        "chart sets its own image)"
    )
    return refuse(subject, NO_PROXY_IMAGE, why, now)


def refuse(subject: Subject, reason: str, why: str, now: datetime) -> Plan:
    """The Plan for a spec this operator does not run: nothing is built, changed or deleted;
    status says why (`reason`), and the Warning Event is posted when the status did not say
    so already (once per refusal, across restarts)."""
    if now.tzinfo is None:
        raise ValueError("refuse() needs a timezone-aware `now`")
    status = refused(subject.status, reason, why, subject.generation, now.replace(microsecond=0))

    def degraded(conditions: list[Condition]) -> tuple[str, str, str] | None:
        found = next((c for c in conditions if c.type == "Degraded"), None)
        return (found.status, found.reason, found.message) if found else None

    before = degraded(subject.status.conditions)
    said = before == degraded(status.conditions)
    events = () if said else (Event("Warning", reason, why),)
    turned = before is None or before[0] != "True"
    notice = Notice("Degraded", subject.status.stable_revision, f"{reason}: {why}")
    return Plan(status=status, events=events, notices=(notice,) if turned else ())


class _Reconcile:
    def __init__(
        self,
        subject: Subject,
        world: World,
        analysis: AnalysisInput,
        now: datetime,
        apply_error: str | None,
        *,
        answers: tuple[GateAnswer, ...] = (),
    ) -> None:
        self.subject = subject
        self.spec = subject.spec
        self.world = world
        self.analysis = analysis
        self.now = now
        self.apply_error = apply_error
        self.owner = Owner(subject.name, subject.namespace, subject.uid)
        self.spec_source = subject.source()
        self.revision = self.spec_source.revision
        self.steps = canary_steps(subject.spec.rollout)
        self.router = router_for(subject.spec.rollout.traffic.mode)
        self.state = State.of(subject.status)
        self.commands = Commands.of(dict(subject.annotations))
        self.events: list[Event] = []
        self.consumed: list[str] = []
        self.killed = subject.spec.kill_switch.engaged
        self.waiting = False
        self.awaiting_approval = False
        self.foreign: tuple[ForeignObject, ...] = ()
        self.answers = answers
        self.asks: list[GateAsk] = []
        self.notices: list[Notice] = []
        self.gate_hold = ""
        """Which gate the canary waits for, and its answer ("" for none)."""
        self.gate_refused = False

    # --- observations -----------------------------------------------------------------

    def observed(self, revision: str | None) -> ObservedDeployment | None:
        if revision is None:
            return None
        return self.world.deployment(deployment_name(self.subject.name, revision))

    def ready(self, revision: str | None) -> int:
        observed = self.observed(revision)
        return observed.ready if observed else 0

    def pod_problems(self, revision: str | None) -> tuple[PodProblem, ...]:
        """Problems of a revision's pods worth reporting now."""
        if revision is None:
            return ()
        return tuple(
            problem
            for pod in self.world.pods_of(revision)
            for problem in pod.problems
            if problem.reason != NOT_READY
            or pod.not_ready_since is None
            or self.now - pod.not_ready_since >= READINESS_GRACE
        )

    def source(self, revision: str) -> RevisionSource | None:
        if revision == self.revision:
            return self.spec_source
        observed = self.observed(revision)
        return observed.source if observed else None

    @property
    def min_warm(self) -> int:
        return self.spec.replicas.min_warm

    def stable_replicas(self) -> int:
        """The stable's current replica count (the HPA's choice), the base of canary sizing."""
        observed = self.observed(self.state.stable)
        return observed.replicas if observed and observed.replicas > 0 else self.min_warm

    # --- bookkeeping helpers ----------------------------------------------------------

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def history(self, event: HistoryEvent, revision: str, reason: str) -> None:
        source = self.source(revision)
        entry = HistoryEntry(
            revision=revision,
            version=source.model.version if source else "",
            image=source.image if source else "",
            event=event,
            reason=reason[:4096],
            time=self.now,
        )
        self.state.history = [*self.state.history, entry][-HISTORY_LIMIT:]

    def notify(
        self,
        event: NotifyEvent,
        revision: str | None,
        message: str,
        analysis: AnalysisResult | None = None,
    ) -> None:
        self.notices.append(Notice(event, revision, message, failing_checks(analysis)))

    def consume(self, annotation: str, acted: bool, why: str) -> None:
        self.consumed.append(annotation)
        if not acted:
            self.event("Warning", "CommandIgnored", f"{annotation} ignored: {why}")

    # --- the reconcile ----------------------------------------------------------------

    def run(self) -> Plan:
        self.adopt_from_world()
        if self.stable_unreadable():
            # Never guess about the serving revision: change nothing until it is readable
            # again (the world's note about it is logged and posted by the caller).
            return Plan(status=self.subject.status)
        self.record_analysis()
        self.kill_switch()
        self.retry_command()
        self.target_revision()
        self.abort_command()
        self.record_gate_answers()  # about the canary as the spec has it now
        self.foreign = foreign_in(build(self.owner, self.spec, self.layout()), self.world)
        if not self.killed:
            self.progress()
            self.promote_command_ignored()
        self.bake()
        return self.finish()

    def stable_unreadable(self) -> bool:
        """The stable's Deployment exists but cannot be rebuilt (its revision-source
        annotation is unreadable) and the spec no longer describes it."""
        stable = self.state.stable
        if stable is None or stable == self.revision:
            return False
        observed = self.observed(stable)
        return observed is not None and observed.source is None

    def adopt_from_world(self) -> None:
        """Status lost (restored from a backup without status, replaced...): the track
        labels on the Deployments say who was what."""
        st = self.state
        if st.stable is not None:
            return
        by_track = {d.track: d for d in self.world.deployments.values() if d.source and d.revision}
        stable = by_track.get("stable")
        if stable is None or stable.revision is None:
            return
        st.stable = stable.revision
        canary = by_track.get("canary")
        if canary is not None and canary.revision == self.revision:
            st.canary, st.step, st.step_started_at = canary.revision, 0, self.now
        previous = by_track.get("previous")
        if previous is not None:
            st.previous = previous.revision
            st.bake_until = self.now
        self.event(
            "Warning",
            "StatusAdopted",
            f"status had no stable revision; adopted {st.stable} from its Deployment's labels",
        )

    def record_analysis(self) -> None:
        signal = self.analysis.signal
        st = self.state
        if signal is None or signal.revision not in (st.canary, st.stable):
            return
        previous = st.last_analysis
        st.last_analysis = AnalysisResult(
            time=signal.time.replace(microsecond=0),
            since=signal.since.replace(microsecond=0) if signal.since is not None else None,
            revision=signal.revision,
            samples=signal.samples,
            waiting=signal.waiting,
            verdict=signal.verdict,
            checks=list(signal.checks),
        )
        st.consecutive_failures = signal.consecutive_failures
        st.no_data_since = signal.no_data_since
        if signal.verdict == "fail":
            self.event("Warning", "AnalysisFailed", f"{signal.revision}: {signal.reason}")
        elif signal.verdict == "pass" and (
            previous is None or previous.verdict != "pass" or previous.revision != signal.revision
        ):
            self.event("Normal", "AnalysisPassed", f"{signal.revision}: {signal.reason}")

    def kill_switch(self) -> None:
        was_killed = self.subject.status.phase == "Killed"
        mode = self.spec.kill_switch.mode
        about = self.state.stable or self.revision
        if self.killed and not was_killed:
            self.event("Warning", "KillSwitchEngaged", f"traffic taken from the model ({mode})")
            self.history("KillSwitchEngaged", about, f"mode {mode}")
            self.notify("KillSwitchEngaged", about, f"traffic taken from the model ({mode})")
        elif was_killed and not self.killed:
            self.event("Normal", "KillSwitchReleased", "serving the model again")
            self.history("KillSwitchReleased", about, "kill switch released")
            self.notify("KillSwitchReleased", about, "serving the model again")
            if self.state.canary is not None:
                # No live traffic reached the canary meanwhile: its step starts over.
                self.state.step_started_at = self.now

    def retry_command(self) -> None:
        retry = self.commands.retry
        if retry is None:
            return
        st = self.state
        if st.failed is not None and retry == st.failed:
            st.failed, st.failed_analysis = None, None
            self.consume(ANNOTATION_RETRY, True, "")
            self.event("Normal", "RetryRequested", f"{retry} may be rolled out again")
        else:
            self.consume(ANNOTATION_RETRY, False, f"{retry} is not the failed revision")

    def target_revision(self) -> None:
        """Bring the bookkeeping in line with the spec's revision."""
        st, rev = self.state, self.revision
        if st.stable is not None and st.stable != rev and self.observed(st.stable) is None:
            # Its Deployment is gone and the spec no longer describes it: nothing to protect.
            self.event("Warning", "StableLost", f"Deployment of {st.stable} is gone")
            st.stable = None
            st.end_rollout()
        if st.stable is None:
            st.stable = rev
            self.history("Started", rev, "first revision")
            self.event("Normal", "Deploying", f"deploying {rev} ({self.spec.image})")
            return
        if rev == st.stable:
            if st.canary is not None:
                self.cancel_canary("the spec is back on the stable revision")
            return
        if rev == st.canary:
            return
        if st.canary is not None:
            self.cancel_canary(f"superseded by {rev}")
        if rev == st.failed:
            return  # rolled back once: retried only on request
        if self.spec.rollout.paused:
            self.waiting = True
            return
        self.start_rollout()

    def cancel_canary(self, why: str) -> None:
        canary = self.state.canary
        assert canary is not None
        self.history("Aborted", canary, why)
        self.event("Normal", "RolloutCancelled", f"{canary}: {why}")
        self.state.end_rollout()

    def describe_change(self) -> str:
        old = self.source(self.state.stable) if self.state.stable else None
        if old is None:
            return "new revision"
        changes = []
        if old.image != self.spec_source.image:
            changes.append(f"image {self.spec_source.image}")
        if old.model != self.spec_source.model:
            changes.append(f"model {self.spec_source.model.name} {self.spec_source.model.version}")
        if old.template != self.spec_source.template:
            changes.append("pod template")
        return "changed: " + ", ".join(changes) if changes else "new revision"

    def start_rollout(self) -> None:
        st = self.state
        if st.previous is not None:
            self.event("Normal", "BakeEnded", f"{st.previous} removed early: a new rollout starts")
            st.previous, st.bake_until = None, None
        st.canary = self.revision
        shadowing = self.spec.rollout.shadow.percent > 0
        cohort = self.spec.rollout.canary.cohort
        st.cohort = cohort.describe() if cohort is not None and not shadowing else None
        st.step = None if shadowing or st.cohort is not None or not self.steps else 0
        st.step_started_at = self.now
        st.promoting = False
        st.consecutive_failures = 0
        st.no_data_since = None
        why = self.describe_change()
        self.history("Started", self.revision, why)
        first = (
            f"{self.steps[0]}% of traffic"
            if st.step is not None
            else f"cohort phase ({st.cohort})"
            if st.cohort is not None
            else "shadow phase"
        )
        self.event("Normal", "RolloutStarted", f"{self.revision} ({why}); first: {first}")
        if self.analysis.disabled:
            self.event("Warning", "AnalysisDisabled", self.analysis.disabled)
        if self.pre_rollout_approved():  # else its first traffic comes with the approval
            self.warn_coarse_split()

    def abort_command(self) -> None:
        abort = self.commands.abort
        if abort is None:
            return
        if abort == self.state.canary:
            self.consume(ANNOTATION_ABORT, True, "")
            self.roll_back("Aborted", f"aborted by {ANNOTATION_ABORT}")
        else:
            self.consume(ANNOTATION_ABORT, False, f"{abort} is not the canary revision")

    def promote_command_ignored(self) -> None:
        promote = self.commands.promote
        if promote is not None and ANNOTATION_PROMOTE not in self.consumed:
            self.consume(ANNOTATION_PROMOTE, False, f"{promote} is not the canary revision")

    def roll_back(self, event: HistoryEvent, why: str) -> None:
        st = self.state
        canary = st.canary
        assert canary is not None
        st.failed = canary
        last = st.last_analysis
        failing = last is not None and last.revision == canary and last.verdict == "fail"
        st.failed_analysis = last if failing else None
        self.history(event, canary, why)
        reason = "Aborted" if event == "Aborted" else "RolledBack"
        self.event("Warning", reason, f"{canary} rolled back, {st.stable} serves: {why}")
        if event == "RolledBack":
            self.notify("RolledBack", canary, f"rolled back, {st.stable} serves: {why}", last)
        st.end_rollout()

    # --- progress of a canary ---------------------------------------------------------

    def stage_percent(self) -> int:
        """Live traffic share the current step asks for (0 in the shadow and cohort phases:
        the cohort's requests are no share the spec can name)."""
        step = self.state.step
        if step is None or not self.steps:
            return 0
        return self.steps[min(step, len(self.steps) - 1)]

    def promotion_target(self) -> int:
        """Pods the canary needs before it takes over: the stable's current count."""
        return max(self.min_warm, min(self.stable_replicas(), self.spec.replicas.max))

    def planned_weight(self) -> int:
        """The share the router gives the current step once the canary is warm."""
        maximum = self.spec.replicas.max
        return self.router.planned_weight(self.stable_replicas(), self.stage_percent(), maximum)

    def warn_coarse_split(self) -> None:
        """A Warning Event when a step starts whose replica ratio gives the canary more than
        twice the share it asks for (status and the Progressing condition say so too)."""
        percent, planned = self.stage_percent(), self.planned_weight()
        if percent > 0 and planned > 2 * percent:
            self.event("Warning", COARSE_SPLIT, coarse_split_message(
                percent, planned, self.stable_replicas()
            ))  # fmt: skip

    def canary_wanted(self) -> int:
        if self.state.promoting:
            return self.promotion_target()
        maximum, stable = self.spec.replicas.max, self.stable_replicas()
        if self.state.cohort is not None and self.steps:
            # The cohort's size is unknown: the first step's pods, so it needs no warm-up.
            return self.router.canary_replicas(stable, self.steps[0], maximum)
        if self.state.step is None:
            return load_replicas(stable, max(self.spec.rollout.shadow.percent, 1), maximum)
        return self.router.canary_replicas(stable, self.stage_percent(), maximum)

    def analysis_allows(self) -> bool:
        if not self.analysis.gated:
            return True
        last, st = self.state.last_analysis, self.state
        return (
            last is not None
            and last.revision == st.canary
            and last.verdict == "pass"
            and st.step_started_at is not None
            and last.time >= st.step_started_at
        )

    def at_last_step(self) -> bool:
        st = self.state
        if st.step is None:
            return not self.steps
        return st.step >= len(self.steps) - 1

    def progress(self) -> None:
        st = self.state
        canary = st.canary
        if canary is None:
            return
        observed = self.observed(canary)
        signal = self.analysis.signal
        if signal is not None and signal.revision == canary and signal.rollback:
            self.roll_back("RolledBack", signal.reason or f"analysis {signal.verdict}")
            return
        failing = [p for p in self.pod_problems(canary) if cannot_start(p)]
        if failing:
            more = f" (and {len(failing) - 1} more)" if len(failing) > 1 else ""
            self.roll_back("RolledBack", f"{PODS_CANNOT_START}: {describe(failing[0])}{more}")
            return
        if observed is not None and observed.timed_out:
            timeout = self.spec.warmup.timeout
            self.roll_back(
                "RolledBack",
                f"warm-up timeout: {observed.ready} of {observed.replicas} pods Ready "
                f"within {timeout}",
            )
            return
        if self.commands.promote is not None and self.commands.promote == canary:
            self.consume(ANNOTATION_PROMOTE, True, "")
            if not st.promoting:
                st.promoting = True
                st.step_started_at = self.now
                self.event("Normal", "Promoting", f"{canary}: promotion requested")
        if self.foreign:
            return  # its traffic may run through an object the operator cannot write
        if st.promoting:
            self.switch_when_ready()
            return
        if self.spec.rollout.paused or st.step_started_at is None:
            return
        if not self.gate_open("preRollout", None):
            return  # no traffic yet: its pods warm up meanwhile
        interval = parse_duration(self.spec.rollout.step_interval)
        warm = observed is not None and observed.ready >= self.canary_wanted()
        if not (warm and self.now >= st.step_started_at + interval and self.analysis_allows()):
            return
        if not self.gate_open("step", st.step):
            return
        cohort = self.spec.rollout.canary.cohort
        if st.shadowing and cohort is not None:
            st.cohort, st.step_started_at = cohort.describe(), self.now
            self.event("Normal", "CohortStarted", f"{canary}: serves {st.cohort} alone")
        elif st.cohort is not None and self.steps:
            self.end_cohort()
            self.event("Normal", "StepAdvanced", f"{canary}: {self.stage_percent()}% of traffic")
            self.warn_coarse_split()
        elif not self.at_last_step():
            st.step = 0 if st.step is None else st.step + 1
            st.step_started_at = self.now
            self.event("Normal", "StepAdvanced", f"{canary}: {self.stage_percent()}% of traffic")
            self.warn_coarse_split()
        elif self.spec.rollout.require_approval:
            self.awaiting_approval = True
            if self.subject.status.phase != "Paused":
                self.event("Normal", "AwaitingApproval", f"{canary} waits for a promote")
        else:
            st.promoting = True
            st.step_started_at = self.now
            self.event("Normal", "Promoting", f"{canary} passed every step")

    def end_cohort(self) -> None:
        """From the cohort phase to the first weighted step. Its analysis ends with it: the
        weighted steps' rounds are a new sequential test, on evidence from their start, so
        that the checks against the stable compare the same population (`rounds`)."""
        st = self.state
        st.cohort, st.step, st.step_started_at = None, 0, self.now
        st.last_analysis, st.consecutive_failures, st.no_data_since = None, 0, None

    # --- gates --------------------------------------------------------------------------

    def gates_of(self, type_: WebhookType) -> list[Webhook]:
        return [w for w in self.spec.rollout.webhooks if w.type == type_]

    def pre_rollout_approved(self) -> bool:
        """Every preRollout gate approved the canary (no canary: nothing to approve)."""
        canary = self.state.canary
        return canary is None or all(
            (answer := answered(self.state.gates, w.name, canary, None)) is not None
            and answer.approved
            for w in self.gates_of("preRollout")
        )

    def record_gate_answers(self) -> None:
        """The answers the shell got for the last plan's asks, into status; an Event when an
        answer differs from the one before. The first step's clock starts when the
        preRollout gates approve: that is when the canary gets its first traffic."""
        st = self.state
        gates = {w.name for w in self.spec.rollout.webhooks if w.gate}
        if st.canary is None or not self.answers:
            return
        before = self.pre_rollout_approved()
        for answer in self.answers:
            if answer.revision != st.canary or answer.webhook not in gates:
                continue
            old = next((a for a in st.gates if a.webhook == answer.webhook), None)
            st.gates = [*(a for a in st.gates if a.webhook != answer.webhook), answer]
            said = (answer.revision, answer.step, answer.approved, answer.message)
            if old is not None and (old.revision, old.step, old.approved, old.message) == said:
                continue
            at = "" if answer.step is None else f" at step {answer.step + 1}"
            if answer.approved:
                self.event("Normal", "GateApproved", f"{answer.webhook} approved {st.canary}{at}")
            else:
                self.event(
                    "Warning",
                    "GateRefused",
                    f"{answer.webhook} refused {st.canary}{at}: {answer.message}",
                )
        if not before and self.pre_rollout_approved():
            st.step_started_at = self.now
            self.warn_coarse_split()

    def gate_open(self, type_: WebhookType, step: int | None) -> bool:
        """Every gate webhook of `type_` approved the canary at `step`. Those that did not
        are asked (`Plan.asks`) when they never answered about it, or refused it at least
        analysis.interval ago (as Flagger asks again at each analysis interval)."""
        st = self.state
        canary = st.canary
        assert canary is not None
        reask = parse_duration(self.spec.analysis.interval)
        approved = True
        for webhook in self.gates_of(type_):
            answer = answered(st.gates, webhook.name, canary, step)
            if answer is not None and answer.approved:
                continue
            approved = False
            if answer is None or self.now >= answer.time + reask:
                percent = self.stage_percent() if type_ == "step" else 0
                self.asks.append(GateAsk(webhook, canary, step, percent))
            if not self.gate_hold:
                what = "preRollout gate" if type_ == "preRollout" else "step gate"
                if answer is None:
                    self.gate_hold = f"{canary} waits for {what} {webhook.name}"
                else:
                    self.gate_hold = f"{what} {webhook.name} refused {canary}: {answer.message}"
                    self.gate_refused = True
        return approved

    def switch_when_ready(self) -> None:
        st = self.state
        canary, old = st.canary, st.stable
        assert canary is not None
        assert old is not None
        target = self.promotion_target()
        observed = self.observed(canary)
        if observed is None or observed.ready < target or observed.replicas < target:
            return
        bake = parse_duration(self.spec.rollout.bake_time)
        st.end_rollout()
        st.stable = canary
        st.consecutive_failures, st.no_data_since = 0, None
        if bake > timedelta(0) and self.source(old) is not None:
            st.previous, st.bake_until = old, self.now + bake
        else:
            st.previous, st.bake_until = None, None
        self.history("Promoted", canary, f"{observed.ready} Ready pods took over from {old}")
        kept = f"; {old} stays warm until {st.bake_until:%H:%M:%S}" if st.previous else ""
        self.event("Normal", "Promoted", f"{canary} is stable{kept}")
        self.notify("Promoted", canary, f"stable, took over from {old}{kept}")

    # --- after promotion ----------------------------------------------------------------

    def bake(self) -> None:
        st = self.state
        if st.previous is None:
            return
        if self.observed(st.previous) is None or st.bake_until is None:
            st.previous, st.bake_until = None, None
            return
        signal = self.analysis.signal
        if (
            not self.killed
            and signal is not None
            and signal.revision == st.stable
            and signal.rollback
            and self.now < st.bake_until
        ):
            if self.ready(st.previous) >= self.min_warm:
                failed, st.stable = st.stable, st.previous
                st.failed, st.previous, st.bake_until = failed, None, None
                why = signal.reason or "analysis failed within bakeTime"
                self.history("RolledBack", failed, why)
                self.event("Warning", "RolledBack", f"{failed} rolled back to {st.stable}: {why}")
                self.notify(
                    "RolledBack", failed, f"rolled back to {st.stable}: {why}", st.last_analysis
                )
            return
        if self.now >= st.bake_until:
            self.event("Normal", "BakeComplete", f"{st.previous} removed after bakeTime")
            st.previous, st.bake_until = None, None

    # --- when to plan again ------------------------------------------------------------

    def due(self) -> datetime | None:
        """The earliest moment after now at which one of this machine's clock comparisons
        flips for the new state (`Plan.due`): the step's interval ends (`progress`), a refused
        gate is asked again (`gate_open`), a notification's next delivery round, the bake
        ends (`bake`; also where the stable's analysis stops being a bake test), a canary or
        stable pod's readiness grace ends (`pod_problems`). Everything else moves on a change:
        pods turning Ready, the warm-up timeout (the Deployment controller's condition),
        commands, the spec."""
        st = self.state
        times: list[datetime] = []
        stepping = st.canary is not None and not st.promoting and not self.killed
        if stepping and st.step_started_at is not None and not self.spec.rollout.paused:
            times.append(st.step_started_at + parse_duration(self.spec.rollout.step_interval))
        if stepping and not self.spec.rollout.paused:
            reask = parse_duration(self.spec.analysis.interval)
            times += (
                g.time + reask for g in st.gates if not g.approved and g.revision == st.canary
            )
        times += (
            n.next_attempt_at
            for n in self.subject.status.pending_notifications
            if n.next_attempt_at
        )
        if st.previous is not None and st.bake_until is not None:
            times.append(st.bake_until)
        times += (
            pod.not_ready_since + READINESS_GRACE
            for revision in (st.canary, st.stable)
            if revision is not None
            for pod in self.world.pods_of(revision)
            if pod.not_ready_since is not None and any(p.reason == NOT_READY for p in pod.problems)
        )
        return min((t for t in times if t > self.now), default=None)

    # --- layout and report --------------------------------------------------------------

    def revision_layout(self, revision: str, track: Track, replicas: int) -> RevisionLayout | None:
        source = self.source(revision)
        return RevisionLayout(source, track, replicas) if source is not None else None

    def removing(self) -> bool:
        """A revision the layout no longer has still has its Deployment or running pods."""
        st, name = self.state, self.subject.name
        kept = {r for r in (st.stable, st.canary, st.previous) if r is not None}
        wanted = {deployment_name(name, r) for r in kept}
        if self.spec.fallback is not None:
            wanted.add(fallback_name(name))
        return any(d not in wanted for d in self.world.deployments) or bool(
            self.world.strays - kept
        )

    def layout(self) -> Layout:
        st, name = self.state, self.subject.name
        assert st.stable is not None
        to_zero = self.killed and self.spec.kill_switch.mode == "scaleToZero"
        observed_stable = self.observed(st.stable)
        stable_count = max(observed_stable.replicas if observed_stable else 0, self.min_warm)
        shadow = None
        mirrors = self.spec.rollout.shadow.percent > 0 and self.pre_rollout_approved()
        if st.shadowing and mirrors:
            shadow = ShadowTarget(
                shadow_url(name, self.subject.namespace), self.spec.rollout.shadow.percent
            )
        stable_source = self.source(st.stable)
        assert stable_source is not None
        stable = RevisionLayout(stable_source, "stable", 0 if to_zero else stable_count, shadow)
        canary = None
        if st.canary is not None:
            canary = self.revision_layout(st.canary, "canary", self.canary_wanted())
            if canary is not None and (to_zero or self.removing()):
                canary = RevisionLayout(canary.source, "canary", 0)
        previous = None
        if st.previous is not None:
            observed = self.observed(st.previous)
            count = max(observed.replicas if observed else 0, self.min_warm)
            previous = self.revision_layout(st.previous, "previous", 0 if to_zero else count)
        return Layout(
            stable=stable,
            canary=canary,
            previous=previous,
            client_selector=self.client_selector(),
            autoscaled=not to_zero,
        )

    def split(self) -> Split:
        """Where traffic should go, and what the pods can carry, for the router."""
        st = self.state
        assert st.stable is not None
        percent = self.stage_percent() if st.canary is not None else 0
        return Split(
            name=self.subject.name,
            stable=st.stable,
            canary=st.canary,
            percent=percent,
            stable_ready=self.ready(st.stable),
            canary_ready=self.ready(st.canary),
            carries=st.canary is not None and self.canary_carries(percent),
            carried=self.carried_percent(),
            hold=self.removing() or bool(self.foreign) or not self.pre_rollout_approved(),
            killed=self.killed,
            fallback=self.spec.kill_switch.mode == "fallback" and self.spec.fallback is not None,
            cohort=self.spec.rollout.canary.cohort if st.cohort is not None else None,
        )

    def client_selector(self) -> dict[str, str]:
        return self.router.client_selector(self.split())

    def canary_carries(self, percent: int) -> bool:
        """The canary has the Ready pods for `percent`: the count the router sizes for that
        share (kept while a promotion scales it further), all of it at a full step."""
        if percent >= 100:
            return self.canary_carries_all()
        maximum = self.spec.replicas.max
        return self.ready(self.state.canary) >= self.router.canary_replicas(
            self.stable_replicas(), percent, maximum
        )

    def carried_percent(self) -> int:
        """The largest step share, up to the current one, that the canary's Ready pods carry."""
        step = self.state.step
        if self.state.canary is None or step is None or not self.steps:
            return 0
        reached = self.steps[: min(step, len(self.steps) - 1) + 1]
        return next((p for p in reversed(reached) if self.canary_carries(p)), 0)

    def canary_carries_all(self) -> bool:
        """The canary has the Ready pods to take all traffic: a full step's count (as many as
        the stable has), and at least minWarm. Traffic never leaves the stable before."""
        return self.ready(self.state.canary) >= max(self.min_warm, self.canary_wanted())

    def last_rollback_reason(self) -> str:
        failed = self.state.failed
        for entry in reversed(self.state.history):
            if entry.revision == failed and entry.event in ("RolledBack", "Aborted"):
                return entry.reason
        return "rolled back"

    def kill_target(self) -> str:
        if self.spec.kill_switch.mode == "fallback":
            return f"{self.subject.name} routes to {fallback_name(self.subject.name)}"
        return "every revision scaled to zero"

    def report_pod_problems(self) -> tuple[PodProblem, ...]:
        """The problems status lists (canary's first, bounded); a Warning Event per revision
        with problems the last status did not list. Status remembers them, so no Event
        repeats, also across operator restarts."""
        st = self.state
        listed = (self.pod_problems(st.canary) + self.pod_problems(st.stable))[:MAX_POD_PROBLEMS]
        known = {_problem_key(p) for p in self.subject.status.pod_problems}
        for track, revision in (("canary", st.canary), ("stable", st.stable)):
            new = [p for p in listed if p.revision == revision and _problem_key(p) not in known]
            if new:
                text = "; ".join(describe(p) for p in new)
                self.event("Warning", "PodProblem", f"{track} {revision}: {text}")
        return listed

    def report_foreign(self, desired: list[Body]) -> str:
        """The Degraded message about foreign objects ("" for none); an Event when new."""
        foreign = foreign_in(desired, self.world)
        if not foreign:
            return ""
        names = "; ".join(str(f) for f in foreign)
        message = f"not controlled by this ModelDeployment, left alone: {names}"[:MAX_MESSAGE]
        degraded = next((c for c in self.subject.status.conditions if c.type == "Degraded"), None)
        if degraded is None or (degraded.reason, degraded.message) != (NOT_OWNED, message):
            self.event("Warning", NOT_OWNED, message)
        return message

    def finish(self) -> Plan:
        pod_problems = self.report_pod_problems()
        layout = self.layout()
        split = self.split()
        desired = build(self.owner, self.spec, layout)
        not_owned = self.report_foreign(desired)
        apply, delete = diff(desired, self.world)
        st = self.state
        stable = self.observed(st.stable)
        facts = Facts(
            generation=self.subject.generation,
            revision=self.revision,
            min_warm=self.min_warm,
            killed=self.killed,
            kill_mode=self.spec.kill_switch.mode,
            paused=self.spec.rollout.paused,
            waiting=self.waiting,
            steps=self.steps,
            stable_ready=self.ready(st.stable),
            canary_ready=self.ready(st.canary),
            canary_wanted=layout.canary.replicas if layout.canary else 0,
            weight=self.router.effective_weight(split, self.world.route),
            requested=self.stage_percent() if st.canary is not None and not self.killed else 0,
            awaiting_approval=self.awaiting_approval,
            rollback_reason=self.last_rollback_reason() if st.failed else "",
            apply_error=self.apply_error,
            stable_timed_out=bool(stable and stable.timed_out),
            pod_problems=pod_problems,
            not_owned=not_owned,
            gate_hold=self.gate_hold,
            gate_refused=self.gate_refused,
        )
        gates = {w.name for w in self.spec.rollout.webhooks if w.gate}
        st.gates = [g for g in st.gates if g.revision == st.canary and g.webhook in gates]
        status = render(self.subject.status, st, facts, self.kill_target(), self.now)
        self.notify_degraded(status)
        return Plan(
            status=status,
            apply=apply,
            delete=delete,
            events=tuple(self.events),
            remove_annotations=tuple(dict.fromkeys(self.consumed)),
            due=self.due(),
            asks=tuple(self.asks),
            notices=tuple(self.notices),
            route=self.router.route_patch(split, self.world.route),
        )

    def notify_degraded(self, status: ModelDeploymentStatus) -> None:
        """Degraded turned True, for another reason than a rollback (which is its own
        notification)."""

        def degraded(conditions: list[Condition]) -> Condition | None:
            return next((c for c in conditions if c.type == "Degraded"), None)

        new, old = degraded(status.conditions), degraded(self.subject.status.conditions)
        if new is None or new.status != "True" or (old is not None and old.status == "True"):
            return
        if new.reason not in ("RolledBack", PODS_FAILING_REASON):
            self.notify("Degraded", self.state.stable, f"{new.reason}: {new.message}")
