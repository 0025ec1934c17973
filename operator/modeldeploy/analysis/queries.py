"""PromQL for the metrics contract, and user query templates.

The operator asks Prometheus only for per-window sums by the labels it needs
(``sum by (feature, bin) (increase(...[5m]))``) and computes every statistic in Python, so
the same numbers can be tested without Prometheus. Label values are escaped, so no model
name or version string can change a query's meaning.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from modeldeploy import contract
from modeldeploy.api.analysis import QUERY_PLACEHOLDERS

_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_label_value(value: str) -> str:
    """`value` as the inside of a double-quoted PromQL string."""
    return "".join(_ESCAPES.get(char, char) for char in value)


Window = str | timedelta


def duration(window: Window) -> str:
    """A PromQL range duration (``5m``, ``90s``, ``1h30m``); timedeltas become seconds."""
    if isinstance(window, timedelta):
        milliseconds = round(window.total_seconds() * 1000)
        if milliseconds <= 0:
            raise ValueError(f"window must be positive, got {window}")
        return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"
    if not _DURATION.match(window):
        raise ValueError(f"not a Prometheus duration: {window!r} (expected e.g. 30s, 5m, 1h)")
    return window


@dataclass(frozen=True)
class RevisionRef:
    """Which revision's series to read. Series are selected by model and revision (the
    revision hash already pins the version); `matchers` adds exact label matchers, e.g. a
    ``namespace`` label that the scrape config attaches. `version`, `namespace` and `name`
    (of the ModelDeployment) feed user templates."""

    model: str
    revision: str
    version: str = ""
    namespace: str = ""
    name: str = ""
    matchers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.matchers:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"not a Prometheus label name: {name!r}")
            if name in (contract.LABEL_MODEL, contract.LABEL_REVISION):
                raise ValueError(f"label {name!r} is already matched by the revision")


def selector(ref: RevisionRef) -> str:
    """``{model="...",revision="..."}`` plus any extra matchers, sorted by label name."""
    labels = {
        contract.LABEL_MODEL: ref.model,
        contract.LABEL_REVISION: ref.revision,
        **ref.matchers,
    }
    pairs = [f'{name}="{escape_label_value(labels[name])}"' for name in labels]
    return "{" + ",".join(pairs[:2] + sorted(pairs[2:])) + "}"


@dataclass(frozen=True)
class Query:
    """A PromQL instant query and the labels its answer is keyed by, in order."""

    promql: str
    by: tuple[str, ...]


def counter_increase(
    metric: str, by: tuple[str, ...], ref: RevisionRef, window: Window | None
) -> Query:
    """The counter's increase over the window, summed by `by`; without a window, its
    current totals (a revision's whole life: see `series_query`)."""
    grouping = ", ".join(by)
    if window is None:
        return Query(f"sum by ({grouping}) ({metric}{selector(ref)})", by)
    return Query(f"sum by ({grouping}) (increase({metric}{selector(ref)}[{duration(window)}]))", by)


def histogram_increase(metric: str, ref: RevisionRef, window: Window | None) -> Query:
    """Cumulative bucket counts of a histogram over the window, keyed by ``le``."""
    return counter_increase(f"{metric}_bucket", ("le",), ref, window)


def gauge(metric: str, by: tuple[str, ...], ref: RevisionRef) -> Query:
    """Current value of a gauge every pod of the revision exports alike (any pod will do)."""
    return Query(f"max by ({', '.join(by)}) ({metric}{selector(ref)})", by)


class Series(StrEnum):
    """The contract's series the analysis reads, per revision."""

    INFO = "info"  # number of scraped pods: tells "not scraped" from "no events yet"
    REQUESTS = "requests"  # increase by code
    INVALID = "invalid"  # increase by reason
    LATENCY = "latency"  # histogram buckets by le
    FEATURES = "features"  # increase by feature, bin
    BASELINE = "baseline"  # training-profile ratios by feature, bin
    PREDICTIONS = "predictions"  # increase by output, bin
    CONFIDENCE = "confidence"  # histogram buckets by le
    LABELLED = "labelled"  # labelled predictions, increase by outcome (correct | wrong)
    GOLDEN = "golden"  # golden replays' increase by result
    HOLDOUT = "holdout"  # the training holdout's accuracy (absent: the profile has none)
    ANSWERED = "answered"  # rows answered, increase by answered_by (model | fallback)


def series_query(series: Series, ref: RevisionRef, window: Window | None) -> Query:
    """The query of one series of a revision: counts over `window`, or (None) the counters'
    totals, i.e. everything the revision's pods counted since they started. The totals are
    exact where increase() is not: over the first seconds of a new series a bin counted
    before the first scrape and not since reads 0 (too few samples to extrapolate), which
    looks like a distribution change on a canary's first few dozen requests."""
    feature_bin = (contract.LABEL_FEATURE, contract.LABEL_BIN)
    match series:
        case Series.INFO:
            return Query(f"count({contract.MODEL_INFO}{selector(ref)})", ())
        case Series.REQUESTS:
            return counter_increase(contract.REQUESTS_TOTAL, (contract.LABEL_CODE,), ref, window)
        case Series.INVALID:
            return counter_increase(
                contract.INVALID_REQUESTS_TOTAL, (contract.LABEL_REASON,), ref, window
            )
        case Series.LATENCY:
            return histogram_increase(contract.REQUEST_DURATION_SECONDS, ref, window)
        case Series.FEATURES:
            return counter_increase(contract.FEATURE_BIN_TOTAL, feature_bin, ref, window)
        case Series.BASELINE:
            return gauge(contract.FEATURE_BASELINE_RATIO, feature_bin, ref)
        case Series.PREDICTIONS:
            return counter_increase(
                contract.PREDICTION_BIN_TOTAL,
                (contract.LABEL_OUTPUT, contract.LABEL_BIN),
                ref,
                window,
            )
        case Series.CONFIDENCE:
            return histogram_increase(contract.PREDICTION_CONFIDENCE, ref, window)
        case Series.LABELLED:
            return counter_increase(contract.LABELLED_TOTAL, (contract.LABEL_OUTCOME,), ref, window)
        case Series.HOLDOUT:
            return gauge(contract.HOLDOUT_ACCURACY, (), ref)
        case Series.GOLDEN:
            return counter_increase(
                contract.GOLDEN_CHECKS_TOTAL, (contract.LABEL_RESULT,), ref, window
            )
        case Series.ANSWERED:
            return counter_increase(
                contract.ANSWERED_ROWS_TOTAL, (contract.LABEL_ANSWERED_BY,), ref, window
            )


# --- user query templates ------------------------------------------------------------------

TEMPLATE_VARIABLES = QUERY_PLACEHOLDERS
_VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class TemplateError(ValueError):
    """A user query template uses a variable that does not exist, or malformed braces."""


def template_variables(template: str) -> set[str]:
    """The variables a template uses; raises TemplateError for unknown or malformed ones."""
    used = set(_VARIABLE.findall(template))
    unknown = sorted(used - set(TEMPLATE_VARIABLES))
    if unknown:
        raise TemplateError(
            f"unknown template variable(s) {', '.join(map(repr, unknown))} in query "
            f"{template!r}; allowed: {', '.join('{{' + name + '}}' for name in TEMPLATE_VARIABLES)}"
        )
    leftover = _VARIABLE.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise TemplateError(f"unbalanced '{{{{' or '}}}}' in query {template!r}")
    return used


def render_template(
    template: str, ref: RevisionRef, window: Window, stable: RevisionRef | None = None
) -> str:
    """Substitute the template variables: identity values of the revision under analysis
    (`ref`) and ``{{stableRevision}}`` (empty without a stable revision), escaped for use
    inside a quoted label matcher, and ``{{window}}`` as a duration. Whitespace inside the
    braces is allowed: ``{{ revision }}``."""
    template_variables(template)
    values = {
        "namespace": ref.namespace,
        "name": ref.name,
        "model": ref.model,
        "version": ref.version,
        "revision": ref.revision,
        "stableRevision": stable.revision if stable is not None else "",
    }
    escaped = {key: escape_label_value(value) for key, value in values.items()}
    escaped["window"] = duration(window)
    return _VARIABLE.sub(lambda match: escaped[match.group(1)], template)
