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

A cohort phase (`rollout.canary.cohort`) adds rules of the operator's own: in front of each
weighted rule, a copy of it (its matches, filters and other fields) whose every match also
asks for the cohort's header (or Cookie), and whose only backend is `<name>-canary`. More
header matches on the same path win in Gateway API's precedence, so the cohort reaches the
canary alone while everyone else keeps the weighted rule (all on the stable). Such a rule is
recognised by what no user rule can be: its backends name `<name>-canary` alone (the
operator's Service, of whichever revision is the canary); it is also named
`modeldeploy-cohort-<name>-<i>` for people and policies. Adding or removing them is one
`test` + `replace` of the whole `spec.rules` (the rules as read, refused whole when they
changed since); the user's rules come back as they were.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeldeploy.api import Cohort
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


def is_cohort_rule(rule: Mapping[str, Any], route: ObservedRoute, name: str) -> bool:
    """The operator's own cohort rule: every backend is `<name>-canary`."""
    refs = _refs(rule)
    return bool(refs) and all(_service_ref(ref, route) == canary_name(name) for ref in refs)


def managed_rules(route: ObservedRoute, name: str) -> tuple[int, ...]:
    """Indices of the weighted rules: those whose backendRefs name `<name>-stable` or
    `<name>-canary` (the cohort rules aside)."""
    ours = {stable_name(name), canary_name(name)}
    return tuple(
        i
        for i, rule in enumerate(route.rules)
        if any(_service_ref(ref, route) in ours for ref in _refs(rule))
        and not is_cohort_rule(rule, route, name)
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


DEFAULT_MATCH: Body = {"path": {"type": "PathPrefix", "value": "/"}}
"""What a rule without matches matches (the API's default)."""


def cohort_header(cohort: Cohort) -> Body:
    """The HTTPHeaderMatch that selects the cohort: the header, exactly; a cookie as a
    RegularExpression on the Cookie header (Gateway API has no cookie match)."""
    if cohort.header is not None:
        return {"type": "Exact", "name": cohort.header.name, "value": cohort.header.value}
    assert cohort.cookie is not None
    cookie = f"{re.escape(cohort.cookie.name)}={re.escape(cohort.cookie.value)}"
    return {"type": "RegularExpression", "name": "Cookie", "value": f"(^|;\\s*){cookie}(;|$)"}


def cohort_request_headers(cohort: Cohort) -> dict[str, str]:
    """The headers of a request in the cohort (what a client of it sends)."""
    if cohort.header is not None:
        return {cohort.header.name: cohort.header.value}
    assert cohort.cookie is not None
    return {"Cookie": f"{cohort.cookie.name}={cohort.cookie.value}"}


def cohort_rule_name(name: str, index: int) -> str:
    return f"modeldeploy-cohort-{name}-{index}"


def cohort_rule(rule: Mapping[str, Any], name: str, cohort: Cohort, index: int) -> Body:
    """The cohort's copy of the weighted `rule`: each of its matches (the API's default when
    it has none) also asks for the cohort's header, which replaces one of the same name;
    its only backend is `<name>-canary` (the weighted rule's entry for it, or the Service
    port)."""
    header = cohort_header(cohort)
    matches = []
    for match in rule.get("matches") or [DEFAULT_MATCH]:
        same = str(header["name"]).lower()
        headers = [h for h in match.get("headers") or [] if str(h.get("name", "")).lower() != same]
        matches.append({**match, "headers": [*headers, header]})
    existing = next((r for r in _refs(rule) if r.get("name") == canary_name(name)), {})
    default = {"group": "", "kind": "Service", "port": SERVICE_PORT}
    ref = {**default, **existing, "name": canary_name(name), "weight": 1}
    return {
        **rule,
        "name": cohort_rule_name(name, index),
        "matches": matches,
        "backendRefs": [ref],
    }


def desired_rules(
    route: ObservedRoute, name: str, canary_weight: int, cohort: Cohort | None
) -> list[Body]:
    """The route's rules as `canary_weight` and `cohort` want them: the weighted rules with
    their weights, each preceded by its cohort rule during a cohort phase; earlier cohort
    rules dropped; every other rule as it is."""
    managed = managed_rules(route, name)
    rules: list[Body] = []
    for i, rule in enumerate(route.rules):
        if is_cohort_rule(rule, route, name):
            continue
        if i not in managed:
            rules.append(dict(rule))
            continue
        if cohort is not None:
            rules.append(cohort_rule(rule, name, cohort, managed.index(i)))
        rules.append({**rule, "backendRefs": desired_refs(rule, name, canary_weight)})
    return rules


def carried_weight(route: ObservedRoute | None, name: str) -> int:
    """The canary's percent of the first managed rule's weights (0 without one)."""
    weights = dict(backend_weights(route, name))
    total = sum(weights.values())
    return round(100 * weights.get(canary_name(name), 0) / total) if total else 0


def backend_weights(
    route: ObservedRoute | None, name: str, headers: Mapping[str, str] | None = None
) -> tuple[tuple[str, int], ...]:
    """(Service, weight) of the rule a gateway picks for a request with `headers`: a cohort
    rule one of whose matches' headers it carries, else the first weighted rule (what a
    gateway splits that rule's requests by; the local load generator follows it)."""
    if route is None:
        return ()
    cohorts = [r for r in route.rules if is_cohort_rule(r, route, name)]
    chosen = next((r for r in cohorts if _matches_headers(r, headers or {})), None)
    if chosen is None:
        managed = managed_rules(route, name)
        if not managed:
            return ()
        chosen = route.rules[managed[0]]
    return tuple((str(r.get("name")), _weight(r)) for r in _refs(chosen))


def _matches_headers(rule: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """Some match of `rule` asks only for headers that `headers` has (names in any case;
    paths and methods aside: the load generator sends the rule's own requests)."""
    sent = {k.lower(): v for k, v in headers.items()}
    return any(
        all(_header_holds(h, sent) for h in match.get("headers") or [])
        for match in rule.get("matches") or [DEFAULT_MATCH]
    )


def _header_holds(match: Mapping[str, Any], sent: Mapping[str, str]) -> bool:
    value = sent.get(str(match.get("name", "")).lower())
    if value is None:
        return False
    if match.get("type", "Exact") == "RegularExpression":
        return re.search(str(match.get("value", "")), value) is not None
    return value == match.get("value")


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

    def cohort(self, split: Split) -> Cohort | None:
        """The cohort the route sends to the canary alone: in the cohort phase, once the
        canary has a Ready pod (a gateway would answer the cohort 503 before)."""
        if split.cohort is None or split.canary is None or split.killed or split.hold:
            return None
        return split.cohort if split.canary_ready > 0 else None

    def route_patch(self, split: Split, route: ObservedRoute | None) -> RoutePatch | None:
        if route is None or route_problem(route, route.name, split.name):
            return None
        wanted = desired_rules(route, split.name, self.canary_weight(split), self.cohort(split))
        observed = [dict(rule) for rule in route.rules]
        if wanted == observed:
            return None
        if not _same_but_backends(wanted, observed):
            return RoutePatch(route.name, (
                {"op": "test", "path": "/spec/rules", "value": observed},
                {"op": "replace", "path": "/spec/rules", "value": wanted},
            ))  # fmt: skip
        operations: list[Body] = []
        for i, (rule, seen) in enumerate(zip(wanted, observed, strict=True)):
            if rule == seen:
                continue
            path = f"/spec/rules/{i}/backendRefs"
            operations += [
                {"op": "test", "path": path, "value": seen.get("backendRefs")},
                {"op": "replace", "path": path, "value": rule["backendRefs"]},
            ]
        return RoutePatch(route.name, tuple(operations))

    def effective_weight(self, split: Split, route: ObservedRoute | None) -> int:
        if split.canary is None:
            return 0
        return carried_weight(route, split.name)


def _same_but_backends(wanted: list[Body], observed: list[Body]) -> bool:
    """The same rules but for their backendRefs (a weight change only)."""

    def rest(rule: Body) -> Body:
        return {k: v for k, v in rule.items() if k != "backendRefs"}

    return len(wanted) == len(observed) and all(
        rest(a) == rest(b) for a, b in zip(wanted, observed, strict=True)
    )


GATEWAY_API = GatewayRouter()
