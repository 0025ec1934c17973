"""Durations in the spec: the format, the parser, and the field types built on them."""

from datetime import timedelta

import pytest
from pydantic import ValidationError

from modeldeploy.api import Analysis, Rollout, is_duration, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("30s", 30),
        ("90s", 90),
        ("2m", 120),
        ("5m30s", 330),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1h5s", 3605),
        ("2h15m10s", 8110),
        ("99999s", 99999),
    ],
)
def test_parses_hours_minutes_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert is_duration(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "30",  # no unit
        "m",  # no number
        "1.5h",  # fractions
        "-5s",  # negative
        "5ms",  # sub-second units
        "1d",  # days
        "1m1h",  # out of order
        "1h1h",  # repeated
        "5 m",  # spaces
        " 5m",
        "30s\n",  # trailing newline ($ in Python regexes would allow it; CEL's does not)
        "123456s",  # more than 5 digits
        "1H",
    ],
)
def test_rejects_everything_else(text: str) -> None:
    assert not is_duration(text)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_positive_durations_refuse_zero() -> None:
    with pytest.raises(ValidationError, match="must be a duration longer than 0s"):
        Analysis(interval="0s")
    with pytest.raises(ValidationError, match="must be a duration longer than 0s"):
        Analysis(window="0m0s")


def test_bake_time_may_be_zero_but_must_be_a_duration() -> None:
    assert Rollout(bake_time="0s").bake_time == "0s"
    with pytest.raises(ValidationError, match="must be a duration such as 30s, 2m or 1h30m"):
        Rollout(bake_time="10 minutes")


def test_cross_field_comparisons_use_parsed_values() -> None:
    # 90s is longer than 1m even though "90s" < "1m" as text.
    assert Analysis(interval="1m", window="90s").window == "90s"
    with pytest.raises(
        ValidationError, match=r"analysis\.window must be at least analysis\.interval"
    ):
        Analysis(interval="2m", window="90s")
