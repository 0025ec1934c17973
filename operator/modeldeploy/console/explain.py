"""Why the last decision was taken, from what the operator recorded in status: the failing
checks with value, threshold and samples, failures against failureLimit, how long there has
been no verdict against noDataTimeout and what onNoData does then.

Pure: the object in, a JSON-ready dict out (`decision` is the headline, `details` the
further lines, the checks are split by verdict and each says why in one line).
"""

from collections.abc import Mapping
from typing import Any

from modeldeploy.analysis.config import CUSTOM_PREFIX
from modeldeploy.api import Analysis, parse_duration
from modeldeploy.console.views import (
    Body,
    analysis_of,
    history_view,
    parse_time,
    remaining_steps,
    stage,
    summary,
)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def unit(check: str) -> str:
    """Latency checks are in milliseconds; the others are ratios or statistics."""
    return " ms" if check.startswith("latency-") else ""


def bounds(check: str, threshold: float, analysis: Analysis) -> tuple[float | None, float | None]:
    """(minimum, maximum) a check's value is held to. Status records one threshold (the
    maximum when there is one); a custom check's own bounds come from the spec (neither
    is known when the spec no longer has it)."""
    if check.startswith(CUSTOM_PREFIX):
        custom = next((c for c in analysis.custom if c.name == check[len(CUSTOM_PREFIX) :]), None)
        return (custom.min, custom.max) if custom is not None else (None, None)
    return None, threshold


def check_reason(check: Mapping[str, Any], analysis: Analysis) -> str:
    """One line on one check, e.g. "latency-p99 720.5 ms > max 600 ms on 812 samples"."""
    name = str(check.get("name", "?"))
    value = check.get("value")
    threshold = float(check.get("threshold") or 0)
    samples = int(check.get("samples") or 0)
    verdict = check.get("verdict")
    low, high = bounds(name, threshold, analysis)
    u = unit(name)
    on = f"on {samples} samples"
    if verdict == "inconclusive" or value is None:
        floor = analysis.min_samples or 0
        if samples < floor:
            return f"{name}: no verdict, {samples} of {floor} samples (analysis.minSamples)"
        if value is None:
            return f"{name}: no data {on} (threshold {_fmt(threshold)}{u})"
        return (
            f"{name} {_fmt(value)}{u} against {_fmt(threshold)}{u} {on}: not conclusive yet, "
            "waiting for more data"
        )
    shown = f"{name} {_fmt(value)}{u}"
    if verdict == "fail":
        if low is not None and value < low:
            return f"{shown} < min {_fmt(low)}{u} {on}"
        if high is not None:
            return f"{shown} > max {_fmt(high)}{u} {on}"
        return f"{shown} outside its bounds {on}"
    limits = [f"min {_fmt(low)}{u}"] if low is not None else []
    limits += [f"max {_fmt(high)}{u}"] if high is not None else []
    return f"{shown} within {', '.join(limits) or 'its bounds'} {on}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _no_data(view: Body, analysis: Analysis) -> str:
    since = parse_time(view["noDataSince"])
    outcome = "rolls back" if analysis.on_no_data == "rollback" else "keeps holding"
    when = ""
    if since is not None:
        deadline = since + parse_duration(analysis.no_data_timeout)
        when = f" (no verdict since {view['noDataSince']}, i.e. at {deadline:%Y-%m-%dT%H:%M:%SZ})"
    return (
        f"after analysis.noDataTimeout {analysis.no_data_timeout} without a verdict it "
        f"{outcome} (onNoData={analysis.on_no_data}){when}"
    )


def _canary(view: Body, analysis: Analysis, last: Body | None) -> tuple[str, list[str]]:
    canary, name = view["canaryRevision"], view["name"]
    where = stage(view["step"], view["steps"], view.get("cohort"))
    ahead = remaining_steps(view["step"], view["steps"])
    details: list[str] = []
    if view["phase"] == "Promoting":
        return f"{canary} is being promoted: its pods scale up before traffic moves", details
    if view["paused"]:
        details.append(
            f"spec.rollout.paused holds the rollout (failed analyses still roll back): "
            f"`modeldeploy resume {name}`"
        )
    if last is None or last.get("revision") != canary:
        details.append(
            "steps advance after rollout.stepInterval with Ready pods (and, when analysis runs, "
            "a passing analysis)"
        )
        return f"{canary} at {where}: no analysis of it yet", details
    verdict = last.get("verdict")
    if verdict == "fail":
        failures, limit = view["consecutiveFailures"], view["failureLimit"]
        left = max(limit - failures, 0)
        if left == 0:
            details.append("the failure limit is reached: it rolls back on the next reconcile")
        elif left == 1:
            details.append("one more failed analysis rolls it back")
        else:
            details.append(f"{left} more failed analyses in a row roll it back")
        return (
            f"{canary} holds at {where}: its last analysis failed ({failures} of "
            f"{limit} consecutive failures allowed by analysis.failureLimit)",
            details,
        )
    if verdict == "inconclusive":
        details.append(_no_data(view, analysis))
        return f"{canary} holds at {where}: its last analysis gave no verdict", details
    if ahead:
        return (
            f"{canary} passed its analysis at {where}: it moves to {ahead[0]}% once "
            "rollout.stepInterval has passed",
            details,
        )
    if view["requireApproval"]:
        return (
            f"{canary} passed its last step and waits for approval: `modeldeploy approve {name}`",
            details,
        )
    return f"{canary} passed its last step: it is promoted once rollout.stepInterval has passed", (
        details
    )


def _rollback(view: Body, last: Body | None, history: list[Body]) -> tuple[str, list[str]]:
    failed, name = view["failedRevision"], view["name"]
    entry = next(
        (
            h
            for h in reversed(history)
            if h.get("revision") == failed and h.get("event") in ("RolledBack", "Aborted")
        ),
        None,
    )
    reason = (entry or {}).get("reason") or "no reason recorded"
    verb = "aborted" if entry is not None and entry.get("event") == "Aborted" else "rolled back"
    when = f" at {entry['time']}" if entry is not None and entry.get("time") else ""
    details: list[str] = []
    if last is not None and last.get("revision") == failed:
        if last.get("verdict") == "fail":
            details.append(
                f"its analyses failed {_plural(view['consecutiveFailures'], 'time')} in a row; "
                f"analysis.failureLimit is {view['failureLimit']}"
            )
        elif last.get("verdict") == "inconclusive":
            details.append("its last analysis gave no verdict (onNoData decides then)")
    details.append(
        f"{view['stableRevision']} serves; {failed} is not rolled out again by itself: "
        f"`modeldeploy retry {name}`, or change the spec"
    )
    return f"{failed} was {verb}{when}: {reason}", details


def explain(obj: Mapping[str, Any]) -> Body:
    view = summary(obj)
    analysis = analysis_of(obj)
    history = history_view(obj)
    last: Body | None = view["lastAnalysis"] or None
    rolled_back = bool(view["failedRevision"]) and view["phase"] == "RolledBack"
    if rolled_back and not view["canaryRevision"] and view["failedAnalysis"]:
        last = view["failedAnalysis"]  # the round that failed it, not the stable's since
    checks: list[Body] = list((last or {}).get("checks") or [])
    split: dict[str, list[Body]] = {"fail": [], "inconclusive": [], "pass": []}
    for check in checks:
        row = {**check, "reason": check_reason(check, analysis)}
        split.get(str(check.get("verdict")), split["inconclusive"]).append(row)
    phase, name = view["phase"], view["name"]
    stable = view["stableRevision"]
    details: list[str] = []
    if not phase:
        decision = f"no status yet: the operator has not reconciled {name} (is it running?)"
    elif view["killSwitch"]["engaged"] or phase == "Killed":
        decision = (
            f"the kill switch is engaged ({view['killSwitch']['mode']}): traffic was taken "
            f"away on purpose; `modeldeploy unkill {name}` releases it"
        )
    elif view["canaryRevision"]:
        decision, details = _canary(view, analysis, last)
    elif rolled_back:
        decision, details = _rollback(view, last, history)
    elif last is not None and last.get("revision") == stable and last.get("verdict") == "fail":
        decision = (
            f"stable {stable} fails its analysis: it keeps serving, Degraded (after "
            "rollout.bakeTime a stable revision is never rolled back)"
        )
    else:
        decision = f"nothing under way: {stable} serves ({phase})"
        if history:
            h = history[-1]
            details.append(
                f"last event: {h.get('event')} {h.get('revision')} at {h.get('time')}: "
                f"{h.get('reason') or ''}".rstrip(": ")
            )
    degraded = next((c for c in view["conditions"] if c.get("type") == "Degraded"), None)
    if degraded is not None and degraded.get("status") == "True" and phase != "RolledBack":
        details.append(f"Degraded ({degraded.get('reason')}): {degraded.get('message', '')}")
    return {
        "name": name,
        "namespace": view["namespace"],
        "phase": phase,
        "decision": decision,
        "details": details,
        "revision": (last or {}).get("revision"),
        "verdict": (last or {}).get("verdict"),
        "time": (last or {}).get("time"),
        "samples": (last or {}).get("samples"),
        "consecutiveFailures": view["consecutiveFailures"],
        "noDataSince": view["noDataSince"],
        "policy": {
            "falsePositiveRate": analysis.false_positive_rate,
            "minSamples": analysis.min_samples,
            "failureLimit": analysis.failure_limit,
            "onNoData": analysis.on_no_data,
            "noDataTimeout": analysis.no_data_timeout,
            "interval": analysis.interval,
            "window": analysis.window,
        },
        "failing": split["fail"],
        "inconclusive": split["inconclusive"],
        "passing": split["pass"],
    }
