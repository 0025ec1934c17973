"""A sampled log of predictions, one JSON object per line, for audits and later labelling.

    {"time": "2026-11-20T10:00:00.123+00:00", "model": "churn", "version": "1",
     "revision": "abc", "id": "42", "inputs": {"tenure_months": [3]},
     "outputs": {"label": ["churn"]}, "confidence": [0.91]}

Redacted names (inputs or outputs, e.g. personal data) are written as "[redacted]".
"""

import json
import random
import sys
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from modeldeploy.serving.config import PredictionLogConfig
from modeldeploy.serving.monitor import Identity
from modeldeploy.serving.pipeline import CONFIDENCE_OUTPUT

REDACTED = "[redacted]"


def log_record(
    identity: Identity,
    *,
    request_id: str | None,
    inputs: Mapping[str, list[Any]],
    outputs: Sequence[Mapping[str, Any]],
    redact: Collection[str],
    now: datetime,
) -> dict[str, Any]:
    """The JSON object logged for one request (pure)."""
    by_name = {o["name"]: o["data"] for o in outputs}
    confidence = by_name.pop(CONFIDENCE_OUTPUT, None)
    return {
        "time": now.isoformat(timespec="milliseconds"),
        "model": identity.model,
        "version": identity.version,
        "revision": identity.revision,
        "id": request_id,
        "inputs": {k: (REDACTED if k in redact else v) for k, v in inputs.items()},
        "outputs": {k: (REDACTED if k in redact else v) for k, v in by_name.items()},
        "confidence": REDACTED if CONFIDENCE_OUTPUT in redact else confidence,
    }


class PredictionLog:
    def __init__(
        self,
        stream: TextIO,
        identity: Identity,
        sample_rate: float,
        redact: Collection[str] = (),
        rng: random.Random | None = None,
    ) -> None:
        self._stream = stream
        self._identity = identity
        self._rate = sample_rate
        self._redact = frozenset(redact)
        self._random = (rng or random.Random()).random

    @classmethod
    def open(cls, config: PredictionLogConfig, identity: Identity) -> "PredictionLog | None":
        if config.path is None or config.sample_rate <= 0:
            return None
        stream = sys.stdout if config.path == "-" else open(config.path, "a", buffering=1)  # noqa: SIM115
        return cls(stream, identity, config.sample_rate, config.redact)

    def maybe_record(
        self,
        request_id: str | None,
        inputs: Mapping[str, list[Any]],
        outputs: Sequence[Mapping[str, Any]],
    ) -> None:
        if self._random() >= self._rate:
            return
        record = log_record(
            self._identity,
            request_id=request_id,
            inputs=inputs,
            outputs=outputs,
            redact=self._redact,
            now=datetime.now(UTC),
        )
        self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()
