"""The metrics contract as a small API any Python server can use.

    monitor = Monitor(load_profile("profile.json"), Identity.resolve("churn", "1"))
    monitor.observe_features({"tenure_months": [3, 40], "contract": ["one-year", None]})
    monitor.observe_predictions(["churn", "stay"], confidence=[0.91, 0.62])
    monitor.observe_answered(rows=2, by_fallback=0)    # Monitor(..., fallback=True) to count
    monitor.observe_request(200, seconds=0.004)
    body, content_type = monitor.exposition()   # serve it on /metrics

Per-bin counters live in numpy arrays and are turned into Prometheus samples only when
scraped, so counting a batch costs one searchsorted per feature and one bincount, never a
Python call per bin. Every bin exists (at zero) from the start: `increase()` over a window
then sees bins that stayed empty, which drift statistics need.
"""

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from modeldeploy import contract as c
from modeldeploy.profile_schema import ClassificationOutput, Profile
from modeldeploy.serving.bins import (
    Bins,
    CategoricalBins,
    NumericBinGroup,
    NumericBins,
    bucket_counts,
    feature_bins,
)

Column = Sequence[Any] | npt.NDArray[Any]  # one feature's values in a batch
LOCAL_REVISION = "local"
SHADOW_RESULTS = ("sent", "failed", "dropped")
# Codes pre-created at zero so that error-rate queries have series before the first error.
PRECREATED_CODES = ("200", "400", "500", "503")


@dataclass(frozen=True)
class Identity:
    """The labels on every series: which model, version and revision served."""

    model: str
    version: str
    revision: str

    @classmethod
    def resolve(
        cls,
        model: str,
        version: str,
        revision: str | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> "Identity":
        """The pod's environment (set by the operator) wins over the image's own values."""
        return cls(
            model=env.get(c.ENV_MODEL_NAME) or model,
            version=env.get(c.ENV_MODEL_VERSION) or version,
            revision=env.get(c.ENV_REVISION) or revision or LOCAL_REVISION,
        )

    def values(self) -> tuple[str, str, str]:
        return (self.model, self.version, self.revision)


@dataclass(frozen=True)
class _BinnedSeries:
    """A group of binned counters sharing one numpy array: one slice per key."""

    keys: tuple[str, ...]
    bins: tuple[Bins, ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def of(cls, items: Sequence[tuple[str, Bins]]) -> "_BinnedSeries":
        sizes = [len(b.labels) for _, b in items]
        offsets = tuple(int(o) for o in np.cumsum([0, *sizes])[:-1])
        return cls(tuple(k for k, _ in items), tuple(b for _, b in items), offsets, sum(sizes))


class Monitor:
    """Exports the metrics contract for one model revision into its own registry."""

    def __init__(
        self,
        profile: Profile,
        identity: Identity,
        *,
        invalid_reasons: Iterable[str] = (),
        enabled: bool = True,
        registry: CollectorRegistry | None = None,
        attributions: bool = False,
        fallback: bool = False,
    ) -> None:
        """With `attributions`, the attribution series exist (at zero) from the start.
        `fallback`: the model declares a low-confidence fallback (its rows are counted)."""
        self.profile = profile
        self.identity = identity
        self.enabled = enabled
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._features = _BinnedSeries.of([(f.name, feature_bins(f)) for f in profile.features])
        self._feature_counts = np.zeros(self._features.size, dtype=np.int64)
        series = self._features
        numeric = [
            (key, bins, offset)
            for key, bins, offset in zip(series.keys, series.bins, series.offsets, strict=True)
            if isinstance(bins, NumericBins)
        ]
        self._numeric_keys = tuple(key for key, _, _ in numeric)
        self._numeric_group = NumericBinGroup.of([bins for _, bins, _ in numeric])
        self._numeric_offsets = np.array([[offset] for _, _, offset in numeric], dtype=np.intp)
        self._categorical = [
            (key, bins, offset)
            for key, bins, offset in zip(series.keys, series.bins, series.offsets, strict=True)
            if isinstance(bins, CategoricalBins)
        ]
        self._baselines = [
            [f.baseline.get(label, 0.0) for label in bins.labels]
            for f, bins in zip(profile.features, self._features.bins, strict=True)
        ]
        output = profile.output
        self._output_bins: Bins = (
            CategoricalBins(tuple(output.classes))
            if isinstance(output, ClassificationOutput)
            else NumericBins(np.asarray(output.edges, dtype=np.float64))
        )
        self._output_counts = np.zeros(len(self._output_bins.labels), dtype=np.int64)
        self._confidence_counts = np.zeros(len(c.CONFIDENCE_BUCKETS) + 1, dtype=np.int64)
        self._confidence_sum = 0.0
        self._attributions = attributions
        # Per feature: sums of the positive and of the negative attributions' magnitudes.
        self._attribution_sums = np.zeros((2, len(profile.features)), dtype=np.float64)
        self._explained_rows = 0
        self._define_standard_metrics(tuple(invalid_reasons), fallback)
        self.registry.register(_BinCollector(self))

    def _define_standard_metrics(self, invalid_reasons: tuple[str, ...], fallback: bool) -> None:
        labels = list(c.IDENTITY_LABELS)
        ident = self.identity.values()
        requests = Counter(
            c.REQUESTS_TOTAL,
            "Inference requests by status code.",
            [*labels, c.LABEL_CODE],
            registry=self.registry,
        )
        invalid = Counter(
            c.INVALID_REQUESTS_TOTAL,
            "Inference requests rejected, by reason.",
            [*labels, c.LABEL_REASON],
            registry=self.registry,
        )
        shadow = Counter(
            c.SHADOW_REQUESTS_TOTAL,
            "Requests mirrored to the shadow, by result.",
            [*labels, c.LABEL_RESULT],
            registry=self.registry,
        )
        duration = Histogram(
            c.REQUEST_DURATION_SECONDS,
            "Inference request latency.",
            labels,
            buckets=c.LATENCY_BUCKETS,
            registry=self.registry,
        )
        golden = Counter(
            c.GOLDEN_CHECKS_TOTAL,
            "Golden requests replayed after warm-up, by result.",
            [*labels, c.LABEL_RESULT],
            registry=self.registry,
        )
        golden_duration = Histogram(
            c.GOLDEN_CHECK_DURATION_SECONDS,
            "Latency of golden requests replayed after warm-up.",
            labels,
            buckets=c.LATENCY_BUCKETS,
            registry=self.registry,
        )
        answered = Counter(
            c.ANSWERED_ROWS_TOTAL,
            "Rows of inference requests answered, by the model or its fallback rules.",
            [*labels, c.LABEL_ANSWERED_BY],
            registry=self.registry,
        )
        info = Gauge(
            c.MODEL_INFO, "The model revision this process serves.", labels, registry=self.registry
        )
        info.labels(*ident).set(1)
        self._requests = {code: requests.labels(*ident, code) for code in PRECREATED_CODES}
        self._requests_family = requests
        self._invalid = {r: invalid.labels(*ident, r) for r in invalid_reasons}
        self._invalid_family = invalid
        self._shadow = {r: shadow.labels(*ident, r) for r in SHADOW_RESULTS}
        self._duration = duration.labels(*ident)
        self._golden = {r: golden.labels(*ident, r) for r in c.GOLDEN_RESULTS}
        self._golden_duration = golden_duration.labels(*ident)
        self._by_model = answered.labels(*ident, c.ANSWERED_BY_MODEL)
        self._by_fallback = answered.labels(*ident, c.ANSWERED_BY_FALLBACK) if fallback else None

    # --- observations -------------------------------------------------------------------

    def observe_request(self, code: int, seconds: float) -> None:
        """One finished inference request: its status code and latency."""
        if not self.enabled:
            return
        key = str(code)
        child = self._requests.get(key)
        if child is None:
            child = self._requests.setdefault(
                key, self._requests_family.labels(*self.identity.values(), key)
            )
        child.inc()
        self._duration.observe(seconds)

    def observe_invalid(self, reason: str) -> None:
        """One rejected request (count its status with observe_request too)."""
        if not self.enabled:
            return
        child = self._invalid.get(reason)
        if child is None:
            child = self._invalid.setdefault(
                reason, self._invalid_family.labels(*self.identity.values(), reason)
            )
        child.inc()

    def observe_shadow(self, result: str) -> None:
        if self.enabled:
            self._shadow[result].inc()

    def observe_golden(self, result: str, seconds: float) -> None:
        """One golden request replayed (`contract.GOLDEN_RESULTS`), never a client's."""
        if self.enabled:
            self._golden[result].inc()
            self._golden_duration.observe(seconds)

    def observe_answered(self, rows: int, by_fallback: int = 0) -> None:
        """A request's `rows`, of which `by_fallback` the fallback rules answered."""
        if not self.enabled:
            return
        self._by_model.inc(rows - by_fallback)
        if self._by_fallback is not None:
            self._by_fallback.inc(by_fallback)
        elif by_fallback:
            raise ValueError("fallback rows counted by a monitor of a model without fallback")

    def observe_features(self, columns: Mapping[str, Column]) -> None:
        """A batch of model inputs, one column per feature (None/NaN = missing).

        A profiled feature absent from `columns` counts the whole batch as missing.
        """
        if not self.enabled or not columns:
            return
        rows = len(next(iter(columns.values())))
        parts = []
        if self._numeric_keys:
            matrix = np.full((len(self._numeric_keys), rows), np.nan)
            for i, key in enumerate(self._numeric_keys):
                column = columns.get(key)
                if column is not None:
                    matrix[i] = column
            parts.append((self._numeric_group.index(matrix) + self._numeric_offsets).ravel())
        for key, bins, offset in self._categorical:
            column = columns.get(key)
            if column is None:
                parts.append(np.full(rows, offset + len(bins.labels) - 1, dtype=np.intp))
            else:
                parts.append(bins.index(column) + offset)
        added = np.bincount(np.concatenate(parts), minlength=self._features.size)
        with self._lock:
            self._feature_counts += added

    def observe_predictions(
        self, outputs: npt.ArrayLike, confidence: npt.ArrayLike | None = None
    ) -> None:
        """A batch of predictions (class labels or values) and the predicted class's
        probability when the model has one."""
        if not self.enabled:
            return
        added = np.bincount(self._output_bins.index(outputs), minlength=self._output_counts.size)
        if confidence is None:
            with self._lock:
                self._output_counts += added
            return
        probabilities = np.asarray(confidence, dtype=np.float64)
        buckets = bucket_counts(c.CONFIDENCE_BUCKETS, probabilities)
        total = float(probabilities.sum())
        with self._lock:
            self._output_counts += added
            self._confidence_counts += buckets
            self._confidence_sum += total

    def observe_attributions(self, attributions: npt.NDArray[np.float64]) -> None:
        """A batch's attributions, rows x features in profile order (serving/explain.py)."""
        if not self.enabled or not self._attributions:
            return
        sums = np.stack(
            [
                np.clip(attributions, 0, None).sum(axis=0),
                -np.clip(attributions, None, 0).sum(axis=0),
            ]
        )
        with self._lock:
            self._attribution_sums += sums
            self._explained_rows += len(attributions)

    @contextmanager
    def time_request(self) -> Iterator["RequestTimer"]:
        """Times a request: `with monitor.time_request() as r: ...; r.code = 400`.
        An exception escaping the block counts as 500."""
        timer = RequestTimer()
        start = time.perf_counter()
        try:
            yield timer
        except BaseException:
            timer.code = 500
            raise
        finally:
            self.observe_request(timer.code, time.perf_counter() - start)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # --- collection ---------------------------------------------------------------------

    def _snapshot(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], float]:
        with self._lock:
            return (
                self._feature_counts.copy(),
                self._output_counts.copy(),
                self._confidence_counts.copy(),
                self._confidence_sum,
            )

    def _collect_bins(self) -> Iterator[Metric]:
        features, outputs, confidence, confidence_sum = self._snapshot()
        ident = list(self.identity.values())
        series = self._features
        bin_total = CounterMetricFamily(
            c.FEATURE_BIN_TOTAL,
            "Model inputs per feature bin (training deciles/categories).",
            labels=[*c.IDENTITY_LABELS, c.LABEL_FEATURE, c.LABEL_BIN],
        )
        baseline = GaugeMetricFamily(
            c.FEATURE_BASELINE_RATIO,
            "Share of training rows per feature bin.",
            labels=[*c.IDENTITY_LABELS, c.LABEL_FEATURE, c.LABEL_BIN],
        )
        for key, bins, offset, ratios in zip(
            series.keys, series.bins, series.offsets, self._baselines, strict=True
        ):
            for i, label in enumerate(bins.labels):
                bin_total.add_metric([*ident, key, label], float(features[offset + i]))
                baseline.add_metric([*ident, key, label], ratios[i])
        yield bin_total
        yield baseline
        predictions = CounterMetricFamily(
            c.PREDICTION_BIN_TOTAL,
            "Predictions per output bin (class or value decile).",
            labels=[*c.IDENTITY_LABELS, c.LABEL_OUTPUT, c.LABEL_BIN],
        )
        for label, count in zip(self._output_bins.labels, outputs.tolist(), strict=True):
            predictions.add_metric([*ident, self.profile.output.name, label], float(count))
        yield predictions
        if isinstance(self.profile.output, ClassificationOutput):
            cumulative = np.cumsum(confidence).tolist()
            bounds = [repr(float(b)) for b in c.CONFIDENCE_BUCKETS] + ["+Inf"]
            histogram = HistogramMetricFamily(
                c.PREDICTION_CONFIDENCE,
                "Probability of the predicted class.",
                labels=list(c.IDENTITY_LABELS),
            )
            histogram.add_metric(
                ident,
                list(zip(bounds, [float(v) for v in cumulative], strict=True)),
                sum_value=confidence_sum,
            )
            yield histogram
        if self._attributions:
            yield from self._collect_attributions()

    def _collect_attributions(self) -> Iterator[Metric]:
        with self._lock:
            sums, rows = self._attribution_sums.copy(), self._explained_rows
        ident = list(self.identity.values())
        labels = [*c.IDENTITY_LABELS, c.LABEL_FEATURE]
        parts = (
            (c.ATTRIBUTION_POSITIVE_TOTAL, "Sum of the positive feature attributions."),
            (c.ATTRIBUTION_NEGATIVE_TOTAL, "Sum of the negative attributions' magnitudes."),
        )
        for (name, help_text), totals in zip(parts, sums.tolist(), strict=True):
            family = CounterMetricFamily(name, help_text + " (sampled requests)", labels=labels)
            for feature, total in zip(self._features.keys, totals, strict=True):
                family.add_metric([*ident, feature], total)
            yield family
        explained = CounterMetricFamily(
            c.EXPLAINED_ROWS_TOTAL,
            "Rows whose attributions were counted.",
            labels=list(c.IDENTITY_LABELS),
        )
        explained.add_metric(ident, float(rows))
        yield explained


@dataclass
class RequestTimer:
    code: int = 200


class _BinCollector:
    """Turns the monitor's numpy counters into metric families at scrape time."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        return self._monitor._collect_bins()
