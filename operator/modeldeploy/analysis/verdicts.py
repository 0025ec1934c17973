"""Three-valued verdicts, their aggregation, and the rollback decision across rounds.

Rules (ARCHITECTURE.md, "Analysis"; the API's analysis fields):

- A check passes or fails only with at least ``min_samples`` observations (an optional
  floor; the sequential tests of `checks` need none); before that it is inconclusive.
- No data (Prometheus unreachable, a refused query, no series) is never a pass: the check
  is inconclusive and flagged ``no_data``.
- One round's outcome: fail if any check fails, else inconclusive if any check is (those
  that dropped out for lack of values of their own aside), else pass. A round without
  checks is inconclusive (nothing vouched for the canary); the operator should not run
  analysis rounds when no check is configured.
- Across rounds (`decide`): a pass clears the memory and lets the rollout proceed; a
  failed sequential test rolls back at once (its evidence holds across rounds by
  construction); another failure (a custom check's bound) counts towards ``failureLimit``
  consecutive failures, then rolls back; an
  inconclusive round holds the canary where it is and neither adds to nor clears the
  failure count (a gap in the data does not excuse a failing canary). Not yet conclusive
  with data flowing is just that: the evidence grows, no clock runs. Once rounds have had no
  data (Prometheus unreachable, a refused query, missing series, no canary request) for
  ``noDataTimeout``, the rollout follows ``onNoData``: ``rollback``, or ``hold`` (keep
  holding, and say so).
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict, with everything a person needs to understand it."""

    name: str
    verdict: Verdict
    value: float | None
    threshold: float
    samples: int
    reason: str  # one line naming check, value, threshold and samples, for Events
    no_data: bool = False
    subject: str = ""  # what the value belongs to, e.g. the worst feature
    sequential: bool = False
    """An anytime-valid test: its failure is final (no failureLimit)."""
    blocking: bool = True
    """False: inconclusive for lack of values of its own, it does not hold up a pass."""

    @property
    def display_name(self) -> str:
        """``feature-psi/age``: the check and, if any, the subject its value belongs to."""
        return f"{self.name}/{self.subject}" if self.subject else self.name

    def as_status(self) -> dict[str, Any]:
        """The fields of ``status.lastAnalysis.checks[]`` (JSON-safe: no NaN)."""
        return {
            "name": self.display_name,
            "value": _finite_or_none(self.value),
            "threshold": self.threshold,
            "samples": self.samples,
            "verdict": self.verdict.value,
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def threshold_check(
    name: str,
    value: float | None,
    samples: int,
    min_samples: int,
    *,
    maximum: float | None = None,
    minimum: float | None = None,
    unit: str = "",
    subject: str = "",
    detail: str = "",
) -> CheckResult:
    """Compare one value with its bounds (the threshold reported is the maximum if there
    is one), guarded by the sample count."""
    threshold = maximum if maximum is not None else minimum
    if threshold is None:
        raise ValueError(f"{name}: a check needs a minimum or a maximum")
    what = f"{name} of {subject}" if subject else name
    suffix = f" ({detail})" if detail else ""
    thin = too_few(name, value, threshold, samples=samples, floor=min_samples, subject=subject)
    if thin is not None:
        return replace(thin, reason=thin.reason + suffix)
    if value is None or math.isnan(value):
        return CheckResult(
            name,
            Verdict.INCONCLUSIVE,
            None,
            threshold,
            samples,
            f"{what}: no value{suffix}",
            subject=subject,
        )
    shown = f"{_fmt(value)}{unit}"
    if maximum is not None and value > maximum:
        verdict, comparison = Verdict.FAIL, f"{shown} > max {_fmt(maximum)}{unit}"
    elif minimum is not None and value < minimum:
        verdict, comparison = Verdict.FAIL, f"{shown} < min {_fmt(minimum)}{unit}"
    else:
        verdict, comparison = Verdict.PASS, f"{shown} within {_bounds(minimum, maximum, unit)}"
    return CheckResult(
        name,
        verdict,
        value,
        threshold,
        samples,
        f"{what}: {comparison}, n={samples}{suffix}",
        subject=subject,
    )


def too_few(
    name: str, value: float | None, threshold: float, *, samples: int, floor: int, subject: str = ""
) -> CheckResult | None:
    """Inconclusive below the sample floor (at least one sample is always needed)."""
    if samples >= max(floor, 1):
        return None
    what = f"{name} of {subject}" if subject else name
    needed = f"{floor} samples needed" if floor else "no samples yet"
    return CheckResult(
        name, Verdict.INCONCLUSIVE, value, threshold, samples, f"{what}: n={samples}, {needed}",
        subject=subject,
    )  # fmt: skip


def no_data_check(name: str, threshold: float, why: str) -> CheckResult:
    return CheckResult(
        name, Verdict.INCONCLUSIVE, None, threshold, 0, f"{name}: no data ({why})", True
    )


def _bounds(minimum: float | None, maximum: float | None, unit: str) -> str:
    parts = [f"min {_fmt(minimum)}{unit}"] if minimum is not None else []
    parts += [f"max {_fmt(maximum)}{unit}"] if maximum is not None else []
    return ", ".join(parts) or "no bound"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def combine(name: str, results: Iterable[CheckResult]) -> CheckResult:
    """One check from the same check over several subjects (features, outputs).

    The verdict is the worst of them, subjects that drop out aside; value, threshold and
    samples are those of the subject named: the highest-valued failing one, else the first
    blocking inconclusive one (no-data first), else the highest-valued passing one (bounds
    here are maxima, so highest is worst). Other failing subjects, and those that dropped
    out, are listed in the reason.
    """
    items = list(results)
    if not items:
        raise ValueError(f"{name}: nothing to combine")

    def magnitude(result: CheckResult) -> float:
        value = result.value
        return value if value is not None and not math.isnan(value) else -math.inf

    failing = sorted((r for r in items if r.verdict is Verdict.FAIL), key=magnitude, reverse=True)
    unsure = [r for r in items if r.verdict is Verdict.INCONCLUSIVE and r.blocking]
    dropped = [r for r in items if r.verdict is Verdict.INCONCLUSIVE and not r.blocking]
    passed = [r for r in items if r.verdict is Verdict.PASS]
    if failing:
        headline = failing[0]
        others = [f"{r.subject} {_fmt(magnitude(r))}" for r in failing[1:4]]
        more = f"; also failing: {', '.join(others)}" if others else ""
        more += f" and {len(failing) - 4} more" if len(failing) > 4 else ""
        return _renamed(headline, name, headline.reason + more)
    if unsure:
        headline = next((r for r in unsure if r.no_data), unsure[0])
        more = f" ({len(unsure)} of {len(items)} inconclusive)" if len(items) > 1 else ""
        return _renamed(headline, name, headline.reason + more)
    headline = max(passed, key=magnitude) if passed else dropped[0]
    more = ""
    if dropped and passed:
        names = ", ".join(r.subject for r in dropped[:4]) + (" ..." if len(dropped) > 4 else "")
        more = f"; too few values to judge, left out: {names}"
    return _renamed(headline, name, headline.reason + more)


def _renamed(result: CheckResult, name: str, reason: str) -> CheckResult:
    return replace(result, name=name, reason=reason)


@dataclass(frozen=True)
class AnalysisOutcome:
    verdict: Verdict
    checks: tuple[CheckResult, ...]
    samples: int  # the largest sample count any check saw
    no_data: bool  # inconclusive, at least partly for lack of data
    reason: str
    final: bool = False
    """Failed on a sequential test: roll back now, not after failureLimit rounds."""


def aggregate(checks: Iterable[CheckResult]) -> AnalysisOutcome:
    results = tuple(checks)
    samples = max((c.samples for c in results), default=0)
    failed = [c for c in results if c.verdict is Verdict.FAIL]
    unsure = [c for c in results if c.verdict is Verdict.INCONCLUSIVE and c.blocking]
    if failed:
        final = any(c.sequential for c in failed)
        reason = "; ".join(c.reason for c in failed)
        return AnalysisOutcome(Verdict.FAIL, results, samples, False, reason, final)
    if not results:
        return AnalysisOutcome(Verdict.INCONCLUSIVE, results, 0, False, "no checks configured")
    if unsure or not any(c.verdict is Verdict.PASS for c in results):
        waiting = unsure or list(results)
        no_data = any(c.no_data for c in waiting)
        return AnalysisOutcome(
            Verdict.INCONCLUSIVE, results, samples, no_data, "; ".join(c.reason for c in waiting)
        )
    return AnalysisOutcome(
        Verdict.PASS, results, samples, False, f"all {len(results)} checks passed"
    )


class OnNoData(StrEnum):
    HOLD = "hold"
    ROLLBACK = "rollback"


class Action(StrEnum):
    PROCEED = "proceed"  # this round passed; the rollout may take its next step when due
    HOLD = "hold"  # stay at the current weight
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class AnalysisMemory:
    """What `decide` remembers between rounds (the operator keeps it in status)."""

    consecutive_failures: int = 0
    inconclusive_since: datetime | None = None  # first round of the current run without verdict


@dataclass(frozen=True)
class Decision:
    action: Action
    memory: AnalysisMemory
    reason: str


def decide(
    outcome: AnalysisOutcome,
    memory: AnalysisMemory,
    *,
    now: datetime,
    failure_limit: int,
    on_no_data: OnNoData,
    no_data_timeout: timedelta,
) -> Decision:
    if failure_limit < 1:
        raise ValueError("failure_limit must be at least 1")
    if outcome.verdict is Verdict.PASS:
        return Decision(Action.PROCEED, AnalysisMemory(), outcome.reason)
    if outcome.verdict is Verdict.FAIL:
        failures = memory.consecutive_failures + 1
        after = AnalysisMemory(failures, None)
        if outcome.final:
            return Decision(Action.ROLLBACK, after, outcome.reason)
        tally = f"failure {failures} of {failure_limit}: {outcome.reason}"
        return Decision(Action.ROLLBACK if failures >= failure_limit else Action.HOLD, after, tally)
    if not outcome.no_data and outcome.samples > 0:
        # Data flows and the evidence grows with every round: not yet conclusive is not a
        # wait for data, and no clock runs (a pass needs evidence, and evidence takes time).
        after = AnalysisMemory(memory.consecutive_failures, None)
        return Decision(Action.HOLD, after, f"not yet conclusive: {outcome.reason}")
    since = memory.inconclusive_since or now
    after = AnalysisMemory(memory.consecutive_failures, since)
    waited = now - since
    kind = "no data" if outcome.no_data else "no samples"
    tally = f"{kind} for {_span(waited)} (noDataTimeout {_span(no_data_timeout)}): {outcome.reason}"
    if waited < no_data_timeout:
        return Decision(Action.HOLD, after, tally)
    if on_no_data is OnNoData.ROLLBACK:
        return Decision(Action.ROLLBACK, after, f"{tally}; onNoData=rollback")
    return Decision(Action.HOLD, after, f"{tally}; onNoData=hold, holding")


def _span(delta: timedelta) -> str:
    seconds = max(0, round(delta.total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
