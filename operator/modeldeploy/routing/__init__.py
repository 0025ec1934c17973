"""Traffic routers: how a rollout's desired split reaches the clients, one module per
`spec.rollout.traffic.mode` (Flagger's `pkg/router` shape: one interface, one file per
provider).

    router = router_for(spec.rollout.traffic.mode)
    router.canary_replicas(stable_replicas, percent, maximum)   # pods for the share
    router.client_selector(split)                               # the `<name>` Service
    router.route_patch(split, observed_route)                   # the HTTPRoute's weights
    router.effective_weight(split, observed_route)              # what clients get now

Pure: the state machine hands over a `Split` (decided revisions, requested percent,
readiness) and what was observed; the routers return objects to write and weights.
"""

from modeldeploy.routing.base import Router, Split
from modeldeploy.routing.gateway_api import GATEWAY_API, ObservedRoute, RoutePatch
from modeldeploy.routing.replicas import REPLICAS

ROUTERS: dict[str, Router] = {"replicas": REPLICAS, "gatewayAPI": GATEWAY_API}


def router_for(mode: str) -> Router:
    """The router of `spec.rollout.traffic.mode` (the API allows only these)."""
    return ROUTERS[mode]


__all__ = ["ObservedRoute", "RoutePatch", "Router", "Split", "router_for"]
