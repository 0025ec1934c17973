"""One analysis round per reconcile, decided purely: which revision, whether it is due, with
which checks, and how its outcome becomes the state machine's `AnalysisSignal`.

- The spec's `analysis` maps to an `AnalysisConfig` (`map_spec`). A custom check whose
  query template cannot be rendered is not dropped: it is reported as a check without data
  (like a query Prometheus refuses), so it never passes.
- The round's subject (`choose_target`): the canary while a rollout runs (its checks
  against the stable on the same window); otherwise the stable: inside bakeTime every check
  that needs no reference traffic (a failure there rolls back to the still-warm previous
  revision), after it only drift against its own training profile, its labelled accuracy
  against the profile's holdout accuracy (with `analysis.accuracy`) and its golden answers
  (Degraded, never a rollback). Nothing while the kill switch is engaged, and nothing on a
  revision without a Ready pod (nothing to measure: warm-up is the machine's business).
- A canary in its cohort phase (`rollout.canary.cohort`) serves the cohort alone while the
  stable serves everyone else: two populations, so only the checks that need no reference
  traffic judge it (`cohort_config`: latency, errors, feature drift against its training
  profile, golden answers, custom checks); those against the stable (prediction drift,
  invalid-input increase, accuracy) are deferred, and the round's reason says so. The
  weighted steps after it are a new sequential test (the machine clears the cohort's
  analysis), on evidence from their start for both sides: the canary's counters' increase
  over the stable's range, not their totals, which hold the cohort's requests.
- A round is due when the last one of that revision is `analysis.interval` old
  (`round_due`, from `status.lastAnalysis.time`).
- The memory across rounds (consecutive failures, since when without a verdict) lives in
  status (`consecutiveFailures`, `noDataSince`) and counts only for the revision the last
  analysis was about (`memory_of`).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from modeldeploy.analysis.config import (
    CUSTOM_PREFIX,
    NO_LIMITS,
    AccuracyLimits,
    AnalysisConfig,
    CustomCheck,
    EffectLimits,
    Observations,
    QueryPlan,
    Track,
    plan_queries,
)
from modeldeploy.analysis.queries import RevisionRef, Window
from modeldeploy.analysis.verdicts import (
    Action,
    AnalysisMemory,
    AnalysisOutcome,
    CheckResult,
    Decision,
    OnNoData,
    Verdict,
    aggregate,
    decide,
    no_data_check,
)
from modeldeploy.api import (
    Analysis,
    ModelDeploymentStatus,
    Tolerances,
    parse_duration,
)
from modeldeploy.api import CheckResult as StatusCheck
from modeldeploy.resources.names import deployment_name

# Submodules, not the package: the rollout machine imports this module.
from modeldeploy.rollout.plan import Event, Subject
from modeldeploy.rollout.signal import NO_ANALYSIS, AnalysisInput, AnalysisSignal
from modeldeploy.rollout.world import World

MAX_CHECK_NAME = 253


@dataclass(frozen=True)
class RejectedCheck:
    """A custom check whose query template cannot be used, with why."""

    name: str
    threshold: float
    why: str

    def as_check(self) -> CheckResult:
        return no_data_check(CUSTOM_PREFIX + self.name, self.threshold, self.why)


@dataclass(frozen=True)
class MappedAnalysis:
    config: AnalysisConfig
    rejected: tuple[RejectedCheck, ...] = ()
    failure_limit: int = 2
    on_no_data: OnNoData = OnNoData.HOLD
    no_data_timeout: timedelta = timedelta(minutes=15)
    interval: timedelta = timedelta(seconds=30)
    window: str = "5m"


def _below_one(value: float) -> float | None:
    """Rates bounded by 1: a bound of 1 can never be exceeded, i.e. the check is off."""
    return value if value < 1 else None


def effect_limits(tolerances: Tolerances) -> EffectLimits:
    return EffectLimits.of(
        psi=tolerances.psi, ks=tolerances.ks, kl=tolerances.kl, js=tolerances.js,
        wasserstein=tolerances.wasserstein,
    )  # fmt: skip


def map_spec(analysis: Analysis) -> MappedAnalysis:
    """spec.analysis -> the verdict layer's settings (pure)."""
    drift = analysis.drift
    custom: list[CustomCheck] = []
    rejected: list[RejectedCheck] = []
    for check in analysis.custom:
        try:
            custom.append(CustomCheck(check.name, check.query, check.min, check.max))
        except ValueError as err:
            bound = check.max if check.max is not None else check.min
            rejected.append(RejectedCheck(check.name, bound or 0.0, f"bad query template: {err}"))
    latency, golden = analysis.latency, analysis.golden
    features, predictions = drift.features, drift.predictions
    config = AnalysisConfig(
        false_positive_rate=analysis.false_positive_rate,
        min_samples=analysis.min_samples or 0,
        latency_p95_ms=float(latency.p95_ms) if latency.p95_ms is not None else None,
        latency_p99_ms=float(latency.p99_ms) if latency.p99_ms is not None else None,
        max_error_rate=_below_one(analysis.error_rate.max),
        max_invalid_increase=_below_one(analysis.invalid_input_rate.max_increase),
        max_fallback_increase=_below_one(analysis.fallback_rate.max_increase),
        features=effect_limits(features) if drift.enabled else NO_LIMITS,
        ignored_features=frozenset(features.ignore) if drift.enabled else frozenset(),
        max_missing_increase=(
            _below_one(drift.missing_rate.max_increase) if drift.enabled else None
        ),
        predictions=effect_limits(predictions) if drift.enabled else NO_LIMITS,
        golden_max_mismatches=golden.max_mismatches if golden.enabled else None,
        custom=tuple(custom),
        accuracy=(
            AccuracyLimits(analysis.accuracy.max_drop, analysis.accuracy.min_labels)
            if analysis.accuracy.enabled
            else None
        ),
    )  # fmt: skip
    return MappedAnalysis(
        config=config,
        rejected=tuple(rejected),
        failure_limit=analysis.failure_limit,
        on_no_data=OnNoData(analysis.on_no_data),
        no_data_timeout=parse_duration(analysis.no_data_timeout),
        interval=parse_duration(analysis.interval),
        window=analysis.window,
    )


def bake_config(config: AnalysisConfig) -> AnalysisConfig:
    """The new stable inside bakeTime: every check but those comparing with another
    revision's traffic (the previous revision serves none any more)."""
    return replace(
        config,
        max_invalid_increase=None,
        max_fallback_increase=None,
        predictions=NO_LIMITS,
        accuracy=None,
    )


def cohort_config(config: AnalysisConfig) -> AnalysisConfig:
    """The canary in its cohort phase: every check but those comparing it with the stable
    (which serves another population meanwhile)."""
    return bake_config(config)


COHORT_DEFERRED = (
    "checks against the stable (prediction drift, invalid-input increase, accuracy) wait "
    "for the weighted steps: the cohort is another population than the stable's"
)


def has_checks(config: AnalysisConfig, rejected: Sequence[RejectedCheck] = ()) -> bool:
    thresholds = (
        config.latency_p95_ms,
        config.latency_p99_ms,
        config.max_error_rate,
        config.max_invalid_increase,
        config.max_fallback_increase,
        config.golden_max_mismatches,
    )
    return (
        config.checks_features
        or config.checks_predictions
        or any(t is not None for t in thresholds)
        or bool(config.custom)
        or config.accuracy is not None
        or config.holdout_accuracy is not None
        or bool(rejected)
    )


@dataclass(frozen=True)
class RoundTarget:
    """What one round analyses, and with which checks."""

    revision: str
    track: Track
    config: AnalysisConfig
    reference: str | None = None
    """The stable revision, for the canary's checks against it."""
    in_bake: bool = False
    rejected: tuple[RejectedCheck, ...] = ()
    cohort: bool = False
    """The canary in its cohort phase (`cohort_config`)."""
    after_cohort: bool = False
    """The canary in the weighted steps after a cohort phase: judged on evidence since they
    started, its own counters too (not their totals)."""

    @property
    def sequential(self) -> bool:
        """Judged on everything since its first round (the canary, and the new stable inside
        bakeTime: one test from the first canary round to the end of the bake), rather than
        the drift monitor's sliding window."""
        return self.track is Track.CANARY or self.in_bake

    @property
    def deferred(self) -> str:
        """Checks this round leaves for later, in words ("" for none)."""
        return COHORT_DEFERRED if self.cohort else ""

    @property
    def may_roll_back(self) -> bool:
        """A canary always may; the stable only inside bakeTime (the machine enforces it
        too), and only on a failed check, not for lack of data: the previous revision is no
        better vouched for when Prometheus is down."""
        return self.track is Track.CANARY or self.in_bake


def _ready(world: World, subject: Subject, revision: str) -> int:
    observed = world.deployment(deployment_name(subject.name, revision))
    return observed.ready if observed is not None else 0


def choose_target(
    subject: Subject, world: World, mapped: MappedAnalysis, now: datetime
) -> RoundTarget | None:
    """The revision this reconcile's round would analyse, if any (see the module doc)."""
    status = subject.status
    if subject.spec.kill_switch.engaged or status.phase == "Killed":
        return None  # traffic is away from the model: nothing to judge
    canary, stable = status.canary_revision, status.stable_revision
    rejected = mapped.rejected
    if canary is not None:
        if _ready(world, subject, canary) < 1:
            return None
        if status.cohort is not None:
            config = cohort_config(mapped.config)
            return RoundTarget(canary, Track.CANARY, config, stable, rejected=rejected, cohort=True)
        after = subject.spec.rollout.canary.cohort is not None and status.step is not None
        return RoundTarget(
            canary, Track.CANARY, mapped.config, stable, rejected=rejected, after_cohort=after
        )
    if stable is None or _ready(world, subject, stable) < 1:
        return None
    baking = (
        status.previous_stable_revision is not None
        and status.bake_until is not None
        and now < status.bake_until
    )
    if baking:
        config = bake_config(mapped.config)
    else:
        config, rejected = mapped.config.drift_only(), ()
    if not has_checks(config, rejected):
        return None
    return RoundTarget(stable, Track.STABLE, config, in_bake=baking, rejected=rejected)


def round_due(
    status: ModelDeploymentStatus, revision: str, interval: timedelta, now: datetime
) -> bool:
    """Whether `revision` is due for a round: it never had one, or its last is `interval`
    old (status keeps whole seconds, so a round may come up to a second early). For the
    stable, another revision's failing round (the one that rolled a canary back) stays in
    status for an interval too: it says why, and the stable's next round would replace it at
    once. A new canary is analysed at once."""
    last = status.last_analysis
    if last is None:
        return True
    if last.revision != revision:
        rolled_back = last.verdict == "fail" and revision == status.stable_revision
        if not rolled_back:
            return True
    return now >= last.time + interval


MAX_EVIDENCE = timedelta(hours=6)
"""The longest period a round asks Prometheus about the stable (the cost of a range query
grows with it). A canary held longer (an approval that waits for days) is compared with the
stable's last 6 hours."""


def evidence_since(
    status: ModelDeploymentStatus, target: RoundTarget, now: datetime
) -> datetime | None:
    """Where this round's evidence starts: the revision's first round (kept in status), now
    for a revision's first round; None for the windowed drift monitor."""
    if not target.sequential:
        return None
    last = status.last_analysis
    if last is not None and last.revision == target.revision and last.since is not None:
        return last.since
    return now


def evidence_range(since: datetime | None, mapped: MappedAnalysis, now: datetime) -> Window:
    """The PromQL range of the reference's queries (the stable's, over the period the
    revision under test has been judged on: from one interval before `since`, as traffic
    before its first round counts too, to now, at most MAX_EVIDENCE), and of every query of
    the windowed monitor (no `since`: the analysis window). The revision under test itself
    is read as its counters' totals."""
    if since is None:
        return mapped.window
    span = min(now - since + mapped.interval, MAX_EVIDENCE)
    return timedelta(seconds=max(1, math.ceil(span.total_seconds())))


def memory_of(status: ModelDeploymentStatus, revision: str) -> AnalysisMemory:
    """The verdict layer's memory, from status, when it is about `revision`."""
    last = status.last_analysis
    if last is None or last.revision != revision:
        return AnalysisMemory()
    return AnalysisMemory(status.consecutive_failures, status.no_data_since)


def revision_ref(
    subject: Subject, world: World, revision: str, namespace_label: str
) -> RevisionRef:
    """Which series belong to `revision` of this ModelDeployment. The namespace matcher
    keeps apart two namespaces that run the same revision (same image, model, template);
    `namespace_label` is the label the scrape config attaches ("" when it attaches none)."""
    version = ""
    if revision == subject.source().revision:
        version = subject.spec.model.version
    else:
        observed = world.deployment(deployment_name(subject.name, revision))
        if observed is not None and observed.source is not None:
            version = observed.source.model.version
    matchers = {namespace_label: subject.namespace} if namespace_label else {}
    return RevisionRef(
        model=subject.spec.model.name,
        revision=revision,
        version=version,
        namespace=subject.namespace,
        name=subject.name,
        matchers=matchers,
    )


# --- the round's outcome as status, signal and events -------------------------------------


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def status_check(check: CheckResult) -> StatusCheck:
    """A verdict-layer check as `status.lastAnalysis.checks[]` (the name carries the subject,
    e.g. ``feature-psi/monthly_charges``)."""
    threshold = check.threshold if math.isfinite(check.threshold) else 0.0
    return StatusCheck(
        name=check.display_name[:MAX_CHECK_NAME],
        value=_finite(check.value),
        threshold=threshold,
        samples=max(0, check.samples),
        verdict=check.verdict.value,
    )


def signal_reason(outcome: AnalysisOutcome, decision: Decision) -> str:
    """One line for status history and Events: a failure or a wait says what the verdict
    layer decided (with the failing checks, values, thresholds and samples); a pass lists
    every check with its value, threshold and samples."""
    if outcome.verdict is Verdict.PASS:
        details = "; ".join(c.reason for c in outcome.checks)
        return f"all {len(outcome.checks)} checks passed: {details}"
    if outcome.verdict is Verdict.INCONCLUSIVE and outcome.reason in decision.reason:
        unsure = [c for c in outcome.checks if c.verdict is Verdict.INCONCLUSIVE]
        return decision.reason.replace(outcome.reason, grouped_reasons(unsure))
    return decision.reason


def grouped_reasons(checks: Sequence[CheckResult]) -> str:
    """Checks that wait for the same reason in one clause: "latency-p95, error-rate: no
    data (unreachable: ...)" rather than the same cause once per check."""
    by_cause: dict[str, list[str]] = {}
    for check in checks:
        name, separator, cause = check.reason.partition(": ")
        if not separator or not name.startswith(check.name):
            name, cause = check.display_name, check.reason
        by_cause.setdefault(cause, []).append(name)
    return "; ".join(f"{', '.join(names)}: {cause}" for cause, names in by_cause.items())


def signal_of(
    target: RoundTarget,
    outcome: AnalysisOutcome,
    decision: Decision,
    now: datetime,
    *,
    since: datetime | None = None,
    waiting: "Waiting | None" = None,
) -> AnalysisSignal:
    rollback = decision.action is Action.ROLLBACK and (
        target.track is Track.CANARY or (target.in_bake and outcome.verdict is Verdict.FAIL)
    )
    return AnalysisSignal(
        revision=target.revision,
        verdict=outcome.verdict.value,
        time=now,
        rollback=rollback,
        reason="; ".join(r for r in (signal_reason(outcome, decision), target.deferred) if r),
        checks=tuple(status_check(c) for c in outcome.checks),
        samples=outcome.samples,
        consecutive_failures=decision.memory.consecutive_failures,
        no_data_since=decision.memory.inconclusive_since,
        since=since,
        waiting=waiting.value if waiting is not None else None,
    )


class Waiting(StrEnum):
    """Why a round gave no verdict, as far as people need to tell it apart."""

    SAMPLES = "samples"  # too few samples, or not significant yet
    NO_DATA = "no-data"  # Prometheus unreachable, refused query, missing series
    TIMED_OUT = "timed-out"  # noDataTimeout passed: onNoData applies


def waiting_kind(
    outcome: AnalysisOutcome, memory: AnalysisMemory, timeout: timedelta, now: datetime
) -> Waiting | None:
    if outcome.verdict is not Verdict.INCONCLUSIVE:
        return None
    since = memory.inconclusive_since
    if since is not None and now - since >= timeout:
        return Waiting.TIMED_OUT
    return Waiting.NO_DATA if outcome.no_data else Waiting.SAMPLES


def waiting_event(revision: str, kind: Waiting, decision: Decision, refused: str = "") -> Event:
    """The Event when a revision's rounds start giving no verdict (the machine itself
    reports failures and passes); a Prometheus the spec may not use says so by name."""
    message = f"{revision}: {decision.reason}"
    if refused and kind is Waiting.NO_DATA:
        return Event("Warning", "PrometheusRefused", f"{revision}: {refused}")
    match kind:
        case Waiting.SAMPLES:
            return Event("Normal", "AnalysisInconclusive", message)
        case Waiting.NO_DATA:
            return Event("Warning", "AnalysisNoData", message)
        case Waiting.TIMED_OUT:
            return Event("Warning", "AnalysisNoDataTimeout", message)


# --- one reconcile's analysis, as data in and out ------------------------------------------


@dataclass(frozen=True)
class RoundRequest:
    """A round this reconcile must run: what it judges and what to ask Prometheus."""

    target: RoundTarget
    mapped: MappedAnalysis
    plan: QueryPlan
    since: datetime | None


@dataclass(frozen=True)
class Needed:
    """What the analysis needs from this reconcile (`measurements_needed`)."""

    gated: bool = False
    """Analysis runs for this resource (it has checks)."""
    request: RoundRequest | None = None
    """A round is due, with its queries."""


@dataclass(frozen=True)
class Measured:
    """The analysis of one reconcile as the shell measured it; `plan` concludes from it."""

    gated: bool = False
    request: RoundRequest | None = None
    observations: Observations | None = None
    """The answers to `request.plan` (every one failed for a reason, when Prometheus could
    not be asked)."""
    disabled: str = ""
    """Why analysis is off although the spec has checks (no Prometheus configured)."""
    refused: str = ""
    """The spec named a Prometheus or Secret it may not use: why."""
    seconds: float = 0.0
    """How long the measurement took."""


def measurements_needed(
    subject: Subject, world: World, now: datetime, *, namespace_label: str
) -> Needed:
    """Whether analysis gates this resource, and the round due now, if any (pure)."""
    mapped = map_spec(subject.spec.analysis)
    if not has_checks(mapped.config, mapped.rejected):
        return Needed()
    target = choose_target(subject, world, mapped, now)
    if target is not None and target.cohort and not has_checks(target.config, target.rejected):
        return Needed()  # nothing judges a cohort: its phase lasts stepInterval alone
    if target is None or not round_due(subject.status, target.revision, mapped.interval, now):
        return Needed(gated=True)
    since = evidence_since(subject.status, target, now)
    stable = target.reference
    plan = plan_queries(
        target.config,
        canary=revision_ref(subject, world, target.revision, namespace_label),
        stable=(
            revision_ref(subject, world, stable, namespace_label) if stable is not None else None
        ),
        window=evidence_range(since, mapped, now),
        custom_window=mapped.window,
        # Judged on its whole life: its counters' totals (a new revision's series start
        # with it); the stable's increase over the same period.
        canary_totals=target.sequential and not target.after_cohort,
    )
    return Needed(gated=True, request=RoundRequest(target, mapped, plan, since))


def next_round_at(subject: Subject, world: World, now: datetime) -> datetime | None:
    """When the next round falls due on time alone (pure; `now` itself when one is due
    already, e.g. after a measurement that failed): `status.lastAnalysis.time` + interval
    for the revision `choose_target` picks. None without checks or without a revision to
    measure (no Ready pod, kill switch: a change moves that). The noDataTimeout and
    failureLimit are decided at rounds, so this is their clock too."""
    mapped = map_spec(subject.spec.analysis)
    if not has_checks(mapped.config, mapped.rejected):
        return None
    target = choose_target(subject, world, mapped, now)
    if target is None or (target.cohort and not has_checks(target.config, target.rejected)):
        return None
    last = subject.status.last_analysis
    if last is None or round_due(subject.status, target.revision, mapped.interval, now):
        return now
    return last.time + mapped.interval


HOLD = AnalysisInput(gated=True)
"""Analysis gates the rollout, but no round ran (not due, nothing Ready to measure)."""


def outcome_of(request: RoundRequest, observations: Observations) -> AnalysisOutcome:
    """Every check of the round, aggregated (numpy and scipy load with the first round)."""
    from modeldeploy.analysis.checks import evaluate

    checks = evaluate(request.target.config, observations)
    return aggregate([*checks, *(r.as_check() for r in request.target.rejected)])


def previous_waiting(status: ModelDeploymentStatus, revision: str) -> Waiting | None:
    last = status.last_analysis
    if last is None or last.revision != revision or last.waiting is None:
        return None
    return Waiting(last.waiting)


def conclude(
    subject: Subject, measured: Measured, now: datetime
) -> tuple[AnalysisInput, tuple[Event, ...]]:
    """The round's verdict and the state machine's signal from what was measured, with the
    Event when a revision's rounds start or stop giving no verdict (pure: what must be
    remembered between rounds is in status)."""
    if measured.disabled:
        return AnalysisInput(disabled=measured.disabled), ()
    request, observations = measured.request, measured.observations
    if not measured.gated:
        return NO_ANALYSIS, ()
    if request is None or observations is None:
        return HOLD, ()
    target, mapped = request.target, request.mapped
    outcome = outcome_of(request, observations)
    decision = decide(
        outcome,
        memory_of(subject.status, target.revision),
        now=now,
        failure_limit=mapped.failure_limit,
        on_no_data=mapped.on_no_data,
        no_data_timeout=mapped.no_data_timeout,
    )
    kind = waiting_kind(outcome, decision.memory, mapped.no_data_timeout, now)
    signal = signal_of(target, outcome, decision, now, since=request.since, waiting=kind)
    events: tuple[Event, ...] = ()
    if kind is not None and kind != previous_waiting(subject.status, target.revision):
        events = (waiting_event(target.revision, kind, decision, measured.refused),)
    return AnalysisInput(gated=True, signal=signal), events
