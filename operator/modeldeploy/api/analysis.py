"""What decides a rollout: thresholds on the new revision's metrics, and when they may act."""

import re
from typing import Annotated, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel, ListMapKey, Rule, cel_quote, pattern_rule
from modeldeploy.api.duration import PositiveDuration, cel_not_shorter, parse_duration

MAX_CUSTOM_CHECKS = 20
Fraction = Annotated[float, Field(ge=0, le=1)]


class Latency(ApiModel):
    """Latency ceilings of the new revision over the window (from the request duration
    histogram). Off unless set: good values depend on the model."""

    rules = (
        Rule(
            cel="!has(self.p95Ms) || !has(self.p99Ms) || self.p95Ms <= self.p99Ms",
            message="latency.p95Ms must not exceed latency.p99Ms",
            holds=lambda t: t.p95_ms is None or t.p99_ms is None or t.p95_ms <= t.p99_ms,
        ),
    )

    p95_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None
    """Fail on evidence that the 95th percentile exceeds this many milliseconds (more than
    5% of requests slower); pass once it is shown below."""
    p99_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None
    """The same for the 99th percentile."""


class ErrorRate(ApiModel):
    """Share of requests of the new revision answered with a server error (5xx)."""

    max: Fraction = 0.01
    """Fail on evidence that the share is above this (0-1); pass once it is shown below.
    1 turns the check off."""


class InvalidInputRate(ApiModel):
    """Share of requests the new revision refused as invalid input (400), compared with the
    stable revision on the same window: a stricter or different input schema shows here."""

    max_increase: Fraction = 0.02
    """Fail on evidence that the new revision's share is above the stable's, by an estimated
    increase of more than this (0-1)."""


class FallbackRate(ApiModel):
    """Share of rows the new revision answered from its low-confidence fallback (the rules
    its image declares in model.yaml, below a confidence floor) compared with the stable
    revision's on the same window: a less confident model falls back more. Applies only to a
    new revision whose model declares a fallback (and only with a stable revision to compare
    with); a stable without one counts as falling back never. With no fallback rows on
    either side it passes once enough rows bound the increase within maxIncrease."""

    max_increase: Fraction = 0.05
    """Fail on evidence that the new revision's share of rows answered by the fallback is
    above the stable's, by an estimated increase of more than this (0-1). 1 turns the check
    off."""


class Accuracy(ApiModel):
    """Ground truth: the new revision's accuracy on labelled predictions (labels posted to
    the runtime for earlier answers, POST /v2/models/{model}/labels) compared with the
    stable revision's over the same period. Catches concept drift, which input drift cannot:
    inputs look as in training while answers get worse. Off unless enabled: it needs clients
    that send labels back; enabled, too few labels keep it inconclusive (never a pass).
    After bakeTime, the stable's accuracy on labels over analysis.window is held against
    the accuracy its profile records on the training holdout (`modeldeploy profile
    --holdout`; skipped for images whose profile has none), as check holdout-accuracy:
    failing it marks the ModelDeployment Degraded (AnalysisFailed), never a rollback."""

    enabled: bool = False
    """Run the check (the canary is not promoted before both sides have minLabels labels),
    and the stable's holdout-accuracy check after bakeTime."""
    max_drop: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """Fail on evidence that the new revision's share of wrong answers is above the
    stable's by an estimated increase of more than this: a fraction of the labels, so 0.05
    is an accuracy drop of 5 percentage points (0-1). For the stable after bakeTime: on
    evidence that its share of wrong answers is above 1 - its holdout accuracy by more than
    this."""
    min_labels: Annotated[int, Field(ge=1, le=1_000_000_000)] = 200
    """No verdict before each side has this many labelled predictions (the stable after
    bakeTime: this many over analysis.window; labels arrive late and partly, and every
    verdict says how many it had)."""


Tolerance = Annotated[float, Field(gt=0, le=100)]
Distance = Annotated[float, Field(gt=0, le=1)]


class Tolerances(ApiModel):
    """How large a distribution change must be to matter (the practical-significance gate of
    the drift checks): a change fails only when it exceeds every tolerance set, and passes
    once it is shown within one of them."""

    psi: Tolerance
    """Tolerance of the population stability index (Jeffreys divergence)."""
    ks: Distance | None = None
    """Also a tolerance of the Kolmogorov-Smirnov distance (largest CDF gap, 0-1) of numeric
    bins. Off unless set."""
    kl: Tolerance | None = None
    """Also a tolerance of the Kullback-Leibler divergence of the new revision's distribution
    from its reference (e.g. 0.15). Off unless set."""
    js: Tolerance | None = None
    """Also a tolerance of the Jensen-Shannon divergence (natural log, 0-0.69). Off unless
    set."""
    wasserstein: Distance | None = None
    """Also a tolerance of the binned Wasserstein distance of numeric bins: the mean CDF gap
    over the bin edges, i.e. for decile bins a shift in training quantiles (0-1). Off unless
    set."""


class FeatureDrift(Tolerances):
    """Input features of the new revision compared with its own training profile (bundled in
    its image): catches training/serving skew and preprocessing version skew, and names a
    feature that is constant or all missing at serving, as one that leaked into training
    (known only after the outcome) often is. Leakage in the training data itself is flagged
    by modeldeploy profile --target. A feature fails on evidence of a change (an anytime-valid
    test, see analysis) whose size exceeds every tolerance set here; it passes once the change
    is shown to be within one of them."""

    psi: Tolerance = 0.05
    """Tolerance of the population stability index (Jeffreys divergence). 0.05 is about a
    0.22-standard-deviation mean shift of a feature binned in deciles (0.25 sd: 0.06,
    0.5 sd: 0.24); bench/bench_detection.py prints what each setting catches."""
    ignore: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=253)]],
        Field(max_length=100),
    ] = Field(default_factory=list)
    """Features exempt from the drift checks (e.g. ones expected to shift, like dates)."""


class PredictionDrift(Tolerances):
    """Predictions (and confidence) of the new revision compared with the stable revision's
    over the same period, with the same test and tolerances as features."""

    psi: Tolerance = 0.1
    """Tolerance of the population stability index of the prediction distribution (a
    0.5-standard-deviation shift of a regressor's output is about 0.24)."""


class MissingRate(ApiModel):
    """Share of missing values per feature, compared with the training profile."""

    max_increase: Fraction = 0.05
    """Fail on evidence that a feature's missing share rose over its training share, by an
    estimated increase of more than this (0-1)."""


class Drift(ApiModel):
    """Distribution checks. They need the training profile in the image (modeldeploy
    profile); set enabled: false for images without one."""

    enabled: bool = True
    """Run the drift checks."""
    features: FeatureDrift = FeatureDrift()
    predictions: PredictionDrift = PredictionDrift()
    missing_rate: MissingRate = MissingRate()


class Golden(ApiModel):
    """The image's golden requests (profile.json golden), replayed by every pod of the
    revision after warm-up (modeldeploy serve, every 30 s by default): their answers must
    stay the ones the image was built with (labels exactly, numbers within 1e-6). A canary
    whose golden answers stop matching fails (rolls back); a stable after bakeTime is marked
    Degraded. Not counting as client traffic, it needs no requests; before the first replay it
    does not hold up a round."""

    enabled: bool = True
    """Run the golden check (images whose runtime does not replay golden requests give it no
    data: it then waits without holding up a round)."""
    max_mismatches: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    """Fail once more golden answers than this did not match (or failed): the canary's since
    its first round, the stable's over analysis.window. Golden answers are deterministic, so
    any mismatch is a change of the model's behaviour."""


CHECK_NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"

QUERY_PLACEHOLDERS = (
    "namespace", "name", "model", "version", "revision", "stableRevision", "window",
)  # fmt: skip
"""What a custom query may use as {{placeholder}} (modeldeploy.analysis.queries renders them)."""
_PLACEHOLDER = f"[{{][{{] *({'|'.join(QUERY_PLACEHOLDERS)}) *[}}][}}]"
_OPEN, _CLOSE = "[{][{]", "[}][}]"


def _placeholders_known(query: str) -> bool:
    """Python twin of the CEL rule: every {{ and }} belongs to a known placeholder."""
    known = len(re.findall(_PLACEHOLDER, query))
    return len(re.findall(_OPEN, query)) == known == len(re.findall(_CLOSE, query))


# A custom check sees only the ModelDeployment's own series: its query must match the
# revision label to {{revision}} (or {{stableRevision}}) and some label (the operator's
# namespace label, `namespace` by default) to {{namespace}}, with `=` and double quotes.
# Text, not PromQL: it says the matchers are there, not that every selector has them
# (docs/concepts.md, "Custom checks").
_REVISION_MATCHER = 'revision *= *"[{][{] *(revision|stableRevision) *[}][}]"'
_NAMESPACE_MATCHER = '= *"[{][{] *namespace *[}][}]"'


def _own_series(query: str) -> bool:
    """Python twin of the CEL rule: the revision and namespace matchers are there."""
    return bool(re.search(_REVISION_MATCHER, query) and re.search(_NAMESPACE_MATCHER, query))


def _count(pattern: str) -> str:
    return f"self.query.findAll({cel_quote(pattern)}).size()"


class CustomCheck(ApiModel):
    """A PromQL query whose value must stay within bounds."""

    rules = (
        Rule(
            cel="has(self.min) || has(self.max)",
            message="a custom check needs min, max or both",
            holds=lambda c: c.min is not None or c.max is not None,
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min < self.max",
            message="a custom check's min must be less than its max",
            holds=lambda c: c.min is None or c.max is None or c.min < c.max,
        ),
        Rule(
            cel=f"{_count(_OPEN)} == {_count(_PLACEHOLDER)} && "
            f"{_count(_CLOSE)} == {_count(_PLACEHOLDER)}",
            message="a custom query may only use the placeholders "
            + ", ".join("{{" + name + "}}" for name in QUERY_PLACEHOLDERS)
            + " (an unknown name or an unpaired {{ or }} was found)",
            holds=lambda c: _placeholders_known(c.query),
            field_path=".query",
        ),
        Rule(
            cel=f"self.query.matches({cel_quote(_REVISION_MATCHER)}) && "
            f"self.query.matches({cel_quote(_NAMESPACE_MATCHER)})",
            message='a custom query must select its own series: revision="{{revision}}" (or '
            '"{{stableRevision}}") and the namespace label ="{{namespace}}", e.g. '
            'accuracy{revision="{{revision}}",namespace="{{namespace}}"}',
            holds=lambda c: _own_series(c.query),
            field_path=".query",
        ),
    )

    name: Annotated[
        str,
        Field(min_length=1, max_length=63),
        pattern_rule(
            CHECK_NAME_PATTERN,
            "must be lowercase letters, digits and '-', starting with a letter (e.g. accuracy)",
        ),
    ]
    """Name of the check in status and events (unique)."""
    query: Annotated[str, Field(min_length=1, max_length=4096)]
    """PromQL returning one number. Placeholders: {{namespace}}, {{name}}, {{model}},
    {{version}}, {{revision}} (the revision under analysis), {{stableRevision}}, {{window}}
    (e.g. 5m)."""
    min: float | None = None
    """Fail when the value is below this."""
    max: float | None = None
    """Fail when the value is above this."""


class Analysis(ApiModel):
    """How a new revision is judged: checks on its metrics, every interval. Each check is an
    anytime-valid sequential test on everything the revision served since its first round
    (and the stable over the same period), so it may be looked at every round and decides as
    soon as the evidence does: a failure rolls back at once, a pass needs evidence too, thin
    data is "not yet". No data is never a pass."""

    rules = (
        Rule(
            cel=cel_not_shorter("self.window", "self.interval"),
            message="analysis.window must be at least analysis.interval",
            holds=lambda a: parse_duration(a.window) >= parse_duration(a.interval),
            field_path=".window",
        ),
    )

    interval: PositiveDuration = "30s"
    """How often the checks run."""
    window: PositiveDuration = "5m"
    """How far back custom checks ({{window}}) and the stable's drift monitor after bakeTime
    look. The canary's checks look at everything since its first round."""
    false_positive_rate: Annotated[float, Field(gt=0, le=0.2)] = 0.01
    """The chance that a new revision no worse than the stable is rolled back by the checks,
    over the whole rollout and all its checks together (split evenly across them)."""
    min_samples: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    """An optional floor: no verdict before the new revision served this many requests. The
    tests need none (they account for thin data themselves)."""
    failure_limit: Annotated[int, Field(ge=1, le=100)] = 2
    """Consecutive failed rounds of a custom check that roll back. A failed sequential test
    (every other check) rolls back at once: its evidence already holds across rounds."""
    on_no_data: Literal["hold", "rollback"] = "hold"
    """What to do when the rounds have had no data (Prometheus unreachable, an empty
    result, no request to the new revision) for noDataTimeout: hold keeps the canary where
    it is (Warning Event AnalysisNoDataTimeout), rollback rolls it back. A round that is not
    yet conclusive while data flows is not "no data": the evidence grows, no clock runs."""
    no_data_timeout: PositiveDuration = "15m"
    """How long the rounds may go without data before onNoData applies."""
    latency: Latency = Latency()
    error_rate: ErrorRate = ErrorRate()
    invalid_input_rate: InvalidInputRate = InvalidInputRate()
    fallback_rate: FallbackRate = FallbackRate()
    drift: Drift = Drift()
    accuracy: Accuracy = Accuracy()
    golden: Golden = Golden()
    custom: Annotated[
        list[CustomCheck],
        Field(max_length=MAX_CUSTOM_CHECKS),
        ListMapKey("name"),
    ] = Field(default_factory=list)
    """Further checks as PromQL queries with bounds."""
