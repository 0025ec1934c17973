"""Replica-ratio traffic arithmetic."""

import pytest

from modeldeploy.api import Rollout
from modeldeploy.rollout.sizing import canary_steps
from modeldeploy.routing.base import load_replicas
from modeldeploy.routing.replicas import canary_replicas, effective_weight

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("stable", "percent", "expected"),
    [
        (2, 10, 1),  # at least one pod while the share is above 0
        (9, 10, 1),  # 1 / (9 + 1) = 10%
        (10, 10, 2),  # ceil(10 * 10 / 90) = 2
        (4, 50, 4),
        (3, 25, 1),
        (4, 75, 10),  # capped by the maximum below
        (5, 100, 5),  # alone at 100: as many as the stable
        (5, 0, 0),
    ],
)
def test_canary_replicas(stable: int, percent: int, expected: int) -> None:
    assert canary_replicas(stable, percent, maximum=10) == expected


def test_canary_replicas_capped_by_maximum() -> None:
    assert canary_replicas(10, 90, maximum=10) == 10


def test_load_replicas_for_mirrored_traffic() -> None:
    assert load_replicas(2, 10, 10) == 1
    assert load_replicas(10, 50, 10) == 5
    assert load_replicas(0, 50, 10) == 1


@pytest.mark.parametrize(
    ("stable", "canary", "weight"), [(9, 1, 10), (2, 1, 33), (0, 0, 0), (0, 2, 100), (3, 0, 0)]
)
def test_effective_weight(stable: int, canary: int, weight: int) -> None:
    assert effective_weight(stable, canary) == weight


def test_canary_steps() -> None:
    assert canary_steps(Rollout()) == (10,)
    assert canary_steps(Rollout.model_validate({"canary": {"steps": [1, 5, 50]}})) == (1, 5, 50)
    dark = Rollout.model_validate({"canary": {"percent": 0}, "shadow": {"percent": 10}})
    assert canary_steps(dark) == ()
