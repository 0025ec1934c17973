"""Phase, conditions and message: what people and tools (kubectl wait, Flux, Argo CD) read.

Conditions follow metav1.Condition and kstatus conventions: each carries observedGeneration,
and lastTransitionTime moves only when its status flips. Messages hold no clock-dependent
text, so that an idle resource's status never changes.
"""

from dataclasses import dataclass
from datetime import datetime

from modeldeploy.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    ModelDeploymentStatus,
    Phase,
    PodProblem,
)
from modeldeploy.rollout.podstatus import PODS_CANNOT_START, describe
from modeldeploy.rollout.state import PROMOTING_REASON, State
from modeldeploy.routing.replicas import stable_replicas_for

MAX_MESSAGE = 1024
PODS_FAILING_REASON = "PodsFailing"
"""Degraded (and Stalled) after a rollback of a canary whose pods cannot start."""
NOT_OWNED = "ObjectNotOwned"
"""Degraded (and Stalled) while a name the ModelDeployment needs is taken by another's object."""
PRIVILEGED_NOT_ALLOWED = "PrivilegedNotAllowed"
NO_PROXY_IMAGE = "ProxyImageNotConfigured"
"""Ready False, Degraded and Stalled True: the spec asks for privileged pods, which this
operator does not run."""
SHOWN_PROBLEMS = 3
COHORT_REASON = "CohortPhase"
"""Progressing: the canary serves its cohort alone (rollout.canary.cohort)."""
COARSE_SPLIT = "CoarseTrafficSplit"
"""Warning: the replica ratio gives the canary more than twice its step's share."""


def coarse_split_message(requested: int, effective: int, stable_pods: int) -> str:
    """What the replica ratio does to a step, and what to change."""
    return (
        f"the replica ratio gives the canary {effective}% of requests for a {requested}% "
        f"step ({stable_pods} stable pods); {stable_replicas_for(requested)} or more stable "
        "pods (replicas.minWarm) bring it within twice the step"
    )


@dataclass(frozen=True)
class Facts:
    """What the report needs beyond the state: the spec's wishes and the observed pods."""

    generation: int
    revision: str
    """The spec's revision."""
    min_warm: int
    killed: bool
    kill_mode: str
    paused: bool
    waiting: bool
    """A new revision is not rolled out because the rollout is paused."""
    steps: tuple[int, ...]
    stable_ready: int
    canary_ready: int
    canary_wanted: int
    weight: int
    """The share of requests the canary serves (effective)."""
    awaiting_approval: bool
    rollback_reason: str
    apply_error: str | None
    stable_timed_out: bool = False
    """The stable's Deployment reports ProgressDeadlineExceeded (= warmup.timeout)."""
    pod_problems: tuple[PodProblem, ...] = ()
    """Reported problems of the canary's and the stable's pods (status.podProblems)."""
    not_owned: str = ""
    """Which wanted objects exist without being the ModelDeployment's ("" for none)."""
    requested: int = 0
    """The share the current step asks for (0 without a canary step)."""
    gate_hold: str = ""
    """Which gate webhook the canary waits for, and its answer ("" for none)."""
    gate_refused: bool = False
    """That gate refused (else it has not answered yet)."""

    def problems_of(self, revision: str | None) -> tuple[PodProblem, ...]:
        return tuple(p for p in self.pod_problems if p.revision == revision)


@dataclass(frozen=True)
class _Cond:
    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _problems(problems: tuple[PodProblem, ...]) -> str:
    text = "; ".join(describe(p) for p in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return f"{text} (and {more} more)" if more > 0 else text


def _stage(state: State, facts: Facts) -> str:
    if state.cohort is not None:
        return f"cohort phase ({state.cohort} to the canary alone)"
    if state.step is None:
        return "shadow phase"
    step = min(state.step, len(facts.steps) - 1) if facts.steps else 0
    percent = facts.steps[step] if facts.steps else 0
    return f"step {step + 1} of {len(facts.steps)} ({percent}%)"


def _phase(prev: ModelDeploymentStatus, state: State, facts: Facts) -> Phase:
    if facts.killed:
        return "Killed"
    if state.canary is not None:
        if state.promoting:
            return "Promoting"
        return "Paused" if facts.paused or facts.awaiting_approval else "Progressing"
    if facts.waiting:
        return "Paused"
    if state.failed is not None and state.failed == facts.revision:
        return "RolledBack"
    if facts.stable_ready < facts.min_warm:
        return "Pending" if prev.phase in ("Pending", "Killed") else "Degraded"
    if _stable_failing(state):
        return "Degraded"
    return "Stable"


def _stable_failing(state: State) -> bool:
    last = state.last_analysis
    return (
        state.canary is None
        and last is not None
        and last.revision == state.stable
        and last.verdict == "fail"
    )


def _failing_message(state: State) -> str:
    """The stable fails its analysis, naming the checks that failed (their subjects too)."""
    last = state.last_analysis
    failed = [c.name for c in last.checks if c.verdict == "fail"] if last is not None else []
    named = f": {', '.join(failed)}" if failed else ""
    return f"{state.stable} fails its analysis{named}"


def _message(phase: Phase, state: State, facts: Facts, kill_target: str) -> str:
    stable, canary = state.stable, state.canary
    match phase:
        case "Killed":
            return f"kill switch engaged ({facts.kill_mode}): {kill_target}"
        case "Promoting":
            return (
                f"promoting {canary}: {facts.canary_ready} of {facts.canary_wanted} pods Ready "
                f"before traffic moves from {stable}"
            )
        case "Paused" if facts.waiting and canary is None:
            return f"rollout of {facts.revision} waits: spec.rollout.paused is true"
        case "Paused" if facts.awaiting_approval and not facts.paused:
            return (
                f"{canary} passed its last step ({facts.weight}% of traffic): waiting for "
                f"approval (modeldeploy promote, or annotate modeldeploy.io/promote={canary})"
            )
        case "Paused" | "Progressing":
            held = " (paused)" if phase == "Paused" else ""
            gate = f"; {facts.gate_hold}" if facts.gate_hold else ""
            return (
                f"{_stage(state, facts)}{held}: {canary} has {facts.canary_ready} of "
                f"{facts.canary_wanted} pods Ready, {facts.weight}% of traffic; stable "
                f"{stable}{gate}"
            )
        case "RolledBack":
            return f"{state.failed} rolled back ({facts.rollback_reason}); serving {stable}"
        case "Pending":
            return f"waiting for {facts.min_warm} Ready pods of {stable} ({facts.stable_ready})"
        case "Degraded" if facts.stable_ready < facts.min_warm:
            return f"only {facts.stable_ready} of {facts.min_warm} warm pods of {stable} are Ready"
        case "Degraded":
            return f"{stable} fails its analysis: serving, needs attention"
        case _:
            return f"serving {stable} with {facts.stable_ready} Ready pods"


def _ready(state: State, facts: Facts, phase: Phase) -> _Cond:
    if phase == "Stable" or (phase == "Degraded" and facts.stable_ready >= facts.min_warm):
        return _Cond(
            "Ready",
            "True",
            "StableServing",
            f"{facts.stable_ready} pods Ready on {state.stable} (minWarm {facts.min_warm})",
        )
    reasons: dict[Phase, str] = {
        "Killed": "KillSwitchEngaged",
        "Progressing": "RolloutInProgress",
        "Promoting": "RolloutInProgress",
        "Paused": "RolloutPaused",
        "RolledBack": "RolledBack",
    }
    reason = reasons.get(phase, "InsufficientReplicas")
    return _Cond(
        "Ready",
        "False",
        reason,
        f"{facts.stable_ready} of {facts.min_warm} warm pods Ready on {state.stable}; "
        f"spec revision {facts.revision}",
    )


def _progressing(
    prev: ModelDeploymentStatus, state: State, facts: Facts, phase: Phase
) -> _Cond | None:
    if state.canary is not None:
        if facts.killed:
            return None  # frozen as it was (it remembers a promotion under way)
        if state.promoting:
            return _Cond("Progressing", "True", PROMOTING_REASON, f"promoting {state.canary}")
        if facts.paused:
            return _Cond("Progressing", "Unknown", "RolloutPaused", "spec.rollout.paused")
        if facts.awaiting_approval:
            return _Cond(
                "Progressing", "True", "AwaitingApproval", f"{state.canary} awaits approval"
            )
        problems = facts.problems_of(state.canary)
        trouble = f"; pod problems: {_problems(problems)}" if problems else ""
        if facts.gate_hold:
            reason = "GateRefused" if facts.gate_refused else "AwaitingGate"
            return _Cond("Progressing", "True", reason, f"{facts.gate_hold}{trouble}")
        if facts.canary_ready < facts.canary_wanted:
            message = f"{state.canary} pods are warming up{trouble}"
            return _Cond("Progressing", "True", "WarmingUp", message)
        reason = (
            "StepInProgress"
            if state.step is not None
            else COHORT_REASON
            if state.cohort is not None
            else "Shadowing"
        )
        coarse = ""
        if 0 < facts.requested < 100 and facts.weight > 2 * facts.requested:
            split = coarse_split_message(facts.requested, facts.weight, facts.stable_ready)
            coarse = f"; {split}"
        message = f"{state.canary} at {_stage(state, facts)}{trouble}{coarse}"
        return _Cond("Progressing", "True", reason, _short(message))
    if facts.waiting:
        return _Cond("Progressing", "Unknown", "RolloutPaused", "spec.rollout.paused")
    if phase == "Pending":
        return _Cond("Progressing", "True", "Deploying", f"starting {state.stable}")
    if phase == "RolledBack":
        return _Cond("Progressing", "False", "RolledBack", f"{state.failed} was rolled back")
    return _Cond("Progressing", "False", "Complete", f"{state.stable} is stable")


def _degraded(state: State, facts: Facts, phase: Phase) -> _Cond:
    if facts.not_owned:
        return _Cond("Degraded", "True", NOT_OWNED, facts.not_owned)
    if facts.apply_error:
        return _Cond("Degraded", "True", "ApplyFailed", facts.apply_error)
    if not facts.killed and facts.stable_timed_out and facts.stable_ready < facts.min_warm:
        return _Cond(
            "Degraded",
            "True",
            "WarmupTimeout",
            f"pods of {state.stable} not Ready within warmup.timeout "
            f"({facts.stable_ready} of {facts.min_warm} Ready)",
        )
    if phase == "RolledBack":
        pods = facts.rollback_reason.startswith(PODS_CANNOT_START)
        reason = PODS_FAILING_REASON if pods else "RolledBack"
        return _Cond("Degraded", "True", reason, f"{state.failed}: {facts.rollback_reason}")
    stable_problems = facts.problems_of(state.stable)
    if not facts.killed and stable_problems:
        # The kubelet's own reason (a known, small set), e.g. CrashLoopBackOff.
        message = f"pods of {state.stable}: {_problems(stable_problems)}"
        return _Cond("Degraded", "True", stable_problems[0].reason, message)
    if not facts.killed and phase != "Pending" and facts.stable_ready < facts.min_warm:
        return _Cond(
            "Degraded",
            "True",
            "InsufficientReplicas",
            f"{facts.stable_ready} of {facts.min_warm} warm pods Ready on {state.stable}",
        )
    if _stable_failing(state):
        return _Cond("Degraded", "True", "AnalysisFailed", _failing_message(state))
    return _Cond("Degraded", "False", "AsExpected", "serving within expectations")


STALLED_REASONS = frozenset(
    {"RolledBack", PODS_FAILING_REASON, "ApplyFailed", "WarmupTimeout", NOT_OWNED}
)


def _kstatus(progressing: Condition | None, degraded: _Cond) -> list[_Cond]:
    """kstatus' Reconciling and Stalled, derived from Progressing and Degraded."""
    moving = progressing is not None and progressing.status == "True"
    stalled = degraded.status == "True" and degraded.reason in STALLED_REASONS
    return [
        _Cond(
            "Reconciling",
            "True" if moving else "False",
            progressing.reason if moving and progressing is not None else "Settled",
            progressing.message if moving and progressing is not None else "nothing under way",
        ),
        _Cond(
            "Stalled",
            "True" if stalled else "False",
            degraded.reason if stalled else "NotStalled",
            degraded.message if stalled else "the spec can be reached",
        ),
    ]


def _killed(facts: Facts, kill_target: str) -> _Cond:
    if facts.killed:
        return _Cond("Killed", "True", "KillSwitchEngaged", f"{facts.kill_mode}: {kill_target}")
    return _Cond("Killed", "False", "NotEngaged", "serving normally")


def _condition(
    prev: ModelDeploymentStatus, cond: _Cond, generation: int, now: datetime
) -> Condition:
    old = next((c for c in prev.conditions if c.type == cond.type), None)
    since = old.last_transition_time if old is not None and old.status == cond.status else now
    return Condition(
        type=cond.type,
        status=cond.status,
        reason=cond.reason,
        message=_short(cond.message),
        last_transition_time=since,
        observed_generation=generation,
    )


def render(
    prev: ModelDeploymentStatus, state: State, facts: Facts, kill_target: str, now: datetime
) -> ModelDeploymentStatus:
    phase = _phase(prev, state, facts)
    progressing = _progressing(prev, state, facts, phase)
    degraded = _degraded(state, facts, phase)
    conds = [
        _ready(state, facts, phase),
        progressing,
        degraded,
        _killed(facts, kill_target),
    ]
    conditions = [
        _condition(prev, c, facts.generation, now) if c is not None else None for c in conds
    ]
    kept = next((c for c in prev.conditions if c.type == "Progressing"), None)
    shown_progressing = conditions[1] or kept
    kstatus = [
        _condition(prev, c, facts.generation, now) for c in _kstatus(shown_progressing, degraded)
    ]
    return ModelDeploymentStatus(
        phase=phase,
        message=_short(_message(phase, state, facts, kill_target)),
        observed_generation=facts.generation,
        stable_revision=state.stable,
        canary_revision=state.canary,
        previous_stable_revision=state.previous,
        failed_revision=state.failed,
        canary_weight=facts.weight,
        requested_weight=facts.requested,
        step=state.step if state.canary is not None else None,
        cohort=state.cohort if state.canary is not None else None,
        step_started_at=state.step_started_at if state.canary is not None else None,
        consecutive_failures=state.consecutive_failures,
        no_data_since=state.no_data_since,
        bake_until=state.bake_until if state.previous is not None else None,
        conditions=[
            c
            for c in (conditions[0], shown_progressing, conditions[2], conditions[3], *kstatus)
            if c is not None
        ],
        last_analysis=state.last_analysis,
        failed_analysis=state.failed_analysis,
        pod_problems=list(facts.pod_problems),
        history=state.history,
        gates=state.gates,
    )


def refused(
    prev: ModelDeploymentStatus, reason: str, message: str, generation: int, now: datetime
) -> ModelDeploymentStatus:
    """The status of a spec the operator does not run (privileged pods it may not run, an
    external server without a proxy image): nothing is built or changed, so phase and
    bookkeeping stay as they were (a promotion under way is still remembered); Ready False,
    Degraded and Stalled True say why, for the generation refused."""
    said = [
        _Cond("Ready", "False", reason, message),
        _Cond("Degraded", "True", reason, message),
        _Cond("Stalled", "True", reason, message),
    ]
    made = {c.type: _condition(prev, c, generation, now) for c in said}
    kept = [made.pop(c.type, c) for c in prev.conditions]
    return prev.model_copy(
        update={
            "message": _short(message),
            "observed_generation": generation,
            "conditions": [*kept, *made.values()],
        }
    )
