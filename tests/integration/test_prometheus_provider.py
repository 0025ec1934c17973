"""The analysis against a real Prometheus scraping real exporters of the metrics contract.

Two in-process exporters run the serving runtime's `Monitor` (the same code model images
use) for a stable and a canary revision of one model; Prometheus scrapes them over
127.0.0.1 through the `prometheus` fixture's file_sd. The canary is skewed on purpose
(a feature shifted by half a standard deviation, slower answers, other predictions), so
the round must fail on exactly those checks and pass the rest.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from operator_harness import wait_for
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from modeldeploy import contract
from modeldeploy.analysis.checks import evaluate
from modeldeploy.analysis.config import (
    AnalysisConfig,
    CustomCheck,
    EffectLimits,
    Track,
    collect,
    plan_queries,
)
from modeldeploy.analysis.data import QueryResult, QueryStatus
from modeldeploy.analysis.prometheus import PrometheusProvider
from modeldeploy.analysis.queries import RevisionRef, Series, selector, series_query
from modeldeploy.analysis.statistics import cumulative_buckets, histogram_quantile
from modeldeploy.analysis.verdicts import Verdict, aggregate
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.tools import free_port
from modeldeploy.profile_schema import ClassificationOutput, Profile
from modeldeploy.profiling.build import profile_features
from modeldeploy.serving.monitor import Identity, Monitor

pytestmark = pytest.mark.integration

MODEL = "churn"
STABLE = RevisionRef(model=MODEL, revision="st4bl3", version="v1", namespace="ml")
CANARY = RevisionRef(model=MODEL, revision="c4n4ry", version="v2", namespace="ml")
TRAINING_ROWS = 20_000
CANARY_ROWS = 1_000
STABLE_ROWS = 3_000
PLANS = np.array(["basic", "pro", "team"])


@contextmanager
def exporter(registry: CollectorRegistry) -> Iterator[str]:
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def value(provider: PrometheusProvider, promql: str) -> float:
    result = provider.query(promql)
    return result.values[()] if result.ok else 0.0


def scrapes_of(provider: PrometheusProvider, ref: RevisionRef, at_least: int) -> Callable[[], bool]:
    promql = f"count_over_time({contract.MODEL_INFO}{selector(ref)}[1m])"
    return lambda: value(provider, promql) >= at_least


def requests_of(
    provider: PrometheusProvider, ref: RevisionRef, at_least: int
) -> Callable[[], bool]:
    promql = f"sum({contract.REQUESTS_TOTAL}{selector(ref)})"
    return lambda: value(provider, promql) >= at_least


def training_profile(rng: np.random.Generator) -> Profile:
    columns = {
        "age": rng.normal(40, 10, TRAINING_ROWS),
        "plan": rng.choice(PLANS, p=[0.6, 0.3, 0.1], size=TRAINING_ROWS),
    }
    features, _ = profile_features(columns)
    output = ClassificationOutput(classes=["stay", "churn"], baseline={"stay": 0.8, "churn": 0.2})
    return Profile(rows=TRAINING_ROWS, features=features, output=output)


def serve_traffic(
    monitor: Monitor,
    rng: np.random.Generator,
    rows: int,
    *,
    age_shift: float,
    churn_share: float,
    slow_share: float,
) -> None:
    """`rows` single-row requests, in batches of observations (as the runtime counts)."""
    monitor.observe_features(
        {
            "age": rng.normal(40 + age_shift, 10, rows),
            "plan": rng.choice(PLANS, p=[0.6, 0.3, 0.1], size=rows),
        }
    )
    churn = rng.random(rows) < churn_share
    monitor.observe_predictions(
        np.where(churn, "churn", "stay"), confidence=np.where(churn, 0.6, 0.9)
    )
    for slow in rng.random(rows) < slow_share:
        monitor.observe_request(200, seconds=0.35 if slow else 0.02)


@pytest.fixture(scope="module")
def scraped(prometheus: PrometheusServer) -> Iterator[PrometheusProvider]:
    """Stable and canary exporters, scraped before and after their traffic."""
    rng = np.random.default_rng(5)
    profile = training_profile(rng)
    stable = Monitor(profile, Identity(MODEL, STABLE.version, STABLE.revision))
    canary = Monitor(profile, Identity(MODEL, CANARY.version, CANARY.revision))
    with (
        exporter(stable.registry) as stable_address,
        exporter(canary.registry) as canary_address,
        PrometheusProvider(prometheus.url, timeout=5) as provider,
    ):
        prometheus.set_targets(
            "analysis",
            [(stable_address, {"pod": "stable-0"}), (canary_address, {"pod": "canary-0"})],
        )
        try:
            # Scrapes at zero first, so that increase() sees the traffic as an increase.
            for ref in (STABLE, CANARY):
                wait_for(
                    scrapes_of(provider, ref, at_least=3),
                    timeout=30,
                    interval=0.25,
                    what=f"scrapes of {ref.revision}",
                )
            serve_traffic(stable, rng, STABLE_ROWS, age_shift=0, churn_share=0.2, slow_share=0)
            serve_traffic(canary, rng, CANARY_ROWS, age_shift=5, churn_share=0.45, slow_share=0.1)
            for ref, rows in ((STABLE, STABLE_ROWS), (CANARY, CANARY_ROWS)):
                wait_for(
                    requests_of(provider, ref, at_least=rows),
                    timeout=30,
                    interval=0.25,
                    what=f"traffic of {ref.revision}",
                )
            time.sleep(1.5)  # one more scrape, so the last two samples agree
            yield provider
        finally:
            prometheus.set_targets("analysis", [])


CONFIG = AnalysisConfig(
    min_samples=500,
    latency_p95_ms=250,
    latency_p99_ms=600,
    max_error_rate=0.01,
    max_invalid_increase=0.02,
    features=EffectLimits.of(psi=0.1, ks=0.1),
    max_missing_increase=0.05,
    predictions=EffectLimits.of(psi=0.2),
    custom=(
        CustomCheck(
            "success-share",
            f'sum(increase({contract.REQUESTS_TOTAL}{{revision="{{{{ revision }}}}",code="200"}}'
            "[{{ window }}])) / "
            f'sum(increase({contract.REQUESTS_TOTAL}{{revision="{{{{ revision }}}}"}}'
            "[{{ window }}]))",
            minimum=0.99,
        ),
    ),
)


def test_a_skewed_canary_fails_on_exactly_its_skews(scraped: PrometheusProvider) -> None:
    plan = plan_queries(CONFIG, canary=CANARY, stable=STABLE, window="1m")
    observations = collect(scraped, plan, at=time.time())
    unanswered = {key for key, r in observations.results.items() if not r.ok}
    # No invalid request yet: that counter has no series, which reads as zero.
    assert unanswered == {(Track.CANARY, Series.INVALID), (Track.STABLE, Series.INVALID)}
    checks = {check.name: check for check in evaluate(CONFIG, observations)}
    for check in checks.values():
        print(f"  {check.verdict.value:<12} {check.reason}")
    failed = {name for name, check in checks.items() if check.verdict is Verdict.FAIL}
    # Churn predictions come with lower confidence here, so both distributions move.
    assert failed == {"latency-p95", "feature-psi", "prediction-psi", "confidence-psi"}
    assert checks["feature-psi"].subject == "age"
    assert "ks " in checks["feature-psi"].reason  # over both tolerances set
    # 1,000 requests without a 5xx show an error rate under 1%: evidence for a pass too.
    assert checks["error-rate"].verdict is Verdict.PASS
    assert checks["latency-p95"].value == pytest.approx(350, abs=10)
    # increase() extrapolates to the end of the window (up to a scrape interval over a
    # sampled span of a few seconds here): counts come out somewhat high, never low.
    assert CANARY_ROWS <= checks["latency-p95"].samples <= 1.4 * CANARY_ROWS
    assert checks["custom/success-share"].value == pytest.approx(1.0)
    assert aggregate(checks.values()).verdict is Verdict.FAIL


def test_the_stable_revision_passes_against_its_own_profile(scraped: PrometheusProvider) -> None:
    config = CONFIG.drift_only()
    plan = plan_queries(config, canary=STABLE, window="1m")
    outcome = aggregate(evaluate(config, collect(scraped, plan, at=time.time())))
    # 3,000 rows from the profile's own distribution: no evidence of drift, and enough to
    # show it within tolerance.
    assert outcome.verdict is Verdict.PASS, outcome.reason


def test_latency_quantile_matches_promql_histogram_quantile(scraped: PrometheusProvider) -> None:
    at = time.time()
    buckets = series_query(Series.LATENCY, CANARY, "1m")
    answer = scraped.query(buckets.promql, buckets.by, at)
    ours = histogram_quantile(0.95, cumulative_buckets({k[0]: v for k, v in answer.values.items()}))
    for q in (0.5, 0.95, 0.99):
        promql = scraped.query(f"histogram_quantile({q}, {buckets.promql})", (), at)
        mine = histogram_quantile(
            q, cumulative_buckets({k[0]: v for k, v in answer.values.items()})
        )
        assert promql.values[()] == pytest.approx(mine, rel=1e-12)
    assert ours == pytest.approx(0.35, abs=0.01)


def test_answers_are_classified(scraped: PrometheusProvider) -> None:
    bad = scraped.query("sum(")
    assert bad.status is QueryStatus.BAD_QUERY
    assert bad.error == (
        "HTTP 400: Prometheus refused the query (bad_data); the operator's log has why"
    )  # Prometheus' own text ("parse error: ...") is not repeated into status and Events
    assert scraped.query('nothing_here{job="none"}').status is QueryStatus.NO_DATA
    grouped = scraped.query(f"{contract.MODEL_INFO}", ())
    assert grouped.status is QueryStatus.BAD_QUERY  # two series, no labels to tell them apart
    info = series_query(Series.INFO, CANARY, "1m")
    assert scraped.query(info.promql, info.by) == QueryResult(QueryStatus.OK, {(): 1.0})


def test_odd_label_values_round_trip(prometheus: PrometheusServer) -> None:
    registry = CollectorRegistry()
    odd = RevisionRef(model='we"ird\\mo\ndel {x}', revision="r1")
    Gauge(contract.MODEL_INFO, "info", list(contract.IDENTITY_LABELS), registry=registry).labels(
        odd.model, "v", odd.revision
    ).set(1)
    with exporter(registry) as address, PrometheusProvider(prometheus.url) as provider:
        prometheus.set_targets("odd-labels", [(address, {})])
        try:
            query = series_query(Series.INFO, odd, "1m")
            wait_for(
                lambda: provider.query(query.promql).ok,
                timeout=30,
                interval=0.25,
                what="the odd target",
            )
            assert provider.query(query.promql).values == {(): 1.0}
        finally:
            prometheus.set_targets("odd-labels", [])
