"""Durations as people write them in a spec: `30s`, `2m`, `1h30m`.

Hours, minutes and seconds in that order, each at most once, whole numbers only. This is a
subset of Go's `time.ParseDuration` (so CEL's `duration()` reads the same strings) and of
Prometheus' range syntax.
"""

import re
from datetime import timedelta
from typing import Annotated

from pydantic import Field

from modeldeploy.api.base import Rule, cel_quote, full_match

DURATION_PATTERN = "^[0-9]{1,5}(h([0-9]{1,5}m)?([0-9]{1,5}s)?|m([0-9]{1,5}s)?|s)$"
DURATION_MAX_LENGTH = 20
_PARTS = re.compile(r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?")
_is_duration = full_match(DURATION_PATTERN)


def parse_duration(text: str) -> timedelta:
    """`"1h30m"` -> `timedelta(hours=1, minutes=30)`; ValueError on anything else."""
    if not _is_duration(text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 2m or 1h30m")
    parts = _PARTS.fullmatch(text)
    assert parts is not None  # the pattern above is stricter
    return timedelta(
        hours=int(parts["h"] or 0), minutes=int(parts["m"] or 0), seconds=int(parts["s"] or 0)
    )


def is_duration(text: str) -> bool:
    return _is_duration(text)


def cel_is_duration(expr: str) -> str:
    """CEL: `expr` (a string) is a duration in this format."""
    return f"{expr}.matches({cel_quote(DURATION_PATTERN)})"


def _is_positive_duration(text: str) -> bool:
    return _is_duration(text) and parse_duration(text) > timedelta(0)


_FORMAT_HELP = "such as 30s, 2m or 1h30m (whole hours, minutes, seconds in that order)"

Duration = Annotated[
    str,
    Field(max_length=DURATION_MAX_LENGTH),
    Rule(
        cel=cel_is_duration("self"),
        message=f"must be a duration {_FORMAT_HELP}",
        holds=_is_duration,
    ),
]
"""A duration that may be zero (`0s`)."""

PositiveDuration = Annotated[
    str,
    Field(max_length=DURATION_MAX_LENGTH),
    Rule(
        cel=f"{cel_is_duration('self')} && duration(self) > duration('0s')",
        message=f"must be a duration longer than 0s, {_FORMAT_HELP}",
        holds=_is_positive_duration,
    ),
]
"""A duration longer than zero."""


def cel_not_shorter(longer: str, shorter: str) -> str:
    """CEL: duration string `longer` >= duration string `shorter`.

    Malformed strings count as true here: their own field rule reports them, and `duration()`
    would otherwise fail the whole evaluation with an unreadable error.
    """
    return (
        f"!{cel_is_duration(longer)} || !{cel_is_duration(shorter)} || "
        f"duration({longer}) >= duration({shorter})"
    )
