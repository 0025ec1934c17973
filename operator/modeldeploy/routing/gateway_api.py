"""Gateway API traffic: exact weights on the backendRefs of the user's HTTPRoute
(`spec.rollout.traffic.httpRoute`), between the `<name>-stable` and `<name>-canary`
Services.

The operator patches a route the user owns (as Argo Rollouts' Gateway API plugin does)
rather than creating its own (as Flagger does): the route's parentRefs, hostnames, matches
and filters are the user's (and their Gateway's) business, and the API names the route,
not a Gateway. It writes nothing but the `backendRefs` of the rules that already name one
of its two Services, and only when they differ. Not by server-side apply: `spec.rules` is
an atomic list in the Gateway API CRDs (`x-kubernetes-list-type: atomic`), so an applied
configuration could not hold one rule's backendRefs: it would take the whole rules list
(matches, filters, the other rules) from the user. A JSON patch instead, per managed rule
`test` (the backendRefs as read) + `replace`: a route changed since it was read is refused
whole, never overwritten; the next reconcile reads it again.

A rule that names one of the two Services must name no other backend (the weights would
not be exact): such a route, a missing route or one without such a rule is not written
and reported (`route_problem`).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeldeploy.resources.kinds import Kind
from modeldeploy.resources.names import (
    SERVICE_PORT,
    canary_name,
    fallback_selector,
    revision_selector,
    stable_name,
)
from modeldeploy.routing.base import Split, load_replicas

HTTP_ROUTE = Kind("HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes")
Body = dict[str, Any]


def route_of(model_deployment: Mapping[str, Any]) -> str | None:
    """The HTTPRoute a ModelDeployment (as stored) puts its weights on, if any."""
    traffic = ((model_deployment.get("spec") or {}).get("rollout") or {}).get("traffic") or {}
    route = traffic.get("httpRoute")
    return route if traffic.get("mode") == "gatewayAPI" and isinstance(route, str) else None


@dataclass(frozen=True)
class ObservedRoute:
    """The HTTPRoute named by the spec, as read."""

    name: str
    namespace: str
    rules: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class RoutePatch:
    """A JSON patch (RFC 6902) of the HTTPRoute `name`: `test` + `replace` per rule."""

    name: str
    operations: tuple[Body, ...]


def observe_route(body: Mapping[str, Any]) -> ObservedRoute:
    meta = body.get("metadata") or {}
    rules = (body.get("spec") or {}).get("rules") or []
    return ObservedRoute(
        str(meta.get("name", "")),
        str(meta.get("namespace", "")),
        tuple(r for r in rules if isinstance(r, Mapping)),
    )


def _service_ref(ref: Mapping[str, Any], route: ObservedRoute) -> str | None:
    """The name of the Service in the route's namespace that `ref` points at, if it does."""
    if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
        return None
    if ref.get("namespace", route.namespace) != route.namespace:
        return None
    name = ref.get("name")
    return name if isinstance(name, str) else None


def _refs(rule: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    refs = rule.get("backendRefs") or []
    return [r for r in refs if isinstance(r, Mapping)]


def managed_rules(route: ObservedRoute, name: str) -> tuple[int, ...]:
    """Indices of the rules whose backendRefs name `<name>-stable` or `<name>-canary`."""
    ours = {stable_name(name), canary_name(name)}
    return tuple(
        i
        for i, rule in enumerate(route.rules)
        if any(_service_ref(ref, route) in ours for ref in _refs(rule))
    )


def route_problem(route: ObservedRoute | None, route_name: str, name: str) -> str:
    """Why the operator cannot carry weights on the route ("" when it can)."""
    if route is None:
        return f"HTTPRoute {route_name} not found: traffic.mode gatewayAPI moves no traffic"
    managed = managed_rules(route, name)
    if not managed:
        return (
            f"HTTPRoute {route_name} has no rule with a backendRef to Service "
            f"{stable_name(name)}: the operator sets the weights of such rules only"
        )
    ours = {stable_name(name), canary_name(name)}
    for i in managed:
        others = [
            r.get("name") for r in _refs(route.rules[i]) if _service_ref(r, route) not in ours
        ]
        if others:
            return (
                f"HTTPRoute {route_name} rule {i} has other backends too ({others}): "
                "the weights would not be exact, the route is left alone"
            )
    return ""


def desired_refs(rule: Mapping[str, Any], name: str, canary_weight: int) -> list[Body]:
    """The rule's backendRefs carrying `canary_weight`: its own entries for the two Services
    (port, filters kept), each with its weight; a missing one added on the Service port."""
    existing = {r.get("name"): r for r in _refs(rule)}
    wanted = ((stable_name(name), 100 - canary_weight), (canary_name(name), canary_weight))
    default = {"group": "", "kind": "Service", "port": SERVICE_PORT}
    return [
        {**default, **existing.get(service, {}), "name": service, "weight": weight}
        for service, weight in wanted
    ]


def carried_weight(route: ObservedRoute | None, name: str) -> int:
    """The canary's percent of the first managed rule's weights (0 without one)."""
    weights = dict(backend_weights(route, name))
    total = sum(weights.values())
    return round(100 * weights.get(canary_name(name), 0) / total) if total else 0


def backend_weights(route: ObservedRoute | None, name: str) -> tuple[tuple[str, int], ...]:
    """(Service, weight) of the first managed rule: what a gateway splits that rule's
    requests by (the local load generator follows it)."""
    managed = managed_rules(route, name) if route is not None else ()
    if route is None or not managed:
        return ()
    return tuple((str(r.get("name")), _weight(r)) for r in _refs(route.rules[managed[0]]))


def _weight(ref: Mapping[str, Any]) -> int:
    weight = ref.get("weight", 1)  # the API's default
    return weight if isinstance(weight, int) and weight >= 0 else 0


class GatewayRouter:
    def canary_replicas(self, stable_replicas: int, percent: int, maximum: int) -> int:
        # The gateway sends exactly `percent` of the requests: the canary's pods follow
        # that load, not a ratio of endpoints.
        return load_replicas(stable_replicas, percent, maximum) if percent > 0 else 0

    def planned_weight(self, stable_replicas: int, percent: int, maximum: int) -> int:
        return percent

    def client_selector(self, split: Split) -> dict[str, str]:
        """`<name>` (in-cluster clients that bypass the gateway) keeps the stable."""
        if split.killed and split.fallback:
            return fallback_selector(split.name)
        return revision_selector(split.name, split.stable)

    def canary_weight(self, split: Split) -> int:
        """What the route should give the canary: the step's share once it carries it (an
        earlier step's while the pods for this one warm up)."""
        if split.canary is None or split.killed or split.hold:
            return 0
        return max(0, min(split.carried, 100))

    def route_patch(self, split: Split, route: ObservedRoute | None) -> RoutePatch | None:
        if route is None or route_problem(route, route.name, split.name):
            return None
        weight = self.canary_weight(split)
        operations: list[Body] = []
        for i in managed_rules(route, split.name):
            observed = [dict(r) for r in _refs(route.rules[i])]
            wanted = desired_refs(route.rules[i], split.name, weight)
            if wanted == observed:
                continue
            path = f"/spec/rules/{i}/backendRefs"
            observed_value = route.rules[i].get("backendRefs")
            operations += [
                {"op": "test", "path": path, "value": observed_value},
                {"op": "replace", "path": path, "value": wanted},
            ]
        return RoutePatch(route.name, tuple(operations)) if operations else None

    def effective_weight(self, split: Split, route: ObservedRoute | None) -> int:
        if split.canary is None:
            return 0
        return carried_weight(route, split.name)


GATEWAY_API = GatewayRouter()
