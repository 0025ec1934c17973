"""Fallback answers on real metrics: the real operator, real model servers behind kwok pods,
client traffic through the `<name>` Service, the session Prometheus scraping every second.
The stable is the churn `floored` variant (v8: the healthy model with rules answering its
rows under a 0.6 confidence, a few percent of them); the `unsure` canary (v9) declares the
same fallback on a tempered model, which falls back on about 5 times as many rows, and is
rolled back on the fallback-rate check, while the stable's fallback answers are counted.

Prediction drift is switched out of the way (a tolerance no change reaches): the tempered
model's confidence changes too, which confidence-psi would catch first; here only the
fallback share is to decide.
"""

from collections.abc import Iterator

import pytest
from analysis_stack import (
    ANALYSIS,
    FLOORED,
    UNSURE,
    AnalysisStack,
    Body,
    Traffic,
    breach_timing,
    printed_section,
    rolled_back,
)

from modeldeploy import contract
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "analysis-fallback"
RATE = 30.0  # requests/s through the Service: ~10/s reach a canary at 1 of 3 pods
FALLBACK: Body = {"maxIncrease": 0.05}
WITH_FALLBACK: Body = {
    **ANALYSIS,
    "drift": {"features": {"psi": 0.15}, "predictions": {"psi": 100}},
    "fallbackRate": FALLBACK,
}


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with AnalysisStack(kube, prometheus.url, prometheus.targets_dir, NAMESPACE, workdir) as s:
        s.deploy(FLOORED, "8", analysis=WITH_FALLBACK)
        s.wait_stable()
        yield s


@pytest.fixture(scope="module")
def traffic(stack: AnalysisStack) -> Iterator[Traffic]:
    with stack.traffic(RATE) as load:
        yield load
    assert load.report is not None
    print(f"\nclient traffic: {load.report.summary()}")


def answered_rows(prometheus: PrometheusServer, revision: str, by: str) -> float:
    """Rows the revision's pods answered, `by` the model or the fallback: each pod's last
    count (a rolled-back canary's pods are gone, their series no longer current)."""
    promql = (
        f'sum(max_over_time({contract.ANSWERED_ROWS_TOTAL}{{namespace="{NAMESPACE}",'
        f'{contract.LABEL_REVISION}="{revision}",{contract.LABEL_ANSWERED_BY}="{by}"}}[15m]))'
    )
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else 0.0


def test_a_canary_falling_back_far_more_than_the_stable_is_rolled_back(
    stack: AnalysisStack, traffic: Traffic, prometheus: PrometheusServer
) -> None:
    stable = stack.status()["stableRevision"]
    what = "fallback-rate (unsure canary)"
    with printed_section(what) as lines, stack.timeline() as timeline:
        stack.deploy(UNSURE, "9", analysis=WITH_FALLBACK)
        started = timeline.wait(lambda s: s.canary is not None, 30, "a canary")
        canary = started.canary
        assert canary is not None
        back = timeline.wait(rolled_back, 300, f"{what}: rollback", after=started.t)
        lines.extend(breach_timing(stack, traffic, timeline, canary, after=started.t).lines(what))
        lines.append(f"  failing checks: {back.checks('fail')}")
        lines.append(f"  history: {back.last_history.get('reason')}")
        counts = {
            (track, by): answered_rows(prometheus, revision, by)
            for track, revision in (("stable", stable), ("canary", canary))
            for by in (contract.ANSWERED_BY_MODEL, contract.ANSWERED_BY_FALLBACK)
        }
        lines.append(f"  rows answered (Prometheus): {counts}")
    assert back.status["failedRevision"] == canary
    assert back.stable == stable, "the stable revision must not change"
    assert back.last_history["event"] == "RolledBack"

    failing = back.checks("fail")
    assert set(failing) == {"fallback-rate"}, failing
    check = failing["fallback-rate"]
    assert check["value"] > FALLBACK["maxIncrease"]
    reason = back.last_history["reason"]
    assert "fallback-rate: canary " in reason
    assert "of rows from the fallback (" in reason
    assert " vs stable " in reason
    assert stack.messages("RolledBack", canary)
    # The stable falls back a little, and those rows are counted.
    stable_fallback = counts[("stable", contract.ANSWERED_BY_FALLBACK)]
    stable_model = counts[("stable", contract.ANSWERED_BY_MODEL)]
    assert stable_fallback > 0
    assert stable_fallback < stable_model
    canary_share = counts[("canary", contract.ANSWERED_BY_FALLBACK)] / sum(
        counts[("canary", by)] for by in (contract.ANSWERED_BY_MODEL, contract.ANSWERED_BY_FALLBACK)
    )
    assert canary_share > stable_fallback / (stable_fallback + stable_model)
