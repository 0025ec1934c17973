"""Replica-ratio traffic: how many canary pods give a requested share, and what share the
Ready pods actually give.

Without a mesh the client Service spreads requests evenly over Ready endpoints, so the
canary's share is its share of Ready pods.
"""

import math

from modeldeploy.api import Rollout


def canary_steps(rollout: Rollout) -> tuple[int, ...]:
    """Traffic percentages of the canary steps (empty for a shadow-only dark launch)."""
    canary = rollout.canary
    if canary.steps:
        return tuple(canary.steps)
    return (canary.percent,) if canary.percent else ()


def canary_replicas(stable_replicas: int, percent: int, maximum: int) -> int:
    """Canary pods for `percent` of the traffic next to `stable_replicas` stable pods:
    c / (s + c) = p / 100  =>  c = ceil(s * p / (100 - p)); at least 1 while p > 0; at 100
    the canary serves alone and gets as many pods as the stable has."""
    if percent <= 0:
        return 0
    stable = max(stable_replicas, 1)
    wanted = stable if percent >= 100 else math.ceil(stable * percent / (100 - percent))
    return max(1, min(wanted, maximum))


def shadow_replicas(stable_replicas: int, percent: int, maximum: int) -> int:
    """Canary pods for mirrored traffic: `percent` of the stable's load, at least 1."""
    return max(1, min(math.ceil(max(stable_replicas, 1) * percent / 100), maximum))


def effective_weight(stable_ready: int, canary_ready: int) -> int:
    """Percent of requests the canary serves when the Service selects both revisions."""
    total = stable_ready + canary_ready
    return round(100 * canary_ready / total) if total else 0


def replica_ratio_weight(stable_replicas: int, percent: int, maximum: int) -> int:
    """Percent of requests the canary will serve at a step of `percent` once its pods are
    Ready: the share the replica ratio can give (`effective_weight` of the planned counts)."""
    if percent >= 100:
        return 100
    canary = canary_replicas(stable_replicas, percent, maximum)
    return effective_weight(max(stable_replicas, 1), canary)


def stable_replicas_for(percent: int) -> int:
    """The fewest stable pods beside which one canary pod serves at most twice `percent`:
    1 / (s + 1) <= 2p / 100."""
    return max(1, math.ceil(100 / (2 * percent) - 1))
