"""Serving-time preprocessing of the churn model; build.py copies it into the model dir.

Training applied `preprocess` to the training table before fitting, so serving applies the
same function before the model (model.yaml `preprocess: churn_features:preprocess`).

`preprocess_skewed` is the bug the rollout demo ships as a bad version: it treats monthly
charges that arrive in currency units as if they were cents and "converts" them, so the
model sees charges 100x larger than in training. That is training/serving skew: inputs
look fine to clients, but the features reaching the model no longer match the training
profile, which the runtime's feature bins expose.

`preprocess_slow` is a latency regression: the right features, but every request waits
`SLOW_SECONDS` first (say, a lookup that lost its cache). Warm-up still passes; the canary's
latency percentiles do not.

`preprocess_warming` is healthy but slow to start: the first call in a process waits
`WARMUP_SECONDS` (a cache filled on first use), so its pods turn Ready that much later; the
traffic tests use it for canaries that warm slowly.

`preprocess_turning` is healthy at first and turns into `preprocess_skewed` `TURN_SECONDS`
after the process' first call (its warm-up), `CHURN_TURN_SECONDS` in the environment, else
30: a model that degrades after start-up (a cache poisoned, a dependency drifting), which
only the golden requests replayed after warm-up catch.

`preprocess_erroring` is healthy through warm-up (its first `ERROR_AFTER_SECONDS` after the
process' first call, `CHURN_ERROR_AFTER_SECONDS` in the environment, else 3; warm-up takes
well under a second), then one call in `ERROR_EVERY` raises (a dependency that times out now
and then): the runtime answers those with a 500, the model's error, which the error-rate
check must roll back.
`rules` is the low-confidence fallback of the `floored` and `unsure` variants (model.yaml
`fallback.rules`): rows the model is unsure of get the retention team's old rule of thumb,
that new month-to-month customers and those who keep calling support churn. It is called
with the model's inputs (after `preprocess`) of those rows and answers as the model does.
"""

import itertools
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

CATEGORICAL = ("contract", "payment_method")
SLOW_SECONDS = 0.06
WARMUP_SECONDS = 8.0
TURN_SECONDS = float(os.environ.get("CHURN_TURN_SECONDS", "30"))
_filled = threading.Event()
_first_call: list[float] = []  # monotonic time of the process' first call (turning, erroring)
ERROR_EVERY = 10
ERROR_AFTER_SECONDS = float(os.environ.get("CHURN_ERROR_AFTER_SECONDS", "3"))
_calls = itertools.count(1)  # calls to erroring in this process (thread-safe in CPython)
Columns = Mapping[str, npt.NDArray[Any]]


def preprocess(columns: Columns) -> dict[str, npt.NDArray[Any]]:
    """Canonical category spelling ("One-Year " -> "one-year"); numbers pass through."""
    out = dict(columns)
    for name in CATEGORICAL:
        column = np.empty(len(columns[name]), dtype=object)
        column[:] = [None if v is None else str(v).strip().lower() for v in columns[name]]
        out[name] = column
    return out


def preprocess_skewed(columns: Columns) -> dict[str, npt.NDArray[Any]]:
    """Deliberately wrong: monthly_charges scaled by 100 (see the module docstring)."""
    out = preprocess(columns)
    out["monthly_charges"] = np.asarray(columns["monthly_charges"], dtype=np.float64) * 100.0
    return out


def preprocess_slow(columns: Columns) -> dict[str, npt.NDArray[Any]]:
    """Deliberately slow: the right features, `SLOW_SECONDS` late (see the module docstring)."""
    time.sleep(SLOW_SECONDS)
    return preprocess(columns)


def preprocess_warming(columns: Columns) -> dict[str, npt.NDArray[Any]]:
    """Healthy, but the process' first call waits `WARMUP_SECONDS` (see the module docstring)."""
    if not _filled.is_set():
        time.sleep(WARMUP_SECONDS)
        _filled.set()
    return preprocess(columns)


def preprocess_turning(columns: Columns) -> dict[str, npt.NDArray[Any]]:
    """Healthy, then skewed from `TURN_SECONDS` after the first call (see the module doc)."""
    if not _first_call:
        _first_call.append(time.monotonic())
    if time.monotonic() - _first_call[0] >= TURN_SECONDS:
        return preprocess_skewed(columns)
    return preprocess(columns)


def preprocess_erroring(columns: Columns) -> dict[str, npt.NDArray[Any]]:
    """Healthy through warm-up, then every `ERROR_EVERY`th call raises (module docstring)."""
    if not _first_call:
        _first_call.append(time.monotonic())
    call = next(_calls)
    if time.monotonic() - _first_call[0] >= ERROR_AFTER_SECONDS and call % ERROR_EVERY == 0:
        raise TimeoutError("churn_features: the charges lookup timed out")
    return preprocess(columns)


CLASSES = ("churn", "stay")  # the model's classes, in its probability order
RULE_CONFIDENCE = 0.7  # of a rule's answer: better than a coin, short of the model


def rules(columns: Columns) -> dict[str, Any]:
    """Churn for month-to-month customers of under a year and for 4 support calls or more."""
    tenure = np.asarray(columns["tenure_months"], dtype=np.float64)
    calls = np.asarray(columns["support_calls"], dtype=np.float64)
    monthly = np.asarray([c == "month-to-month" for c in columns["contract"]], dtype=bool)
    churn = (monthly & (tenure < 12)) | (calls >= 4)
    p_churn = np.where(churn, RULE_CONFIDENCE, 1 - RULE_CONFIDENCE)
    return {
        "values": np.where(churn, CLASSES[0], CLASSES[1]).astype(object),
        "probabilities": np.column_stack([p_churn, 1 - p_churn]),
        "classes": CLASSES,
    }
