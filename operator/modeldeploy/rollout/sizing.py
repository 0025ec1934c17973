"""The steps a rollout asks for. The traffic arithmetic lives with the routers
(`modeldeploy.routing`): the replica ratio's in `routing.replicas`, the share of the stable's
load (mirrored traffic, Gateway API weights) in `routing.base`.
"""

from modeldeploy.api import Rollout


def canary_steps(rollout: Rollout) -> tuple[int, ...]:
    """Traffic percentages of the canary steps (empty for a shadow-only dark launch)."""
    canary = rollout.canary
    if canary.steps:
        return tuple(canary.steps)
    return (canary.percent,) if canary.percent else ()
