"""Canary sizing: the steps a rollout asks for, and the pods for a share of the traffic.

The traffic arithmetic lives with the routers (`modeldeploy.routing`): the replica ratio's
in `routing.replicas`, the share of the stable's load (mirrored traffic, Gateway API
weights) in `routing.base`; re-exported here for the state machine and the report.
"""

from modeldeploy.api import Rollout
from modeldeploy.routing.base import load_replicas as shadow_replicas
from modeldeploy.routing.replicas import (
    canary_replicas,
    effective_weight,
    replica_ratio_weight,
    stable_replicas_for,
)

__all__ = [
    "canary_replicas",
    "canary_steps",
    "effective_weight",
    "replica_ratio_weight",
    "shadow_replicas",
    "stable_replicas_for",
]


def canary_steps(rollout: Rollout) -> tuple[int, ...]:
    """Traffic percentages of the canary steps (empty for a shadow-only dark launch)."""
    canary = rollout.canary
    if canary.steps:
        return tuple(canary.steps)
    return (canary.percent,) if canary.percent else ()
