"""No verdict is never a pass. With a private Prometheus (stopped by the test):

- the stable drifting from its training profile after promotion sets Degraded
  (AnalysisFailed), an Event and the operator's metrics, and never rolls back;
- a canary with too few samples stays inconclusive: no rollback, no step;
- Prometheus stopped while the canary is at a step: no promotion, the rounds have no data,
  and after noDataTimeout onNoData=rollback rolls it back.
"""

import time
from collections.abc import Iterator

import pytest
from analysis_stack import (
    ANALYSIS,
    LATENCY_OFF_THE_POINT,
    V3,
    AnalysisStack,
    metric,
    printed_section,
    rolled_back,
    stable_stack,
)

from modeldeploy import contract
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.traffic import Drift

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "analysis-nodata"
NO_DATA_TIMEOUT = 40  # seconds: longer than a canary's wait for minSamples at full rate
NODATA_ANALYSIS = {
    **ANALYSIS,
    "onNoData": "rollback",
    "noDataTimeout": f"{NO_DATA_TIMEOUT}s",
    "latency": LATENCY_OFF_THE_POINT,
}


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster,
    private_prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with stable_stack(kube, private_prometheus, workdir, NAMESPACE, analysis=NODATA_ANALYSIS) as s:
        yield s


def test_a_drifting_stable_is_degraded_not_rolled_back(stack: AnalysisStack) -> None:
    stable = stack.status()["stableRevision"]
    drift = Drift(shift={"tenure_months": 2.0})
    with printed_section("stable drift after promotion") as lines, stack.timeline() as timeline:
        with stack.traffic(30, drift=drift):
            start = time.monotonic()
            degraded = timeline.wait(
                lambda s: s.condition("Degraded").get("reason") == "AnalysisFailed",
                timeout=60, what="Degraded AnalysisFailed",
            )  # fmt: skip
            # Beyond failureLimit: still only Degraded.
            later = timeline.wait(
                lambda s: s.status.get("consecutiveFailures", 0) > ANALYSIS["failureLimit"],
                timeout=30, what="more failed rounds", after=degraded.t,
            )  # fmt: skip
            values = stack.operator_metrics()
        lines.append(f"drift start -> Degraded: {degraded.t - start:.1f}s")
        lines.append(f"condition: {degraded.condition('Degraded')}")
        lines.append(f"checks failing: {degraded.checks('fail')}")
    assert degraded.phase == "Degraded"
    assert degraded.condition("Degraded")["status"] == "True"
    assert degraded.condition("Ready")["status"] == "True"  # still serving
    assert degraded.analysed(stable, "fail")
    assert "feature-psi/tenure_months" in degraded.checks("fail")
    assert later.stable == stable
    assert later.status.get("failedRevision") is None
    assert later.phase == "Degraded"
    assert stack.messages("AnalysisFailed", stable, "feature-psi of tenure_months")
    md = {"namespace": NAMESPACE, "name": "churn"}
    assert metric(values, contract.OPERATOR_DEGRADED, **md, reason="AnalysisFailed") == 1
    psi = metric(values, contract.OPERATOR_CHECK_VALUE, **md, track="stable", check="feature-psi")
    assert psi > ANALYSIS["drift"]["features"]["psi"]
    assert metric(values, contract.OPERATOR_ROLLBACKS_TOTAL, **md) == 0


def test_no_verdict_holds_then_no_data_rolls_back(
    stack: AnalysisStack, private_prometheus: PrometheusServer
) -> None:
    stable = stack.status()["stableRevision"]
    with printed_section("too few samples, then Prometheus down") as lines, stack.timeline() as t:
        # A trickle: the canary gets well below minSamples in the window.
        with stack.traffic(2.0):
            stack.deploy(V3, "3", analysis=NODATA_ANALYSIS)
            started = t.wait(lambda s: s.canary is not None and s.weight > 0, 60, "canary")
            canary = started.canary
            t.wait(lambda s: s.analysed(canary), 30, "a round of the canary", after=started.t)
            time.sleep(12)  # several rounds, two stepIntervals
            thin = t.latest()
        lines.append(f"thin traffic: {thin.analysis}")
        assert thin.step == 0, "a step advanced without a verdict"
        assert thin.phase == "Progressing"
        assert thin.canary == canary
        verdicts = t.seen(
            lambda s: s.analysis.get("verdict") if s.analysed(canary) else None, after=started.t
        )
        assert set(verdicts) <= {None, "inconclusive"}
        assert all(c["samples"] < ANALYSIS["minSamples"] for c in thin.checks().values())
        assert stack.messages("AnalysisInconclusive", canary, "200 samples needed")

        with stack.traffic(45.0, seed=2):
            second = t.wait(lambda s: s.step == 1, 150, "the second step", after=started.t)
            private_prometheus.stop()
            stopped = time.monotonic()
            lines.append(f"Prometheus stopped {stopped - second.t:.1f}s into the second step")
            no_data = t.wait(
                lambda s: s.analysed(canary, "inconclusive") and s.status.get("noDataSince"),
                timeout=30, what="a round without data", after=stopped,
            )  # fmt: skip
            back = t.wait(rolled_back, NO_DATA_TIMEOUT + 30, "onNoData rollback", after=stopped)
        held = t.seen(lambda s: (s.phase, s.step), after=stopped)
        lines.append(f"no data: {no_data.analysis}")
        settings = f"noDataTimeout {NO_DATA_TIMEOUT}s, interval {ANALYSIS['interval']}"
        lines.append(f"Prometheus stopped -> rolled back: {back.t - stopped:.1f}s ({settings})")
        lines.append(f"phases/steps while without data: {held}")
        lines.append(f"history: {back.last_history.get('reason')}")
    assert ("Promoting", 1) not in held
    assert all(phase == "Progressing" for phase, _ in held[:-1]), held
    assert back.stable == stable
    assert back.status["failedRevision"] == canary
    assert all(c["verdict"] == "inconclusive" for c in no_data.checks().values())
    assert all(c.get("value") is None for c in no_data.checks().values())
    reason = back.last_history["reason"]
    assert "onNoData=rollback" in reason
    assert "unreachable" in reason
    assert back.t - stopped >= NO_DATA_TIMEOUT - 2  # held first, then rolled back
    assert "cannot connect to" in reason
    assert stack.messages("AnalysisNoData", canary, "unreachable")
    assert stack.messages("AnalysisNoDataTimeout")
