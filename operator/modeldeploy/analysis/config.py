"""What an analysis round checks and what it asks Prometheus for: thresholds
(`AnalysisConfig`), custom checks, and the queries a config needs (`plan_queries`, asked
by `collect`). Plain data and PromQL only: the numbers are judged in `checks`, which needs
numpy and scipy; the operator loads it with its first round (see `judge`), not before.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from modeldeploy.analysis.data import QueryResult
from modeldeploy.analysis.queries import (
    Query,
    RevisionRef,
    Series,
    Window,
    render_template,
    series_query,
    template_variables,
)

CUSTOM_PREFIX = "custom/"
"""Custom checks are reported as `custom/<name>`."""


def check_of(status_name: str) -> str:
    """The check a status entry is about, without its subject (``feature-psi/age`` ->
    ``feature-psi``; a custom check keeps its name): one series per check, however its worst
    feature changes."""
    if status_name.startswith(CUSTOM_PREFIX):
        return status_name
    return status_name.partition("/")[0]


@dataclass(frozen=True)
class CustomCheck:
    """A user PromQL template that must evaluate to one number within [minimum, maximum]."""

    name: str
    query: str
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        template_variables(self.query)
        if self.minimum is None and self.maximum is None:
            raise ValueError(f"custom check {self.name!r} needs a minimum or a maximum")


class Effect(StrEnum):
    """Effect sizes of a distribution change (computed in `sequential`)."""

    PSI = "psi"
    KL = "kl"
    JS = "js"
    KS = "ks"
    WASSERSTEIN = "wasserstein"


ORDERED_ONLY = frozenset({Effect.KS, Effect.WASSERSTEIN})
"""Effects that need ordered bins (numbers), not categories."""


@dataclass(frozen=True)
class EffectLimits:
    """Tolerances of a distribution check, one per effect size; a change is practically
    significant only when it exceeds every tolerance set (each one added makes the gate
    stricter), and within tolerance when one of them is shown to hold."""

    limits: Mapping[Effect, float] = field(default_factory=dict)

    @classmethod
    def of(cls, **limits: float | None) -> "EffectLimits":
        return cls({Effect(name): value for name, value in limits.items() if value is not None})

    def __bool__(self) -> bool:
        return bool(self.limits)

    def usable(self, ordered: bool) -> dict[Effect, float]:
        """The tolerances that apply to bins that are (not) ordered."""
        return {e: v for e, v in self.limits.items() if ordered or e not in ORDERED_ONLY}

    @property
    def headline(self) -> tuple[Effect, float] | None:
        """The effect a check reports as its value: PSI when set, else the first."""
        if not self.limits:
            return None
        effect = Effect.PSI if Effect.PSI in self.limits else next(iter(self.limits))
        return effect, self.limits[effect]


NO_LIMITS = EffectLimits()


@dataclass(frozen=True)
class AccuracyLimits:
    """The canary's share of wrong answers on labelled predictions may exceed the stable's
    by at most `max_drop` (a fraction: 0.05 = 5 percentage points of accuracy), judged only
    once each side has `min_labels` labels."""

    max_drop: float
    min_labels: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.max_drop < 1:
            raise ValueError("max_drop must be in [0, 1)")
        if self.min_labels < 1:
            raise ValueError("min_labels must be at least 1")


@dataclass(frozen=True)
class AnalysisConfig:
    """Thresholds as plain numbers; None switches a check off. Latency in milliseconds,
    rates as fractions (0.01 = 1%)."""

    false_positive_rate: float = 0.01
    """The chance that a revision no worse than its reference is rolled back, over all its
    checks and rounds together."""
    min_samples: int = 0
    """A floor: no verdict on fewer canary requests (0: the tests alone decide)."""
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    max_error_rate: float | None = None
    max_invalid_increase: float | None = None  # canary share minus stable share
    max_fallback_increase: float | None = None  # of rows answered by the fallback, vs stable
    features: EffectLimits = NO_LIMITS
    max_missing_increase: float | None = None
    predictions: EffectLimits = NO_LIMITS
    ignored_features: frozenset[str] = frozenset()
    golden_max_mismatches: int | None = None
    """Golden answers that may fail to match before the golden check fails (None: off)."""
    custom: tuple[CustomCheck, ...] = field(default_factory=tuple)
    accuracy: AccuracyLimits | None = None  # canary vs stable on labelled predictions
    holdout_accuracy: AccuracyLimits | None = None
    """The revision's labelled accuracy against its training holdout's (the profile's, when
    it has one): the stable after bakeTime (`drift_only`), with `accuracy`'s limits."""

    def __post_init__(self) -> None:
        if self.min_samples < 0:
            raise ValueError("min_samples must not be negative")
        if not 0 < self.false_positive_rate < 1:
            raise ValueError("false_positive_rate must be between 0 and 1")
        names = [check.name for check in self.custom]
        if len(set(names)) != len(names):
            raise ValueError(f"custom check names must be unique: {names}")

    def drift_only(self) -> "AnalysisConfig":
        """Only the checks of a revision against its own image: its training profile (and
        the holdout accuracy recorded there) and its golden answers."""
        return AnalysisConfig(
            false_positive_rate=self.false_positive_rate,
            min_samples=self.min_samples,
            features=self.features,
            max_missing_increase=self.max_missing_increase,
            ignored_features=self.ignored_features,
            golden_max_mismatches=self.golden_max_mismatches,
            holdout_accuracy=self.accuracy or self.holdout_accuracy,
        )

    @property
    def checks_features(self) -> bool:
        return bool(self.features) or self.max_missing_increase is not None

    @property
    def checks_predictions(self) -> bool:
        return bool(self.predictions)


class Track(StrEnum):
    CANARY = "canary"
    STABLE = "stable"


QueryKey = tuple[Track, Series]


@dataclass(frozen=True)
class QueryPlan:
    queries: Mapping[QueryKey, Query]
    custom: Mapping[str, Query] = field(default_factory=dict)


def plan_queries(
    config: AnalysisConfig,
    *,
    canary: RevisionRef,
    window: Window,
    stable: RevisionRef | None = None,
    custom_window: Window | None = None,
    canary_totals: bool = False,
) -> QueryPlan:
    """The queries this config needs (and no others): counts over `window` (the canary's
    counters' totals instead when `canary_totals`: a revision judged on its whole life),
    custom checks over `custom_window` (default: `window`)."""
    canary_series = [Series.INFO, Series.REQUESTS]
    stable_series: list[Series] = []
    if config.latency_p95_ms is not None or config.latency_p99_ms is not None:
        canary_series.append(Series.LATENCY)
    if config.max_invalid_increase is not None:
        canary_series.append(Series.INVALID)
        stable_series += [Series.REQUESTS, Series.INVALID]
    if config.checks_features:
        canary_series += [Series.FEATURES, Series.BASELINE]
    if config.golden_max_mismatches is not None:
        canary_series.append(Series.GOLDEN)
    if config.checks_predictions and stable is not None:
        canary_series += [Series.PREDICTIONS, Series.CONFIDENCE]
        stable_series += [Series.PREDICTIONS, Series.CONFIDENCE]
    if config.accuracy is not None and stable is not None:
        canary_series.append(Series.LABELLED)
        stable_series.append(Series.LABELLED)
    if config.holdout_accuracy is not None:
        canary_series += [s for s in (Series.LABELLED, Series.HOLDOUT) if s not in canary_series]
    if config.max_fallback_increase is not None and stable is not None:
        canary_series.append(Series.ANSWERED)
        stable_series.append(Series.ANSWERED)
    own = None if canary_totals else window
    queries = {(Track.CANARY, s): series_query(s, canary, own) for s in canary_series}
    if stable is not None and stable_series:
        for series in [Series.INFO, *stable_series]:
            queries[(Track.STABLE, series)] = series_query(series, stable, window)
    custom = {
        c.name: Query(render_template(c.query, canary, custom_window or window, stable), ())
        for c in config.custom
    }
    return QueryPlan(queries, custom)


@dataclass(frozen=True)
class Observations:
    """Raw answers to a `QueryPlan` (see `collect`)."""

    results: Mapping[QueryKey, QueryResult]
    custom: Mapping[str, QueryResult] = field(default_factory=dict)


class QueryProvider(Protocol):
    def query(
        self, promql: str, by: Sequence[str] = (), at: float | None = None
    ) -> QueryResult: ...


def collect(provider: QueryProvider, plan: QueryPlan, at: float | None = None) -> Observations:
    """Ask every query of the plan. Pass `at` (Unix time) to evaluate them all at one
    instant, so that the answers of one round are mutually consistent."""
    return Observations(
        {key: provider.query(q.promql, q.by, at) for key, q in plan.queries.items()},
        {name: provider.query(q.promql, q.by, at) for name, q in plan.custom.items()},
    )
