"""A cohort-first rollout (`rollout.canary.cohort`) with traffic.mode gatewayAPI, on a real
control plane with the official Gateway API CRDs, the real operator, real model servers
behind kwok pods and the session Prometheus: client traffic goes through the user's
HTTPRoute as a gateway's data plane routes it (the load generator reads the route), a share
of it with the cohort's header.

- The cohort phase: a rule of the operator's appears in front of the user's, with the
  canary as its only backend; cohort requests reach only the canary, all others only the
  stable. Its analysis runs the canary's own checks and defers those against the stable.
- Then the weighted steps (the rule gone, the weights moving, prediction drift against the
  stable judged again), and the promotion.
- A canary whose preprocessing skews a feature fails its own feature drift in the cohort
  phase: the reconcile that rolls it back removes the rule and sets the weight 0.

No Gateway controller runs: the route's spec is the contract, followed by the load
generator (`routing.gateway_api.backend_weights`). Only 127.0.0.1 is ever dialled.
"""

import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from random import Random
from typing import Any

import pytest
from analysis_stack import (
    ANALYSIS,
    NAME,
    ROLLOUT,
    SKEWED,
    V1,
    V3,
    AnalysisStack,
    Sample,
    printed_section,
)
from operator_harness import apply_object, wait_for

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.endpoints import Endpoint
from modeldeploy.devenv.loadgen import CohortLoad, LoadSpec, RouteSource, run_load
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.traffic import Router
from modeldeploy.routing.gateway_api import backend_weights, observe_route

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "gateway-cohort"
ROUTE = "churn-route"
COHORT_HEADERS = {"x-canary": "true"}
COHORT_RULE = f"modeldeploy-cohort-{NAME}-0"
MATCHES = [{"path": {"type": "PathPrefix", "value": "/v2"}}]
RATE = 30.0
SHARE = 0.3  # of the requests carry the cohort's header
REFRESH = 0.5  # seconds between the load generator's reads of the route
# Latency is judged (and must pass) but with room, as in test_analysis_promotion.
ROOMY = {**ANALYSIS, "latency": {"p95Ms": 1000}}
TRAFFIC = {"mode": "gatewayAPI", "httpRoute": ROUTE}
COHORT_ROLLOUT = {
    **ROLLOUT,
    "traffic": TRAFFIC,
    "canary": {"steps": [25, 50], "cohort": {"header": {"name": "x-canary", "value": "true"}}},
}
Body = dict[str, Any]


def user_route() -> Body:
    """The user's route: their Gateway, hostname and matches; one backend, the stable."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["churn.example"],
            "rules": [
                {"name": "api", "matches": MATCHES,
                 "backendRefs": [{"name": f"{NAME}-stable", "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                 "backendRefs": [{"name": "static-site", "port": 80}]},
            ],
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with AnalysisStack(
        kube, prometheus.url, prometheus.targets_dir, NAMESPACE, workdir,
        operator_args=["--watch-http-routes"],
    ) as s:  # fmt: skip
        apply_object(kube, user_route())
        s.deploy(V1, "1", rollout=COHORT_ROLLOUT, analysis=ROOMY)
        s.wait_stable()
        yield s


def route(stack: AnalysisStack) -> Body:
    path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/httproutes/{ROUTE}"
    body: Body = stack.reader.api.get(path)
    return body


def names_of_rules(body: Body) -> list[str]:
    return [str(rule.get("name", "")) for rule in body["spec"]["rules"]]


def rule_names(stack: AnalysisStack) -> list[str]:
    return names_of_rules(route(stack))


class GatewayTraffic:
    """Bounded client load through the HTTPRoute, in a thread: `SHARE` of the requests with
    the cohort's header, each routed by the rule it matches. Notes every request's time,
    revision and whether it carried the header."""

    def __init__(self, stack: AnalysisStack, seed: int = 0, duration: float = 600.0) -> None:
        template = stack.traffic(RATE)  # the held-out rows and features (not started)
        self.rows, self.features = template.rows, template.features
        self.stack, self.seed, self.duration = stack, seed, duration
        # (time, revision, with the header, the cohort rule in the route it was routed by)
        self.sent: list[tuple[float, str | None, bool, bool]] = []
        self._rule_read = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="gateway-load")

    def weights(self, headers: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
        body = route(self.stack)
        # Read by the generator's thread only, right before it routes by this read.
        self._rule_read = COHORT_RULE in names_of_rules(body)
        return backend_weights(observe_route(body), NAME, headers)

    def _noted(self, router: Router, cohort: bool) -> Router:
        def noted(endpoints: Sequence[Endpoint], rng: Random) -> Endpoint | None:
            chosen = router(endpoints, rng)
            with self._lock:
                revision = chosen.revision if chosen else None
                self.sent.append((time.monotonic(), revision, cohort, self._rule_read))
            return chosen

        return noted

    def _run(self) -> None:
        source = RouteSource(
            self.stack.runner.endpoints_path, NAMESPACE, self.weights,
            cohort=COHORT_HEADERS, refresh=REFRESH,
        )  # fmt: skip
        spec = LoadSpec(RATE, int(RATE * self.duration), self.duration, seed=self.seed)
        cohort = CohortLoad(COHORT_HEADERS, SHARE, self._noted(source.choose_cohort, True))
        self.report = run_load(
            spec, self.rows, self.features, source,
            router=self._noted(source.choose, False), cohort=cohort, stop=self._stop,
        )  # fmt: skip

    def between(self, start: float, end: float, cohort: bool) -> Counter[str | None]:
        """Requests noted in [start, end) by revision, with or without the header, routed by
        a read of the route that had the cohort rule: the timeline sees the first step's
        status after the reconcile rewrote the route, so the rule may be gone before `end`."""
        with self._lock:
            return Counter(
                r for t, r, c, ruled in self.sent if start <= t < end and c == cohort and ruled
            )

    @contextmanager
    def running(self) -> Iterator["GatewayTraffic"]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)


def without_backends(rule: Body) -> Body:
    return {k: v for k, v in rule.items() if k != "backendRefs"}


def assert_cohort_rule(stack: AnalysisStack, before: list[Body]) -> None:
    """The cohort rule in front of the user's, the canary its only backend; the user's rules
    as they were, their weights all on the stable."""
    assert rule_names(stack) == [COHORT_RULE, "api", ""]
    ours, theirs, static = route(stack)["spec"]["rules"]
    assert [r["name"] for r in ours["backendRefs"]] == [f"{NAME}-canary"]
    assert ours["matches"][0]["path"] == MATCHES[0]["path"]
    assert {"type": "Exact", "name": "x-canary", "value": "true"} in ours["matches"][0]["headers"]
    assert {r["name"]: r["weight"] for r in theirs["backendRefs"]} == {
        f"{NAME}-stable": 100, f"{NAME}-canary": 0}  # fmt: skip
    assert static == before[1]  # the user's other rule, untouched
    assert without_backends(theirs) == without_backends(before[0])


def like_with_like(stack: AnalysisStack, samples: list[Sample], canary: str) -> str:
    """The cohort's rounds had no check against the stable, and said why; the weighted
    steps' rounds judged prediction drift against the stable again. Returns a cohort
    round's reason."""
    in_cohort = [s for s in samples if s.status.get("cohort") and s.analysed(canary)]
    weighted = [s for s in samples if s.step is not None and s.analysed(canary, "pass")]
    assert in_cohort
    assert weighted

    def kinds(sample: Sample) -> set[str]:
        return {name.split("/")[0] for name in sample.checks()}

    assert all("prediction-psi" not in kinds(s) for s in in_cohort)
    assert all("feature-psi" in kinds(s) for s in in_cohort)
    assert "prediction-psi" in kinds(weighted[-1])
    deferred = stack.messages("AnalysisPassed", canary, "wait for the weighted steps")
    return f"cohort round: {deferred[0]}"


def test_the_cohort_first_then_the_weighted_steps_then_promotion(stack: AnalysisStack) -> None:
    old = stack.status()["stableRevision"]
    assert rule_names(stack) == ["api", ""]  # no cohort rule without a rollout
    before = route(stack)["spec"]["rules"]
    load = GatewayTraffic(stack)
    with (
        printed_section("cohort-first rollout") as lines,
        stack.timeline() as timeline,
        load.running(),
    ):
        stack.deploy(V3, "3", rollout=COHORT_ROLLOUT, analysis=ROOMY)
        cohort = timeline.wait(
            lambda s: s.status.get("cohort") is not None, timeout=60, what="cohort phase"
        )
        canary = cohort.canary
        assert canary is not None
        assert canary != old
        assert cohort.status["cohort"] == "header x-canary=true"
        assert cohort.step is None
        # The rule appears once the canary has a Ready pod, in front of the user's rule.
        wait_for(lambda: COHORT_RULE in rule_names(stack), timeout=120, what="the cohort rule")
        seen = time.monotonic()
        assert_cohort_rule(stack, before)
        stepped = timeline.wait(lambda s: s.step == 0, timeout=180, what="the first step")
        # While the rule stood (after the load generator's next reads of it): the cohort's
        # requests went to the canary only, everyone else's to the stable only.
        start = seen + 2 * REFRESH
        to_canary = load.between(start, stepped.t, cohort=True)
        to_stable = load.between(start, stepped.t, cohort=False)
        lines.append(f"cohort phase: cohort requests {dict(to_canary)}, others {dict(to_stable)}")
        assert set(to_canary) == {canary}, to_canary
        assert set(to_stable) == {old}, to_stable
        assert to_canary[canary] >= 50
        # The weighted steps: the rule gone, the weights on the user's rule.
        wait_for(lambda: rule_names(stack) == ["api", ""], timeout=15, what="the rule removed")
        promoted = timeline.wait(
            lambda s: s.stable == canary and s.phase == "Stable", timeout=300, what="promotion"
        )
    samples = [s for s in timeline.snapshot() if canary in (s.canary, s.stable)]
    steps = [s.step for s in samples if s.step is not None]
    weights = sorted({s.weight for s in samples})
    print(f"steps {sorted(set(steps))}, weights {weights}")
    assert sorted(set(steps)) == [0, 1]
    assert {25, 50} <= set(weights), weights
    assert promoted.stable == canary
    print(like_with_like(stack, samples, canary))
    assert route(stack)["spec"]["rules"][1] == before[1]
    weights_now = {r["name"]: r["weight"] for r in route(stack)["spec"]["rules"][0]["backendRefs"]}
    assert weights_now == {f"{NAME}-stable": 100, f"{NAME}-canary": 0}


def test_a_rollback_in_the_cohort_phase_removes_the_rule_in_one_reconcile(
    stack: AnalysisStack,
) -> None:
    stable = stack.status()["stableRevision"]
    load = GatewayTraffic(stack, seed=1)
    with (
        printed_section("cohort rollback"),
        stack.timeline() as timeline,
        load.running(),
    ):
        stack.deploy(SKEWED, "2", rollout=COHORT_ROLLOUT, analysis=ROOMY)
        wait_for(lambda: COHORT_RULE in rule_names(stack), timeout=120, what="the cohort rule")
        canary = stack.status()["canaryRevision"]
        mark = stack.operator.mark()
        back = timeline.wait(lambda s: s.phase == "RolledBack", timeout=180, what="rollback")
    assert rule_names(stack) == ["api", ""]
    refs = {r["name"]: r["weight"] for r in route(stack)["spec"]["rules"][0]["backendRefs"]}
    assert refs == {f"{NAME}-stable": 100, f"{NAME}-canary": 0}
    assert back.stable == stable
    assert "feature-psi of monthly_charges" in back.last_history["reason"]
    print(f"rolled back: {back.last_history['reason'][:200]}")
    gone = f"{NAME}-{canary}"
    wait_for(lambda: gone not in stack.reader.deployments(NAMESPACE, NAME), timeout=30)
    writes = stack.operator.writes(mark)
    patches = [i for i, w in enumerate(writes) if f"httproutes/{ROUTE}" in w]
    deletes = [i for i, w in enumerate(writes) if "DELETE" in w and f"deployments/{gone}" in w]
    assert patches, writes
    assert deletes, writes
    last_patch = max(i for i in patches if i < deletes[0])
    # The patch that removed the rule and the delete of the canary: one reconcile, no status
    # write between them (each reconcile starts with one).
    between = writes[last_patch : deletes[0]]
    assert not [w for w in between if "/status" in w], between
