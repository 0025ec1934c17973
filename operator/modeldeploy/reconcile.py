"""One reconcile, decided purely: the analysis round and the rollout together.

    measured = measure(subject, world, now)        # measure.Measure, the shell: it asks
                                                   # measurements_needed (pure) what the round
                                                   # due needs, then Prometheus (the only I/O)
    decided = plan(subject, world, measured, now)  # pure: verdicts, transitions, Events

`plan` concludes the round (`analysis.rounds.conclude`: checks, verdicts, the decision
across rounds from status, the Event when rounds start giving no verdict) and hands its
signal to the rollout state machine, which records it in status and acts on it (rollback,
step, promotion, Degraded). Every Event of the reconcile is in the one Plan, and `Plan.due`
is the earliest of the machine's timers and the next analysis round. A plan that waits for a
gate due to be asked says so (`Plan.asks`); the shell asks it and plans again with its
answers (`rollout.webhooks`).
"""

from dataclasses import replace
from datetime import datetime

from modeldeploy.analysis.rounds import (
    Measured,
    Needed,
    conclude,
    measurements_needed,
    next_round_at,
)
from modeldeploy.api import GateAnswer
from modeldeploy.rollout import Plan, Subject, World
from modeldeploy.rollout import plan as plan_rollout

__all__ = ["Measured", "Needed", "measurements_needed", "plan"]


def plan(
    subject: Subject,
    world: World,
    measured: Measured,
    now: datetime,
    apply_error: str | None = None,
    *,
    answers: tuple[GateAnswer, ...] = (),
) -> Plan:
    """The Plan of one reconcile from what was observed and measured, and what the gates of
    an earlier plan of it (`Plan.asks`) answered."""
    if now.tzinfo is None:
        raise ValueError("plan() needs a timezone-aware `now`")
    now = now.replace(microsecond=0)
    analysis, events = conclude(subject, measured, now)
    decided = plan_rollout(subject, world, analysis, now, apply_error, answers=answers)
    due = decided.due
    if measured.gated:  # else no round ever runs: no checks, or analysis off
        after = replace(subject, status=decided.status)
        due = min(filter(None, (due, next_round_at(after, world, now))), default=None)
    return replace(decided, events=(*events, *decided.events), round=analysis.signal, due=due)
