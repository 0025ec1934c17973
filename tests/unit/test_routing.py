"""The traffic routers, each alone: the replica ratio (the `<name>` Service) and Gateway
API (the weights on the user's HTTPRoute)."""

import copy
from typing import Any

import pytest

from modeldeploy.api import Cohort
from modeldeploy.resources.names import (
    LABEL_FALLBACK,
    LABEL_NAME,
    LABEL_REVISION,
)
from modeldeploy.routing import RoutePatch, Split, router_for
from modeldeploy.routing.gateway_api import (
    GATEWAY_API,
    backend_weights,
    carried_weight,
    cohort_request_headers,
    managed_rules,
    observe_route,
    route_problem,
)
from modeldeploy.routing.replicas import REPLICAS

pytestmark = pytest.mark.unit

NAME = "churn"


def split(**overrides: Any) -> Split:
    fields: dict[str, Any] = {
        "name": NAME,
        "stable": "r1",
        "canary": "r2",
        "percent": 10,
        "stable_ready": 9,
        "canary_ready": 1,
        "carries": True,
        "carried": 10,
    }
    fields.update(overrides)
    return Split(**fields)


def only(revision: str) -> dict[str, str]:
    return {LABEL_NAME: NAME, LABEL_REVISION: revision}


def test_the_mode_chooses_the_router() -> None:
    assert router_for("replicas") is REPLICAS
    assert router_for("gatewayAPI") is GATEWAY_API


# --- replica ratio ---------------------------------------------------------------------


def test_replica_ratio_selects_both_revisions_while_the_canary_has_a_share() -> None:
    assert REPLICAS.client_selector(split()) == {LABEL_NAME: NAME}
    assert REPLICAS.effective_weight(split(), None) == 10  # 1 of 10 Ready endpoints
    assert REPLICAS.route_patch(split(), None) is None


def test_replica_ratio_keeps_the_stable_alone_without_a_share() -> None:
    for alone in (split(canary=None), split(percent=0), split(hold=True)):
        assert REPLICAS.client_selector(alone) == only("r1")
        assert REPLICAS.effective_weight(alone, None) == 0


def test_replica_ratio_full_step_moves_only_once_the_canary_carries_it() -> None:
    warming = split(percent=100, carries=False, canary_ready=1)
    assert REPLICAS.client_selector(warming) == {LABEL_NAME: NAME}
    carried = split(percent=100, carries=True, canary_ready=9)
    assert REPLICAS.client_selector(carried) == only("r2")
    assert REPLICAS.effective_weight(carried, None) == 100


def test_replica_ratio_kill_switch() -> None:
    assert REPLICAS.client_selector(split(killed=True, fallback=True)) == {LABEL_FALLBACK: NAME}
    assert REPLICAS.effective_weight(split(killed=True), None) == 0


def test_replica_ratio_sizing() -> None:
    assert REPLICAS.canary_replicas(9, 10, 10) == 1
    assert REPLICAS.canary_replicas(2, 10, 10) == 1  # 33%: coarse
    assert REPLICAS.planned_weight(2, 10, 10) == 33
    assert REPLICAS.canary_replicas(4, 50, 10) == 4


# --- Gateway API -----------------------------------------------------------------------


def user_route(*rules: dict[str, Any]) -> dict[str, Any]:
    """An HTTPRoute as the apiserver returns it (backendRefs defaulted: group, kind)."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "churn-route", "namespace": "ml"},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "hostnames": ["churn.example"],
            "rules": list(rules)
            or [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                    "backendRefs": [backend("churn-stable")],
                }
            ],
        },
    }


def backend(name: str, weight: int | None = None, **more: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": name, "port": 80, **more}
    if weight is not None:
        ref["weight"] = weight
    return ref


def patched(body: dict[str, Any], patch: RoutePatch) -> dict[str, Any]:
    """RFC 6902 `test` and `replace` on /spec/rules/<i>/backendRefs or /spec/rules, as the
    apiserver does."""
    result = copy.deepcopy(body)
    for op in patch.operations:
        *parents, field = op["path"].split("/")[1:]
        node: Any = result
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if op["op"] == "test":
            assert node.get(field) == op["value"], "the route changed since it was read"
        else:
            assert op["op"] == "replace"
            node[field] = copy.deepcopy(op["value"])
    return result


def weights(body: dict[str, Any], rule: int = 0) -> dict[str, int]:
    return {r["name"]: r["weight"] for r in body["spec"]["rules"][rule]["backendRefs"]}


def test_gateway_sets_the_exact_step_weight_and_reads_it_back() -> None:
    body = user_route()
    route = observe_route(body)
    assert route_problem(route, "churn-route", NAME) == ""
    patch = GATEWAY_API.route_patch(split(), route)
    assert patch is not None
    assert patch.name == "churn-route"
    after = patched(body, patch)
    assert weights(after) == {"churn-stable": 90, "churn-canary": 10}
    assert GATEWAY_API.effective_weight(split(), observe_route(after)) == 10
    # Everything but the backendRefs is the user's, as it was.
    assert after["spec"]["parentRefs"] == body["spec"]["parentRefs"]
    assert after["spec"]["rules"][0]["matches"] == body["spec"]["rules"][0]["matches"]
    # Nothing to write once it carries the weights.
    assert GATEWAY_API.route_patch(split(), observe_route(after)) is None
    half_split = split(percent=50, carried=50)
    half = patched(after, GATEWAY_API.route_patch(half_split, observe_route(after)))
    assert weights(half) == {"churn-stable": 50, "churn-canary": 50}


def test_gateway_keeps_the_share_carried_while_a_larger_step_warms_up() -> None:
    patch = GATEWAY_API.route_patch(split(percent=50, carries=False), observe_route(user_route()))
    assert patch is not None
    assert weights(patched(user_route(), patch)) == {"churn-stable": 90, "churn-canary": 10}


def test_gateway_routes_nothing_to_a_canary_that_cannot_carry_its_share() -> None:
    route = observe_route(user_route())
    for no_share in (
        split(carries=False, carried=0),
        split(killed=True),
        split(hold=True),
        split(canary=None),
        split(percent=0, carried=0),
    ):
        patch = GATEWAY_API.route_patch(no_share, route)
        assert patch is not None
        assert weights(patched(user_route(), patch)) == {"churn-stable": 100, "churn-canary": 0}


def test_gateway_keeps_the_users_backend_fields_and_other_rules() -> None:
    other = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [backend("static-site", 1)]}  # fmt: skip
    ours = {"backendRefs": [backend("churn-stable", 1, port=8080), backend("churn-canary", 0)]}
    body = user_route(other, ours)
    patch = GATEWAY_API.route_patch(split(percent=25, carried=25), observe_route(body))
    assert patch is not None
    assert {op["path"] for op in patch.operations} == {"/spec/rules/1/backendRefs"}
    after = patched(body, patch)
    assert after["spec"]["rules"][0] == other
    assert after["spec"]["rules"][1]["backendRefs"][0]["port"] == 8080
    assert weights(after, 1) == {"churn-stable": 75, "churn-canary": 25}


def test_gateway_leaves_a_route_alone_that_cannot_carry_exact_weights() -> None:
    assert "not found" in route_problem(None, "churn-route", NAME)
    unrelated = user_route({"backendRefs": [backend("web")]})
    assert "no rule" in route_problem(observe_route(unrelated), "churn-route", NAME)
    mixed = user_route({"backendRefs": [backend("churn-stable"), backend("legacy")]})
    assert "other backends" in route_problem(observe_route(mixed), "churn-route", NAME)
    for body in (unrelated, mixed):
        assert GATEWAY_API.route_patch(split(), observe_route(body)) is None
    assert GATEWAY_API.route_patch(split(), None) is None
    assert GATEWAY_API.effective_weight(split(), None) == 0
    # A Service of the same name in another namespace is not ours.
    elsewhere = user_route({"backendRefs": [backend("churn-stable", namespace="other")]})
    assert "no rule" in route_problem(observe_route(elsewhere), "churn-route", NAME)


def test_gateway_weight_unset_counts_as_the_apis_default_of_one() -> None:
    body = user_route({"backendRefs": [backend("churn-stable"), backend("churn-canary")]})
    assert carried_weight(observe_route(body), NAME) == 50
    assert backend_weights(observe_route(body), NAME) == (("churn-stable", 1), ("churn-canary", 1))
    assert backend_weights(None, NAME) == ()


def test_gateway_client_service_and_sizing_follow_the_load() -> None:
    assert GATEWAY_API.client_selector(split()) == only("r1")
    assert GATEWAY_API.client_selector(split(killed=True, fallback=True)) == {LABEL_FALLBACK: NAME}
    # The gateway sends exactly the weight: the canary gets pods for that share of the load.
    assert GATEWAY_API.canary_replicas(10, 10, 20) == 1
    assert GATEWAY_API.canary_replicas(10, 50, 20) == 5
    assert GATEWAY_API.canary_replicas(2, 5, 20) == 1
    assert GATEWAY_API.canary_replicas(10, 100, 20) == 10
    assert GATEWAY_API.canary_replicas(10, 0, 20) == 0
    assert GATEWAY_API.planned_weight(2, 5, 20) == 5  # never coarse


# --- Gateway API: the cohort phase ---------------------------------------------------------

HEADER = Cohort.model_validate({"header": {"name": "x-canary", "value": "true"}})
COOKIE = Cohort.model_validate({"cookie": {"name": "beta", "value": "1"}})
STATIC = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
          "backendRefs": [backend("static-site", 1)]}  # fmt: skip
WEIGHTED = {
    "name": "api",
    "matches": [
        {"path": {"type": "PathPrefix", "value": "/v2"}},
        {"path": {"type": "Exact", "value": "/infer"}, "method": "POST",
         "headers": [{"type": "Exact", "name": "x-tenant", "value": "acme"}]},
    ],
    "filters": [{"type": "RequestHeaderModifier",
                 "requestHeaderModifier": {"set": [{"name": "x-via", "value": "gw"}]}}],
    "backendRefs": [backend("churn-stable", 100, port=8080), backend("churn-canary", 0)],
}  # fmt: skip


def cohort_split(**overrides: Any) -> Split:
    return split(**{"percent": 0, "carried": 0, "cohort": HEADER, **overrides})


def test_the_cohort_rule_goes_before_the_weighted_one_with_the_canary_alone() -> None:
    body = user_route(STATIC, WEIGHTED)
    patch = GATEWAY_API.route_patch(cohort_split(), observe_route(body))
    assert patch is not None
    assert [op["path"] for op in patch.operations] == ["/spec/rules", "/spec/rules"]
    after = patched(body, patch)
    static, cohort, weighted = after["spec"]["rules"]
    assert static == STATIC  # the user's other rule, untouched
    assert weighted == WEIGHTED  # the default rule: all on the stable, as it was
    assert cohort["name"] == "modeldeploy-cohort-churn-0"
    assert cohort["backendRefs"] == [backend("churn-canary", 1)]
    assert cohort["filters"] == WEIGHTED["filters"]  # the user's filters apply to it too
    ours = {"type": "Exact", "name": "x-canary", "value": "true"}
    assert cohort["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/v2"}, "headers": [ours]},
        {**WEIGHTED["matches"][1], "headers": [*WEIGHTED["matches"][1]["headers"], ours]},
    ]
    route = observe_route(after)
    assert managed_rules(route, NAME) == (2,)  # the cohort rule carries no weights
    assert route_problem(route, "churn-route", NAME) == ""
    assert GATEWAY_API.effective_weight(cohort_split(), route) == 0
    assert GATEWAY_API.route_patch(cohort_split(), route) is None  # in place: no write


def test_a_cookie_cohort_matches_the_cookie_header_by_regular_expression() -> None:
    after = patched(user_route(), GATEWAY_API.route_patch(cohort_split(cohort=COOKIE),
                                                          observe_route(user_route())))  # fmt: skip
    (match,) = after["spec"]["rules"][0]["matches"]
    (header,) = match["headers"]
    assert header == {
        "type": "RegularExpression",
        "name": "Cookie",
        "value": r"(^|;\s*)beta=1(;|$)",
    }
    route = observe_route(after)
    assert cohort_request_headers(COOKIE) == {"Cookie": "beta=1"}
    assert backend_weights(route, NAME, {"cookie": "a=b; beta=1"}) == (("churn-canary", 1),)
    assert backend_weights(route, NAME, {"cookie": "beta=12"}) == (
        ("churn-stable", 100), ("churn-canary", 0))  # fmt: skip


def test_cohort_requests_reach_the_canary_and_the_others_the_weighted_rule() -> None:
    body = patched(
        user_route(), GATEWAY_API.route_patch(cohort_split(), observe_route(user_route()))
    )
    route = observe_route(body)
    default = (("churn-stable", 100), ("churn-canary", 0))
    assert backend_weights(route, NAME) == default
    assert backend_weights(route, NAME, {"X-Canary": "true"}) == (("churn-canary", 1),)
    assert backend_weights(route, NAME, {"x-canary": "false"}) == default
    assert cohort_request_headers(HEADER) == {"x-canary": "true"}


def test_no_cohort_rule_for_a_canary_that_cannot_serve_it() -> None:
    for none in (cohort_split(canary_ready=0), cohort_split(killed=True),
                 cohort_split(hold=True), cohort_split(canary=None)):  # fmt: skip
        patch = GATEWAY_API.route_patch(none, observe_route(user_route()))
        rules = (
            patched(user_route(), patch)["spec"]["rules"]
            if patch
            else user_route()["spec"]["rules"]
        )
        assert len(rules) == 1
        assert {r["name"] for r in rules[0]["backendRefs"]} <= {"churn-stable", "churn-canary"}


def test_leaving_the_cohort_phase_removes_its_rule_and_keeps_the_users() -> None:
    body = user_route(STATIC, WEIGHTED)
    during = patched(body, GATEWAY_API.route_patch(cohort_split(), observe_route(body)))
    assert len(during["spec"]["rules"]) == 3
    # The first weighted step: the rule goes and the weights move, in one patch.
    step = patched(during, GATEWAY_API.route_patch(split(), observe_route(during)))
    assert step["spec"]["rules"][0] == STATIC
    assert step["spec"]["rules"][1]["matches"] == WEIGHTED["matches"]
    assert weights(step, 1) == {"churn-stable": 90, "churn-canary": 10}
    assert len(step["spec"]["rules"]) == 2
    # A rollback (no canary) or a promotion (the canary is the stable now): the same.
    for ended in (split(canary=None, percent=0, carried=0), split(killed=True)):
        after = patched(during, GATEWAY_API.route_patch(ended, observe_route(during)))
        assert after["spec"]["rules"] == [STATIC, WEIGHTED]
