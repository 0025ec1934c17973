"""Automatic rollback on real metrics: the real operator, real model servers behind kwok
pods (the pod runner), client traffic through the `<name>` Service, the session Prometheus
scraping every second. Against a healthy stable v1, three bad canaries in turn:

- `slow` (right answers, 60 ms late): latency-p95 above 40 ms -> rolled back;
- `skewed` (monthly_charges x100 in its preprocessing): its feature monthly_charges against
  its own training profile -> rolled back, the feature named;
- the same skew with monthly_charges exempt from feature drift: its predictions against
  the stable's on the same window -> rolled back.

Each prints its breach-to-rollback time (first request the bad canary served -> canary
weight 0) and the parts of it.
"""

from collections.abc import Iterator
from typing import Any

import pytest
from analysis_stack import (
    ANALYSIS,
    SKEWED,
    SLOW,
    AnalysisStack,
    Sample,
    Traffic,
    breach_timing,
    metric,
    printed_section,
    rolled_back,
    stable_stack,
)
from operator_harness import wait_for

from modeldeploy import contract
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "analysis-rollback"
RATE = 30.0  # requests/s through the Service: ~10/s reach a canary at 1 of 3 pods


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with stable_stack(kube, prometheus, workdir, NAMESPACE) as s:
        yield s


@pytest.fixture(scope="module")
def traffic(stack: AnalysisStack) -> Iterator[Traffic]:
    with stack.traffic(RATE) as load:
        yield load
    assert load.report is not None
    print(f"\nclient traffic: {load.report.summary()}")


def bad_canary(stack: AnalysisStack, traffic: Traffic, image: str, version: str,
                what: str, **spec: Any) -> tuple[Sample, str]:  # fmt: skip
    """Deploy a bad canary; wait for its rollback; print breach-to-rollback."""
    stable = stack.status()["stableRevision"]
    with printed_section(what) as lines, stack.timeline() as timeline:
        stack.deploy(image, version, **spec)
        started = timeline.wait(lambda s: s.canary is not None, 30, "a canary")
        canary = started.canary
        assert canary is not None
        back = timeline.wait(rolled_back, 150, f"{what}: rollback", after=started.t)
        timing = breach_timing(stack, traffic, timeline, canary, after=started.t)
        lines.extend(timing.lines(what))
        lines.append(f"  failing checks: {back.checks('fail')}")
        lines.append(f"  history: {back.last_history.get('reason')}")
        weights = timeline.seen(lambda s: s.weight, after=started.t)
        lines.append(f"  canary weights seen: {weights}")
    assert back.status["failedRevision"] == canary
    assert back.stable == stable, "the stable revision must not change"
    assert back.last_history["event"] == "RolledBack"
    assert max(weights) > 0, "the canary never took live traffic"
    assert timing.rounds == 1  # a failed sequential test is final: no failureLimit rounds
    return back, canary


def test_latency_breach_rolls_back(stack: AnalysisStack, traffic: Traffic) -> None:
    back, canary = bad_canary(stack, traffic, SLOW, "4", "latency (slow canary)")
    latency = back.checks("fail")["latency-p95"]
    assert latency["value"] > ANALYSIS["latency"]["p95Ms"]
    assert latency["threshold"] == ANALYSIS["latency"]["p95Ms"]
    assert latency["samples"] >= ANALYSIS["minSamples"]
    reason = back.last_history["reason"]
    assert "latency-p95" in reason
    assert "(max 40 ms)" in reason
    failed = stack.messages("AnalysisFailed", canary)
    assert all("latency-p95" in m and "n=" in m for m in failed)
    assert stack.messages("RolledBack", canary)

    def rollbacks() -> float:
        # Counted after the status write the timeline saw: wait for it.
        values = stack.operator_metrics()
        return metric(values, contract.OPERATOR_ROLLBACKS_TOTAL, namespace=stack.namespace)

    assert wait_for(lambda: rollbacks() >= 1, timeout=30, what="the rollback in the metrics")


def test_feature_skew_against_its_profile_rolls_back(
    stack: AnalysisStack, traffic: Traffic
) -> None:
    back, _ = bad_canary(stack, traffic, SKEWED, "2", "feature skew vs profile")
    failing = back.checks("fail")
    psi = failing["feature-psi/monthly_charges"]
    assert psi["value"] > ANALYSIS["drift"]["features"]["psi"]
    assert psi["samples"] >= ANALYSIS["minSamples"]
    assert "feature-psi of monthly_charges" in back.last_history["reason"]


def test_prediction_drift_against_the_stable_rolls_back(
    stack: AnalysisStack, traffic: Traffic
) -> None:
    # The same skewed image under another version (a new revision), with the skewed feature
    # exempt from the feature checks: only its predictions give it away.
    analysis = {**ANALYSIS, "drift": {"features": {"psi": 0.15, "ignore": ["monthly_charges"]}}}
    back, _ = bad_canary(
        stack, traffic, SKEWED, "2b", "prediction drift vs stable", analysis=analysis
    )
    failing = back.checks("fail")
    assert not any(name.startswith("feature-") for name in failing), failing
    predictions = [n for n in failing if n.startswith(("prediction-psi", "confidence-psi"))]
    assert predictions, failing
    assert "-psi" in back.last_history["reason"]
