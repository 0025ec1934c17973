"""Replica-ratio traffic (no mesh): the `<name>` Service selects the stable and the canary
pods together, and spreads requests evenly over Ready endpoints, so the canary's share is
its share of Ready pods.

A Service selector cannot OR two revisions: `{name}` (every revision) while a canary takes
a share, one revision otherwise; at a full step the canary alone, once it carries it all.
"""

import math

from modeldeploy.resources.names import fallback_selector, model_selector, revision_selector
from modeldeploy.routing.base import Split
from modeldeploy.routing.gateway_api import ObservedRoute, RoutePatch


def canary_replicas(stable_replicas: int, percent: int, maximum: int) -> int:
    """Canary pods for `percent` of the traffic next to `stable_replicas` stable pods:
    c / (s + c) = p / 100  =>  c = ceil(s * p / (100 - p)); at least 1 while p > 0; at 100
    the canary serves alone and gets as many pods as the stable has."""
    if percent <= 0:
        return 0
    stable = max(stable_replicas, 1)
    wanted = stable if percent >= 100 else math.ceil(stable * percent / (100 - percent))
    return max(1, min(wanted, maximum))


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


class ReplicaRouter:
    def canary_replicas(self, stable_replicas: int, percent: int, maximum: int) -> int:
        return canary_replicas(stable_replicas, percent, maximum)

    def planned_weight(self, stable_replicas: int, percent: int, maximum: int) -> int:
        return replica_ratio_weight(stable_replicas, percent, maximum)

    def client_selector(self, split: Split) -> dict[str, str]:
        name = split.name
        if split.killed and split.fallback:
            return fallback_selector(name)
        if split.hold or split.canary is None or split.percent <= 0:
            return revision_selector(name, split.stable)
        if split.percent >= 100 and split.carries:
            return revision_selector(name, split.canary)
        # A full step whose canary is still warming keeps the stable serving beside it.
        return model_selector(name)

    def route_patch(self, split: Split, route: ObservedRoute | None) -> RoutePatch | None:
        return None  # no route: the client Service is the split

    def effective_weight(self, split: Split, route: ObservedRoute | None) -> int:
        if split.canary is None or split.killed:
            return 0
        selector = self.client_selector(split)
        if selector == revision_selector(split.name, split.canary):
            return 100 if split.canary_ready else 0
        if selector == model_selector(split.name):
            return effective_weight(split.stable_ready, split.canary_ready)
        return 0


REPLICAS = ReplicaRouter()
