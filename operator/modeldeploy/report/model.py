"""What the report shows, as plain data: pure functions of the ModelDeployment (as read from
the apiserver) and Prometheus' answers.

    plan = report_plan(obj, now)                       # which series, at which instant
    answers = collect(provider, QueryPlan(plan.queries), plan.at.timestamp())
    report = build(obj, plan, answers.results, now)    # -> Report

The series are those the analysis reads, through its own query builders, and over the same
evidence: the canary's counters' totals and the stable's increase since the canary's first
round. A rolled-back canary has no pods any more, so its series are read at the instant of
its rollback, when they still existed.
"""

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modeldeploy import contract
from modeldeploy.analysis.config import QueryKey, Track
from modeldeploy.analysis.data import LabelValues, QueryResult, QueryStatus
from modeldeploy.analysis.queries import Query, RevisionRef, Series, Window, series_query
from modeldeploy.analysis.rounds import evidence_range, map_spec
from modeldeploy.analysis.statistics import bucket_counts, cumulative_buckets, histogram_quantile
from modeldeploy.console.explain import explain
from modeldeploy.console.views import Body, analysis_of, history_view, parse_time

REPORT_SERIES = (
    Series.INFO,
    Series.FEATURES,
    Series.BASELINE,
    Series.PREDICTIONS,
    Series.CONFIDENCE,
    Series.LATENCY,
)
LATENCY_QUANTILES = (0.5, 0.95, 0.99)
FEATURE_CHECKS = ("feature-", "missing-rate")
"""Checks whose subject is a feature (feature-psi/<feature>, missing-rate/<feature>)."""
ROLLBACK_EVENTS = ("RolledBack", "Aborted")
_NOT_QUERIED = QueryResult.failed(QueryStatus.NO_DATA, "not queried")
_CREATED_ON_FIRST_USE = frozenset({Series.LATENCY, Series.CONFIDENCE})
"""Histograms whose buckets appear with the first observation: absent means none yet (the
feature and prediction bins are pre-created, so their absence is missing data)."""


# --- which series, when ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReportPlan:
    """The revisions the report is about and what to ask Prometheus (at `at`)."""

    canary: str | None
    """The canary under way, else the rolled-back revision (status.failedRevision)."""
    stable: str | None
    rolled_back: bool
    at: datetime
    """The instant every query is evaluated at: now, or a rolled-back canary's rollback."""
    since: datetime | None
    """The canary's first round: where the evidence the analysis weighed starts."""
    stable_window: Window
    refs: Mapping[Track, RevisionRef]
    """Which series are the canary's and the stable's (the analysis' own matchers)."""
    queries: Mapping[QueryKey, Query]


def _status(obj: Mapping[str, Any]) -> Body:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _last_entry(obj: Mapping[str, Any], revision: str, events: Iterable[str]) -> Body | None:
    wanted = set(events)
    return next(
        (
            entry
            for entry in reversed(history_view(obj))
            if entry.get("revision") == revision and entry.get("event") in wanted
        ),
        None,
    )


def _last_analysis(obj: Mapping[str, Any], revision: str | None) -> Body | None:
    """The last analysis of `revision`: status.lastAnalysis, or for a rolled-back revision
    status.failedAnalysis (the round that failed it, kept after the stable's rounds)."""
    status = _status(obj)
    for last in (status.get("lastAnalysis"), status.get("failedAnalysis")):
        if isinstance(last, dict) and revision is not None and last.get("revision") == revision:
            return last
    return None


def _entry_time(entry: Body | None) -> datetime | None:
    return parse_time(entry.get("time")) if entry is not None else None


def report_plan(
    obj: Mapping[str, Any], now: datetime, namespace_label: str = "namespace"
) -> ReportPlan:
    """What to ask Prometheus. `namespace_label`: the label the scrape config puts the pod's
    namespace in, as the operator's --prometheus-namespace-label ("" for none)."""
    status = _status(obj)
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    stable = status.get("stableRevision")
    canary = status.get("canaryRevision") or status.get("failedRevision")
    rolled_back = canary is not None and canary == status.get("failedRevision")
    last = _last_analysis(obj, canary)
    at = now
    if rolled_back and canary is not None:
        rollback = _entry_time(_last_entry(obj, canary, ROLLBACK_EVENTS))
        at = rollback or parse_time((last or {}).get("time")) or now
    since = parse_time((last or {}).get("since"))
    if since is None and canary is not None:
        since = _entry_time(_last_entry(obj, canary, ("Started",)))
    mapped = map_spec(analysis_of(obj))
    stable_window = evidence_range(since if canary is not None else None, mapped, at)
    model = str((spec.get("model") or {}).get("name") or name)
    matchers = {namespace_label: namespace} if namespace_label else {}

    def ref(revision: str) -> RevisionRef:
        # The version only fills a custom check's {{version}}: the one history recorded.
        entry = _last_entry(obj, revision, ("Started", "Promoted")) or {}
        version = str(entry.get("version") or "")
        return RevisionRef(model, revision, version, namespace, name, matchers)

    refs = {
        track: ref(revision)
        for track, revision in ((Track.CANARY, canary), (Track.STABLE, stable))
        if revision is not None
    }
    # The canary is judged on its whole life, as the analysis does: its counters' totals.
    windows = {Track.CANARY: None, Track.STABLE: stable_window}
    queries = {
        (track, s): series_query(s, revision, windows[track])
        for track, revision in refs.items()
        for s in REPORT_SERIES
    }
    return ReportPlan(canary, stable, rolled_back, at, since, stable_window, refs, queries)


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bars:
    """One distribution: the share of each bin, out of `samples` observations (0 for a
    training profile, which is ratios)."""

    name: str
    shares: tuple[float, ...]
    samples: int = 0


@dataclass(frozen=True)
class Panel:
    """Distributions over the same bins, side by side; `note` says why one is missing."""

    title: str
    bins: tuple[str, ...]
    bars: tuple[Bars, ...]
    note: str = ""


@dataclass(frozen=True)
class Chart:
    key: str
    """Unique, usable as an HTML id: feature-<name>, prediction-<output>, confidence, latency."""
    title: str
    panels: tuple[Panel, ...]
    failing: bool = False


@dataclass(frozen=True)
class CheckRow:
    name: str
    value: float | None
    threshold: float
    samples: int
    verdict: str
    reason: str

    @property
    def subject(self) -> str:
        """What the value belongs to: ``feature-psi/age`` -> ``age``."""
        return self.name.partition("/")[2]

    @property
    def ratio(self) -> float | None:
        """The value as a share of its threshold (above 1: past it); None without either."""
        if self.value is None or not self.threshold > 0:
            return None
        return self.value / self.threshold


@dataclass(frozen=True)
class Round:
    """One analysis round of the canary, replayed (`modeldeploy.report.timeline`)."""

    time: datetime
    verdict: str
    samples: int
    checks: tuple[CheckRow, ...]

    def worst(self) -> CheckRow | None:
        """A failing check if any, else the one furthest past (or nearest to) its threshold."""
        measured = [c for c in self.checks if c.ratio is not None]
        return max(measured, key=lambda c: (c.verdict == "fail", c.ratio or 0.0), default=None)


@dataclass(frozen=True)
class Verdicts:
    """status.lastAnalysis, failing checks first."""

    revision: str
    verdict: str
    time: str
    samples: int
    checks: tuple[CheckRow, ...]


@dataclass(frozen=True)
class Quantiles:
    track: str
    revision: str
    milliseconds: tuple[float | None, ...]
    """One per LATENCY_QUANTILES (None: no requests)."""


@dataclass(frozen=True)
class Report:
    name: str
    namespace: str
    phase: str
    decision: str
    """The headline, as `modeldeploy explain-verdict` says it."""
    generated: datetime
    plan: ReportPlan
    rollback_reason: str
    """Why the canary was rolled back (its history entry), "" when it was not."""
    failing: tuple[CheckRow, ...]
    """The failing checks of the revision in question, shown first."""
    verdicts: Verdicts | None
    history: tuple[Body, ...]
    features: tuple[Chart, ...]
    """Failing features first."""
    predictions: tuple[Chart, ...]
    latency: Chart
    quantiles: tuple[Quantiles, ...]
    rounds: tuple[Round, ...]
    """The canary's rounds, replayed from Prometheus (empty: none to replay)."""
    notes: tuple[str, ...]
    """Where data is missing, and why."""


def rows(checks: Iterable[Mapping[str, Any]]) -> tuple[CheckRow, ...]:
    return tuple(
        CheckRow(
            name=str(c.get("name", "?")),
            value=c.get("value"),
            threshold=float(c.get("threshold") or 0.0),
            samples=int(c.get("samples") or 0),
            verdict=str(c.get("verdict", "")),
            reason=str(c.get("reason", "")),
        )
        for c in checks
    )


def _bin_order(labels: Iterable[str]) -> tuple[str, ...]:
    """Bins in value order (the runtime zero-pads decile indexes), `other` and `missing`
    last."""
    last = (contract.OTHER_BIN, contract.MISSING_BIN)
    return tuple(
        sorted(set(labels), key=lambda b: (b in last, last.index(b) if b in last else 0, b))
    )


def _shares(counts: Mapping[str, float], bins: tuple[str, ...]) -> tuple[float, ...]:
    total = sum(max(0.0, counts.get(b, 0.0)) for b in bins)
    return tuple(max(0.0, counts.get(b, 0.0)) / total if total > 0 else 0.0 for b in bins)


def _grouped(values: Mapping[LabelValues, float]) -> dict[str, dict[str, float]]:
    grouped: dict[str, dict[str, float]] = {}
    for (subject, bin_label), value in values.items():
        grouped.setdefault(subject, {})[bin_label] = value
    return grouped


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


class _Answers:
    """Prometheus' answers, and why one is missing in a person's words."""

    def __init__(self, plan: ReportPlan, answers: Mapping[QueryKey, QueryResult]) -> None:
        self.plan = plan
        self.answers = answers

    def revision(self, track: Track) -> str | None:
        return self.plan.canary if track is Track.CANARY else self.plan.stable

    def tracks(self) -> list[Track]:
        return [t for t in (Track.CANARY, Track.STABLE) if self.revision(t) is not None]

    def label(self, track: Track) -> str:
        return f"{track.value} {self.revision(track)}"

    def get(self, track: Track, series: Series) -> tuple[dict[LabelValues, float], str]:
        """(values, "") or ({}, why there are none)."""
        info = self.answers.get((track, Series.INFO), _NOT_QUERIED)
        when = f"{self.plan.at:%Y-%m-%dT%H:%M:%SZ}"
        if info.status is QueryStatus.NO_DATA:
            return {}, f"{self.label(track)} was not scraped at {when} (no {contract.MODEL_INFO})"
        if not info.ok:
            return {}, f"no data for {self.label(track)}: {info.describe()}"
        result = self.answers.get((track, series), _NOT_QUERIED)
        if result.ok or (result.status is QueryStatus.NO_DATA and series in _CREATED_ON_FIRST_USE):
            return dict(result.values), ""
        return {}, f"no {series.value} of {self.label(track)} at {when}: {result.describe()}"


def _feature_charts(answers: _Answers, failing: set[str]) -> tuple[Chart, ...]:
    observed: dict[Track, dict[str, dict[str, float]]] = {}
    profile: dict[Track, dict[str, dict[str, float]]] = {}
    why: dict[Track, str] = {}
    for track in answers.tracks():
        served, no_counts = answers.get(track, Series.FEATURES)
        trained, no_ratios = answers.get(track, Series.BASELINE)
        observed[track], profile[track] = _grouped(served), _grouped(trained)
        why[track] = no_ratios or no_counts
    names = {f for by_feature in (*observed.values(), *profile.values()) for f in by_feature}
    charts = []
    for feature in sorted(names, key=lambda f: (f not in failing, f)):
        panels = []
        for track in answers.tracks():
            counts = observed[track].get(feature, {})
            ratios = profile[track].get(feature, {})
            bins = _bin_order([*counts, *ratios])
            note = why[track] or ("" if counts else f"no requests with {feature} counted")
            panels.append(
                Panel(
                    answers.label(track),
                    bins,
                    (
                        Bars("serving", _shares(counts, bins), round(sum(counts.values()))),
                        Bars("training profile", _shares(ratios, bins)),
                    ),
                    note,
                )
            )
        charts.append(Chart(f"feature-{slug(feature)}", feature, tuple(panels), feature in failing))
    return tuple(charts)


def _comparison(
    answers: _Answers,
    key: str,
    title: str,
    by_track: Mapping[Track, tuple[dict[str, float], str]],
    *,
    bins: tuple[str, ...] | None = None,
    failing: bool = False,
) -> Chart:
    """One panel: canary and stable over the same bins (by default, the union of theirs)."""
    if bins is None:
        bins = _bin_order(b for counts, _ in by_track.values() for b in counts)
    bars = tuple(
        Bars(answers.label(t), _shares(counts, bins), round(sum(counts.values())))
        for t, (counts, _) in by_track.items()
    )
    notes = "; ".join(note for _, note in by_track.values() if note)
    return Chart(key, title, (Panel("canary vs stable", bins, bars, notes),), failing)


def _prediction_charts(answers: _Answers, failing: set[str]) -> tuple[Chart, ...]:
    grouped = {}
    for track in answers.tracks():
        values, note = answers.get(track, Series.PREDICTIONS)
        grouped[track] = (_grouped(values), note)
    outputs = sorted({o for by_output, _ in grouped.values() for o in by_output})
    return tuple(
        _comparison(
            answers,
            f"prediction-{slug(output)}",
            f"predictions: {output}",
            {t: (by_output.get(output, {}), note) for t, (by_output, note) in grouped.items()},
            failing=output in failing,
        )
        for output in outputs
    )


@dataclass(frozen=True)
class _Histogram:
    """A Prometheus histogram of each track: cumulative (upper bound, count) buckets."""

    buckets: dict[Track, list[tuple[float, float]]]
    notes: dict[Track, str]

    @classmethod
    def of(cls, answers: _Answers, series: Series) -> "_Histogram":
        buckets, notes = {}, {}
        for track in answers.tracks():
            values, notes[track] = answers.get(track, series)
            buckets[track] = cumulative_buckets({k[0]: v for k, v in values.items()})
        return cls(buckets, notes)

    def observed(self) -> bool:
        return any(count > 0 for buckets in self.buckets.values() for _, count in buckets)

    def chart(
        self, answers: _Answers, key: str, title: str, label: Callable[[float], str],
        failing: bool = False,
    ) -> Chart:  # fmt: skip
        """Per-bucket shares, each bucket labelled by `label(upper bound)`."""
        bounds = sorted({bound for buckets in self.buckets.values() for bound, _ in buckets})
        by_track = {}
        for track, buckets in self.buckets.items():
            own = sorted({bound for bound, _ in buckets})
            counts: Iterable[float] = bucket_counts(buckets) if buckets else []
            per_bucket = {label(b): float(c) for b, c in zip(own, counts, strict=True)}
            by_track[track] = (per_bucket, self.notes[track])
        bins = tuple(label(b) for b in bounds)
        return _comparison(answers, key, title, by_track, bins=bins, failing=failing)


def _milliseconds(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"≤{bound * 1000:g} ms"


def _at_most(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"≤{bound:g}"


def _quantiles(answers: _Answers, latency: _Histogram) -> tuple[Quantiles, ...]:
    rows = []
    for track, buckets in latency.buckets.items():
        values = (histogram_quantile(q, buckets) for q in LATENCY_QUANTILES)
        milliseconds = tuple(v * 1000 if math.isfinite(v) else None for v in values)
        rows.append(Quantiles(track.value, answers.revision(track) or "", milliseconds))
    return tuple(rows)


def _failing_subjects(checks: Iterable[CheckRow], prefixes: tuple[str, ...]) -> set[str]:
    return {c.subject for c in checks if c.verdict == "fail" and c.name.startswith(prefixes)}


def build(
    obj: Mapping[str, Any],
    plan: ReportPlan,
    answers: Mapping[QueryKey, QueryResult],
    now: datetime,
    rounds: tuple[Round, ...] = (),
) -> Report:
    """The report's content (pure); `rounds`: the canary's, replayed."""
    # explain() judges by the analysis that matters now: for a rolled-back canary, the
    # round that failed it (status.failedAnalysis), else status.lastAnalysis.
    explanation = explain(obj)
    status = _status(obj)
    checks = rows([*explanation["failing"], *explanation["inconclusive"], *explanation["passing"]])
    analysed = explanation["revision"]
    verdicts = None
    if explanation["time"] is not None:
        verdicts = Verdicts(
            str(analysed or ""), str(explanation["verdict"] or ""),
            str(explanation["time"]), int(explanation["samples"] or 0), checks,
        )  # fmt: skip
    about_canary = plan.canary is not None and analysed == plan.canary
    failing = tuple(c for c in checks if c.verdict == "fail") if about_canary else ()
    notes = []
    rollback_reason = ""
    if plan.rolled_back and plan.canary is not None:
        entry = _last_entry(obj, plan.canary, ROLLBACK_EVENTS)
        rollback_reason = str((entry or {}).get("reason") or "no reason recorded")
        if not about_canary:
            notes.append(
                f"status holds no failing analysis of {plan.canary} (its latest is of "
                f"{analysed or 'no revision'}): the rollback's reason above says why"
            )
    answered = _Answers(plan, answers)
    features = _feature_charts(answered, _failing_subjects(failing, FEATURE_CHECKS))
    if not features:
        notes.append("no feature bins or training profile in Prometheus for any revision")
    confidence = _Histogram.of(answered, Series.CONFIDENCE)
    predictions = _prediction_charts(answered, _failing_subjects(failing, ("prediction-",)))
    confidence_failing = bool(_failing_subjects(failing, ("confidence-",)))
    if confidence.observed() or any(confidence.notes.values()):
        predictions += (
            confidence.chart(
                answered, "confidence", "confidence of the predicted class", _at_most,
                confidence_failing,
            ),
        )  # fmt: skip
    latency = _Histogram.of(answered, Series.LATENCY)
    notes += sorted({n for t in answered.tracks() for n in [answered.get(t, Series.INFO)[1]] if n})
    meta = obj.get("metadata") or {}
    return Report(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        phase=str(status.get("phase", "")),
        decision=str(explanation["decision"]),
        generated=now,
        plan=plan,
        rollback_reason=rollback_reason,
        failing=failing,
        verdicts=verdicts,
        history=tuple(history_view(obj)),
        features=features,
        predictions=predictions,
        latency=latency.chart(
            answered,
            "latency",
            "request latency",
            _milliseconds,
            any(c.name.startswith("latency-") for c in failing),
        ),
        quantiles=_quantiles(answered, latency),
        rounds=rounds,
        notes=tuple(notes),
    )
