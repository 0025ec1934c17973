"""What the load generator sends and where (pure: rows, drift, request bodies, pod choice).

Rows come from a real data file (the example's held-out rows), typed by the model's
profile. Drift is injected per row: a numeric feature shifted by k training-data standard
deviations, a share of a feature's values set missing, a share of a categorical feature's
values replaced by a category never seen in training; a share of requests can be made
malformed (the runtime answers 400 and counts them). Ground truth: the rows' labels, read
from the same file, posted back after a delay to the pod that answered (`LabelQueue`); a
share of them can be made wrong (`wrong_labels`: ground truth turning against the model).
"""

import csv
import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy.devenv.endpoints import Endpoint
from modeldeploy.profile_schema import FeatureProfile
from modeldeploy.serving.protocol import input_tensor

Row = dict[str, Any]  # feature -> value; None = missing
UNSEEN_CATEGORY = "__unseen__"
MAX_ROWS = 100_000
MAX_SHIFT_SD = 20.0
MAX_PENDING_LABELS = 10_000  # rows whose labels wait for their delay; more are dropped

# --- rows ---------------------------------------------------------------------------------


def _parse(feature: FeatureProfile, text: str) -> Any:
    if text == "":
        return None
    if feature.type == "string":
        return text
    if feature.type == "bool":
        return text.strip().lower() in ("true", "1", "yes")
    number = float(text)
    return int(number) if feature.type == "int" and number.is_integer() else number


def read_rows(path: Path, features: Sequence[FeatureProfile], limit: int = MAX_ROWS) -> list[Row]:
    """The file's rows typed per the profile (other columns, e.g. the label, ignored)."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        absent = [f.name for f in features if f.name not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{path} lacks the model's input column(s): {', '.join(absent)}")
        rows: list[Row] = []
        for line, record in enumerate(reader, start=2):
            if len(rows) >= limit:
                break
            try:
                rows.append({f.name: _parse(f, record[f.name] or "") for f in features})
            except ValueError as err:
                raise ValueError(f"{path}:{line}: {err}") from err
    if not rows:
        raise ValueError(f"{path} has no data rows")
    return rows


def read_labels(
    path: Path, column: str, *, numeric: bool, limit: int = MAX_ROWS
) -> list[str | float]:
    """The file's `column`, row for row with `read_rows`: classes as text (the runtime
    compares classes by their text), or numbers for a regressor."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no label column {column!r}")
        labels: list[str | float] = []
        for line, record in enumerate(reader, start=2):
            if len(labels) >= limit:
                break
            text = record[column] or ""
            try:
                labels.append(float(text) if numeric else text)
            except ValueError as err:
                raise ValueError(f"{path}:{line}: label {text!r} is not a number") from err
    return labels


def wrong_labels(labels: Sequence[Any], share: float, seed: int = 0) -> list[Any]:
    """`labels` with a random `share` of them replaced by another value of the column (for
    two classes, the other one): the world no longer agreeing with what the model learnt.
    Deterministic for a seed."""
    if not 0 <= share <= 1:
        raise ValueError(f"the share of wrong labels must be in [0, 1], not {share}")
    values = sorted(set(labels), key=str)
    if share > 0 and len(values) < 2:
        raise ValueError("labels of a single value cannot be made wrong")
    rng = random.Random(seed)
    out = list(labels)
    for i, label in enumerate(out):
        if rng.random() < share:
            out[i] = rng.choice([v for v in values if v != label])
    return out


def sample_indices(rows: int, count: int, rng: random.Random) -> list[int]:
    """`count` row numbers drawn uniformly with replacement."""
    return [rng.randrange(rows) for _ in range(count)]


def sample_rows(rows: Sequence[Row], count: int, rng: random.Random) -> list[Row]:
    """`count` rows drawn uniformly with replacement (copies: drift may change them)."""
    return [dict(rows[i]) for i in sample_indices(len(rows), count, rng)]


# --- drift --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    shift: Mapping[str, float] = field(default_factory=dict)  # feature -> k std deviations
    missing: Mapping[str, float] = field(default_factory=dict)  # feature -> share missing
    unseen: Mapping[str, float] = field(default_factory=dict)  # feature -> share unseen
    malformed: float = 0.0  # share of requests the runtime must reject (400)

    def validate(self, features: Sequence[FeatureProfile]) -> None:
        by_name = {f.name: f for f in features}
        for kind, values in (("shift", self.shift), ("missing", self.missing),
                             ("unseen", self.unseen)):  # fmt: skip
            for name in values:
                if name not in by_name:
                    raise ValueError(f"{kind}: the model has no feature {name!r}")
        for name, k in self.shift.items():
            if not by_name[name].numeric:
                raise ValueError(f"shift: {name!r} is not numeric")
            if not abs(k) <= MAX_SHIFT_SD:
                raise ValueError(f"shift: {name}={k} beyond ±{MAX_SHIFT_SD} sd")
        for name in self.unseen:
            if by_name[name].type != "string":
                raise ValueError(f"unseen: {name!r} is not a categorical (string) feature")
        shares = [*self.missing.values(), *self.unseen.values(), self.malformed]
        if not all(0.0 <= share <= 1.0 for share in shares):
            raise ValueError("missing, unseen and malformed shares must be within 0..1")


def standard_deviations(rows: Sequence[Row], names: Sequence[str]) -> dict[str, float]:
    """Population standard deviation of each named feature over its present values."""
    result = {}
    for name in names:
        values = [float(r[name]) for r in rows if r.get(name) is not None]
        mean = sum(values) / len(values) if values else 0.0
        variance = sum((v - mean) ** 2 for v in values) / len(values) if values else 0.0
        result[name] = math.sqrt(variance)
    return result


class DriftInjector:
    def __init__(self, drift: Drift, features: Sequence[FeatureProfile], rows: Sequence[Row]):
        drift.validate(features)
        self.drift = drift
        self._int = {f.name for f in features if f.type == "int"}
        sds = standard_deviations(rows, list(drift.shift))
        self._offsets = {name: k * sds[name] for name, k in drift.shift.items()}

    def apply(self, row: Row, rng: random.Random) -> Row:
        drifted = dict(row)
        for name, offset in self._offsets.items():
            value = drifted[name]
            if value is not None:
                moved = float(value) + offset
                drifted[name] = round(moved) if name in self._int else moved
        for name, share in self.drift.unseen.items():
            if drifted[name] is not None and rng.random() < share:
                drifted[name] = UNSEEN_CATEGORY
        for name, share in self.drift.missing.items():
            if rng.random() < share:
                drifted[name] = None
        return drifted

    def malformed(self, rng: random.Random) -> bool:
        return self.drift.malformed > 0 and rng.random() < self.drift.malformed


# --- request bodies -----------------------------------------------------------------------


def infer_body(rows: Sequence[Row], features: Sequence[FeatureProfile], request_id: str) -> Row:
    """A V2 infer request: one tensor per feature, in the profile's order."""
    return {
        "id": request_id,
        "inputs": [input_tensor(f, [row[f.name] for row in rows]) for f in features],
    }


def malformed(body: Row) -> Row:
    """The same request with an impossible shape: the runtime answers 400 (bad_shape)."""
    inputs = [dict(tensor) for tensor in body["inputs"]]
    inputs[0]["shape"] = [-1]
    return {**body, "inputs": inputs}


def labels_body(request_id: str, labels: Sequence[Any]) -> Row:
    """A label request for every row of one answered request (serving/labels.py)."""
    return {
        "labels": [
            {"id": request_id, "index": index, "label": label} for index, label in enumerate(labels)
        ]
    }


class LabelQueue:
    """Labels of answered requests waiting `delay` seconds before they are posted back to
    the endpoint that answered (its pod remembers the prediction), at most `max_rows` rows
    waiting (pure: the caller tells the time)."""

    def __init__(self, delay: float, max_rows: int = MAX_PENDING_LABELS) -> None:
        self.delay = delay
        self.max_rows = max_rows
        self._waiting: deque[tuple[float, Endpoint, Row]] = deque()
        self._rows = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, now: float, endpoint: Endpoint, request_id: str, labels: Sequence[Any]) -> bool:
        """Queues the labels of one request; False (dropped) when too many wait already."""
        if self._rows + len(labels) > self.max_rows:
            return False
        self._waiting.append((now + self.delay, endpoint, labels_body(request_id, labels)))
        self._rows += len(labels)
        return True

    def due(self, now: float) -> list[tuple[Endpoint, Row]]:
        """The label requests whose delay is over, oldest first (they leave the queue)."""
        ready = []
        while self._waiting and self._waiting[0][0] <= now:
            _, endpoint, body = self._waiting.popleft()
            self._rows -= len(body["labels"])
            ready.append((endpoint, body))
        return ready


# --- where each request goes --------------------------------------------------------------

Router = Callable[[Sequence[Endpoint], random.Random], Endpoint | None]


def choose_uniform(endpoints: Sequence[Endpoint], rng: random.Random) -> Endpoint | None:
    """One Ready endpoint, uniformly: what kube-proxy does for a Service's endpoints."""
    return endpoints[rng.randrange(len(endpoints))] if endpoints else None


def choose_backend(
    backends: Sequence[tuple[int, Sequence[Endpoint]]], rng: random.Random
) -> Endpoint | None:
    """A backend by weight, as a gateway's data plane splits an HTTPRoute rule's weighted
    backendRefs (`(weight, Ready endpoints of its Service)`), then one of its endpoints
    uniformly. A backend chosen without Ready endpoints gives None: the gateway answers
    503 for its share, it does not spread it over the others. All weights 0: None."""
    weighted = [(weight, endpoints) for weight, endpoints in backends if weight > 0]
    if not weighted:
        return None
    (chosen,) = rng.choices([e for _, e in weighted], weights=[w for w, _ in weighted])
    return choose_uniform(chosen, rng)


def parse_assignments(values: Sequence[str], what: str) -> dict[str, float]:
    """`["monthly_charges=1.5", ...]` -> `{"monthly_charges": 1.5}` (command-line drift)."""
    parsed = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            parsed[name.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"{what}: expected FEATURE=NUMBER, got {value!r}")
    return parsed
