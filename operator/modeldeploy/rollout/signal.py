"""The analysis signal: what the verdict layer tells the state machine each reconcile.

The glue (issue 5) runs an analysis round when one is due, turns the verdict layer's
`Decision` into an `AnalysisSignal` and passes it in an `AnalysisInput`; the state machine
records it in status (lastAnalysis, consecutiveFailures, noDataSince) and acts on it.
"""

from dataclasses import dataclass
from datetime import datetime

from modeldeploy.api import CheckResult, Verdict


@dataclass(frozen=True)
class AnalysisSignal:
    """One analysis round of one revision (the canary, or the stable after promotion)."""

    revision: str
    verdict: Verdict
    """pass | fail | inconclusive of this round."""
    time: datetime
    rollback: bool = False
    """The verdict layer decided to roll back (a failed sequential test, failureLimit
    failed rounds of a custom check, or onNoData=rollback).
    For the canary: roll back. For the stable inside bakeTime: roll back to the previous
    revision. For the stable after bakeTime: Degraded only."""
    reason: str = ""
    """One line naming the check(s), value, threshold and samples."""
    checks: tuple[CheckResult, ...] = ()
    samples: int = 0
    consecutive_failures: int = 0
    no_data_since: datetime | None = None
    since: datetime | None = None
    """Start of the evidence this round weighed (see AnalysisResult.since)."""
    waiting: str | None = None
    """Why the round gave no verdict (samples, no-data, timed-out), if it gave none."""


@dataclass(frozen=True)
class AnalysisInput:
    gated: bool = False
    """True when analysis runs for this resource: a step then advances only after a passing
    round of the canary that ran after the step began. False: steps advance on time only."""
    signal: AnalysisSignal | None = None
    """The round that ran during this reconcile, if one was due."""
    disabled: str = ""
    """Why analysis is off although the spec has checks (said when a rollout starts)."""


NO_ANALYSIS = AnalysisInput()
