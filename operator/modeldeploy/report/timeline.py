"""The canary's analysis round by round, replayed (pure): the operator's own query plan and
statistics evaluated at each round's instant over what Prometheus still holds.

    replay = replay_plan(obj, plan)                   # None: no canary analysed
    answers = [collect(provider, q, t.timestamp()) for t, q in zip(replay.instants, replay.queries)]
    rounds = replayed_rounds(replay, answers)         # -> one Round per instant

Status keeps only the latest round (and the one that failed a rollback), so the verdicts in
between are computed again. They are the operator's: every check is a test on the counts
since the canary's first round (its counters' totals, the stable's increase over the same
period), a function of those counts alone, so the same answers give the same verdict. Rounds
are `analysis.interval` apart from that first round to the report's instant (the rollback,
for a rolled-back canary); past MAX_ROUNDS they are thinned evenly, keeping the first and the
last.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from modeldeploy.analysis.config import Observations, QueryPlan, Track, plan_queries
from modeldeploy.analysis.rounds import (
    MappedAnalysis,
    RoundRequest,
    RoundTarget,
    evidence_range,
    map_spec,
    outcome_of,
)
from modeldeploy.console.views import analysis_of
from modeldeploy.report.model import ReportPlan, Round, rows

MAX_ROUNDS = 40
"""Rounds replayed at most: each asks Prometheus one round's queries."""


@dataclass(frozen=True)
class ReplayPlan:
    revision: str
    instants: tuple[datetime, ...]
    queries: tuple[QueryPlan, ...]
    """One round's queries per instant."""
    mapped: MappedAnalysis
    target: RoundTarget
    since: datetime


def round_instants(
    since: datetime, until: datetime, interval: timedelta, limit: int = MAX_ROUNDS
) -> tuple[datetime, ...]:
    """`since`, then every `interval`, then `until` (when it is not a round's instant
    already); evenly thinned to `limit`, keeping the first and the last."""
    if until < since:
        return (since,)
    count = int((until - since) / interval) + 1
    instants = [since + k * interval for k in range(count)]
    if instants[-1] < until:
        instants.append(until)
    if len(instants) <= limit:
        return tuple(instants)
    last = len(instants) - 1
    picked = sorted({round(k * last / (limit - 1)) for k in range(limit)})
    return tuple(instants[k] for k in picked)


def replay_plan(obj: Mapping[str, Any], plan: ReportPlan) -> ReplayPlan | None:
    """The rounds to replay for the report's canary: None without a canary, or when no round
    of it was recorded (nothing says where its evidence starts)."""
    canary = plan.refs.get(Track.CANARY)
    if canary is None or plan.since is None:
        return None
    mapped = map_spec(analysis_of(obj))
    stable = plan.refs.get(Track.STABLE)
    target = RoundTarget(
        canary.revision,
        Track.CANARY,
        mapped.config,
        stable.revision if stable is not None else None,
        rejected=mapped.rejected,
    )
    instants = round_instants(plan.since, plan.at, mapped.interval)
    queries = tuple(
        plan_queries(
            mapped.config,
            canary=canary,
            stable=stable,
            window=evidence_range(plan.since, mapped, at),
            custom_window=mapped.window,
            canary_totals=True,
        )
        for at in instants
    )
    return ReplayPlan(canary.revision, instants, queries, mapped, target, plan.since)


def replayed_rounds(replay: ReplayPlan, answers: Sequence[Observations]) -> tuple[Round, ...]:
    """One Round per instant of `replay`, from the answers to its queries at that instant."""
    rounds = []
    for at, queries, observations in zip(replay.instants, replay.queries, answers, strict=True):
        request = RoundRequest(replay.target, replay.mapped, queries, replay.since)
        outcome = outcome_of(request, observations)
        checks = rows({**c.as_status(), "reason": c.reason} for c in outcome.checks)
        rounds.append(Round(at, outcome.verdict.value, outcome.samples, checks))
    return tuple(rounds)
