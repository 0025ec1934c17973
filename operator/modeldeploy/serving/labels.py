"""Ground truth for earlier predictions: delayed labels, matched to what the model answered.

    POST /v2/models/{m}/labels
    {"labels": [{"id": "load-42", "index": 0, "label": "churn"}, ...]}

`id` is the V2 request id the client sent, or the one the runtime generated and returned in
the response's `id` when the client sent none; `index` is the row of that request's batch.
The runtime remembers the predictions of the last `limits.label_memory_rows` rows it
answered (whole requests, oldest forgotten first), in this process: a label is counted
where the prediction was made, so it must reach the pod that answered (a client that posts
through a load balancer to another pod gets it counted as `unknown`, never wrong).

Each label is scored once (`LabelOutcomes`): correct or wrong (a classifier's class equals
the label; a regressor's value within `labels.max_abs_error` of it), a confusion-matrix cell
of a classifier (`actual`, `predicted`; values outside the profile's classes are `other`),
a regressor's absolute error. A label that matches no remembered row is counted by why:
`unknown` (an id never seen or already forgotten), `out_of_range` (no such row in that
request), `duplicate` (the row was labelled before). None of these is an error: late
ground truth is normal. A malformed label request is the client's fault: a 4xx whose reason
(`protocol.Reason`) is counted in `invalid_label_requests_total`, not with the inference
requests' `invalid_requests_total` (the invalid-input-rate check compares those).
"""

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modeldeploy import contract as c
from modeldeploy.profile_schema import ClassificationOutput, Profile, RegressionOutput
from modeldeploy.serving.bins import category_label
from modeldeploy.serving.protocol import InvalidRequest, Reason, short_value

UNKNOWN: Final = "unknown"
OUT_OF_RANGE: Final = "out_of_range"
DUPLICATE: Final = "duplicate"
UNMATCHED_REASONS: Final = (UNKNOWN, OUT_OF_RANGE, DUPLICATE)
DEFAULT_TOLERANCE_SHARE: Final = 0.1
"""Without `labels.max_abs_error`, a regressor is correct within this share of the spread of
its training predictions (first to last decile edge)."""

Predicted = str | float  # a classifier's class (as its bin label) or a regressor's value


@dataclass(frozen=True)
class Unmatched:
    """Why a label matched no remembered prediction (one of UNMATCHED_REASONS)."""

    reason: str


@dataclass(frozen=True)
class LabelEntry:
    """One label of a label request: the true value of row `index` of request `id`."""

    id: str
    index: int
    label: str | float  # a class as its bin label, or a number


def _entry(position: int, item: Any, classification: bool) -> LabelEntry:
    where = f"labels[{position}]"
    if not isinstance(item, dict):
        raise InvalidRequest(Reason.BAD_LABEL, f"{where} must be an object with id, index, label")
    unknown = sorted(set(item) - {"id", "index", "label"})
    if unknown:
        named = ", ".join(short_value(name) for name in unknown[:3])
        raise InvalidRequest(Reason.BAD_LABEL, f"{where} has unknown field(s): {named}")
    request_id = item.get("id")
    if not isinstance(request_id, str):
        raise InvalidRequest(Reason.BAD_ID, f"{where}: 'id' must be the request's id (a string)")
    index = item.get("index", 0)
    if type(index) is not int or index < 0:
        raise InvalidRequest(
            Reason.BAD_LABEL_INDEX, f"{where}: 'index' must be a row number (0 or more)"
        )
    if "label" not in item:
        raise InvalidRequest(Reason.BAD_LABEL, f"{where} has no 'label'")
    label = item["label"]
    if classification:
        if type(label) not in (str, int, bool):
            raise InvalidRequest(
                Reason.BAD_LABEL_VALUE, f"{where}: 'label' must be a class (a string or integer)"
            )
        return LabelEntry(request_id, index, category_label(label))
    if type(label) not in (int, float) or not math.isfinite(label):
        raise InvalidRequest(Reason.BAD_LABEL_VALUE, f"{where}: 'label' must be a finite number")
    return LabelEntry(request_id, index, float(label))


def parse_labels(body: Any, *, classification: bool, max_labels: int) -> list[LabelEntry]:
    """A label request's labels, checked by type before use (pure)."""
    if not isinstance(body, dict):
        raise InvalidRequest(Reason.NOT_AN_OBJECT, "request body must be a JSON object")
    items = body.get("labels")
    if not isinstance(items, list) or not items:
        raise InvalidRequest(
            Reason.NO_LABELS, "'labels' must be a non-empty list of {id, index, label}"
        )
    if len(items) > max_labels:
        raise InvalidRequest(
            Reason.TOO_MANY_LABELS,
            f"{len(items)} labels exceed the limit {max_labels} (limits.label_memory_rows)",
        )
    return [_entry(position, item, classification) for position, item in enumerate(items)]


@dataclass
class _Remembered:
    predicted: tuple[Predicted, ...]
    labelled: bytearray = field(init=False)

    def __post_init__(self) -> None:
        self.labelled = bytearray(len(self.predicted))


class PredictionMemory:
    """The predictions of the last `max_rows` rows answered, by request id (thread-safe).
    Whole requests are forgotten, oldest first; a request larger than the memory is not
    remembered. A request id seen again replaces the earlier request (the latest wins)."""

    def __init__(self, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.max_rows = max_rows
        self._requests: OrderedDict[str, _Remembered] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()

    @property
    def rows(self) -> int:
        return self._rows

    def __len__(self) -> int:
        return len(self._requests)

    def remember(self, request_id: str, predicted: Sequence[Predicted]) -> None:
        if len(predicted) > self.max_rows:
            return
        with self._lock:
            earlier = self._requests.pop(request_id, None)
            if earlier is not None:
                self._rows -= len(earlier.predicted)
            self._requests[request_id] = _Remembered(tuple(predicted))
            self._rows += len(predicted)
            while self._rows > self.max_rows:
                _, oldest = self._requests.popitem(last=False)
                self._rows -= len(oldest.predicted)

    def take(self, request_id: str, index: int) -> Predicted | Unmatched:
        """The prediction of that row, marked labelled; else why not."""
        with self._lock:
            remembered = self._requests.get(request_id)
            if remembered is None:
                return Unmatched(UNKNOWN)
            if index >= len(remembered.predicted):
                return Unmatched(OUT_OF_RANGE)
            if remembered.labelled[index]:
                return Unmatched(DUPLICATE)
            remembered.labelled[index] = 1
            return remembered.predicted[index]


def regression_tolerance(output: RegressionOutput, max_abs_error: float | None) -> float:
    """The absolute error within which a regressor's value counts as correct: the model's
    setting, else a share of its training predictions' spread (1 when they have none: a
    constant model's scale is unknown)."""
    if max_abs_error is not None:
        return max_abs_error
    spread = output.edges[-1] - output.edges[0] if output.edges else 0.0
    return DEFAULT_TOLERANCE_SHARE * spread if spread > 0 else 1.0


@dataclass(frozen=True)
class Receipt:
    """What became of one label request's labels."""

    matched: int
    unmatched: dict[str, int]

    def payload(self) -> dict[str, Any]:
        return {"matched": self.matched, "unmatched": self.unmatched}


class LabelOutcomes:
    """Remembers predictions and scores labels into the contract's series, every label
    value pre-created at zero (so a revision without labels reads 0, not absent), beside the
    accuracy they are held against: the profile's holdout accuracy, when it has one."""

    def __init__(
        self,
        profile: Profile,
        identity: tuple[str, str, str],
        registry: CollectorRegistry,
        *,
        max_rows: int,
        max_abs_error: float | None = None,
        enabled: bool = True,
    ) -> None:
        self.memory = PredictionMemory(max_rows)
        self.enabled = enabled
        output = profile.output
        self.classification = isinstance(output, ClassificationOutput)
        labels = list(c.IDENTITY_LABELS)
        outcomes = Counter(
            c.LABELLED_TOTAL,
            "Labelled predictions by outcome (correct or wrong).",
            [*labels, c.LABEL_OUTCOME],
            registry=registry,
        )
        self._outcomes = {o: outcomes.labels(*identity, o) for o in c.LABEL_OUTCOMES}
        unmatched = Counter(
            c.LABELS_UNMATCHED_TOTAL,
            "Labels that matched no remembered prediction, by reason.",
            [*labels, c.LABEL_REASON],
            registry=registry,
        )
        self._unmatched = {r: unmatched.labels(*identity, r) for r in UNMATCHED_REASONS}
        invalid = Counter(
            c.INVALID_LABEL_REQUESTS_TOTAL,
            "Label requests rejected, by reason.",
            [*labels, c.LABEL_REASON],
            registry=registry,
        )
        self._invalid_family, self._identity = invalid, identity
        if profile.quality is not None:
            Gauge(
                c.HOLDOUT_ACCURACY,
                "Accuracy on the training holdout (profile), labels counted as here.",
                labels,
                registry=registry,
            ).labels(*identity).set(profile.quality.holdout_accuracy)
        if isinstance(output, ClassificationOutput):
            self.classes = frozenset(category_label(v) for v in output.classes)
            cells = [*sorted(self.classes), c.OTHER_BIN]
            confusion = Counter(
                c.LABEL_CONFUSION_TOTAL,
                "Labelled predictions by actual and predicted class.",
                [*labels, c.LABEL_ACTUAL, c.LABEL_PREDICTED],
                registry=registry,
            )
            self._confusion = {
                (a, p): confusion.labels(*identity, a, p) for a in cells for p in cells
            }
        else:
            self.tolerance = regression_tolerance(output, max_abs_error)
            self._errors = Histogram(
                c.LABEL_ABSOLUTE_ERROR,
                "Absolute error of labelled regression predictions.",
                labels,
                buckets=[m * self.tolerance for m in c.ABSOLUTE_ERROR_TOLERANCE_MULTIPLES],
                registry=registry,
            ).labels(*identity)

    def remember(self, request_id: str, predictions: npt.ArrayLike) -> None:
        """The predictions of one answered request (class labels or values)."""
        values = np.asarray(predictions).ravel().tolist()  # numpy scalars as Python ones
        if self.classification:
            self.memory.remember(request_id, [category_label(v) for v in values])
        else:
            self.memory.remember(request_id, [float(v) for v in values])

    def observe_invalid(self, reason: str) -> None:
        if self.enabled:
            self._invalid_family.labels(*self._identity, reason).inc()

    def receive(self, entries: Sequence[LabelEntry]) -> Receipt:
        """Scores each label against its remembered prediction."""
        matched = 0
        unmatched = dict.fromkeys(UNMATCHED_REASONS, 0)
        for entry in entries:
            predicted = self.memory.take(entry.id, entry.index)
            if isinstance(predicted, Unmatched):
                unmatched[predicted.reason] += 1
                if self.enabled:
                    self._unmatched[predicted.reason].inc()
                continue
            matched += 1
            if self.enabled:
                self._score(entry.label, predicted)
        return Receipt(matched, {r: n for r, n in unmatched.items() if n})

    def _score(self, label: str | float, predicted: Predicted) -> None:
        if self.classification:
            assert isinstance(label, str)
            assert isinstance(predicted, str)
            correct = label == predicted
            actual = label if label in self.classes else c.OTHER_BIN
            cell = predicted if predicted in self.classes else c.OTHER_BIN
            self._confusion[(actual, cell)].inc()
        else:
            assert isinstance(label, float)
            assert isinstance(predicted, float)
            error = abs(label - predicted)
            correct = error <= self.tolerance
            self._errors.observe(error)
        self._outcomes[c.OUTCOME_CORRECT if correct else c.OUTCOME_WRONG].inc()
