"""Golden answers that change after warm-up: a canary is rolled back, a stable is Degraded
(never rolled back), and its pods turn unready.

Real operator, real model servers behind kwok pods (the churn `turning` variant: healthy,
then skewed `CHURN_TURN_SECONDS` after its warm-up), the session Prometheus scraping every
second. No client traffic: the golden requests each pod replays are the only evidence.
"""

import time
from collections.abc import Iterator

import pytest
from analysis_stack import TURNING, AnalysisStack, metric, printed_section, stable_stack

from modeldeploy import contract
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NAMESPACE = "analysis-golden"
TURN_SECONDS = 25  # after warm-up: time for the first revision to become the stable
# The variant replays every 3 s (jittered): the 5 in a row that take readiness away span
# 9.6 s or more, several analysis rounds (2 s) after the first mismatch was scraped (1 s).
ENV = [{"name": "CHURN_TURN_SECONDS", "value": str(TURN_SECONDS)}]
CANARY_TURN_SECONDS = 5


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with AnalysisStack(kube, prometheus.url, prometheus.targets_dir, NAMESPACE, workdir) as s:
        yield s


def test_a_stable_whose_golden_answers_change_is_degraded_then_unready(
    stack: AnalysisStack,
) -> None:
    with printed_section("stable golden answers change") as lines, stack.timeline() as timeline:
        start = time.monotonic()
        stack.deploy(TURNING, "7", template={"env": ENV})
        stable = stack.wait_stable()["stableRevision"]
        matching = timeline.wait(
            lambda s: s.analysed(stable) and s.checks().get("golden", {}).get("verdict") == "pass",
            timeout=60, what="a round with matching golden answers",
        )  # fmt: skip
        degraded = timeline.wait(
            lambda s: s.condition("Degraded").get("reason") == "AnalysisFailed",
            timeout=90, what="Degraded AnalysisFailed", after=matching.t,
        )  # fmt: skip
        values = stack.operator_metrics()
        # The pods' own readiness follows: 5 replays in a row that did not match.
        unready = timeline.wait(
            lambda s: s.condition("Degraded").get("reason") == "InsufficientReplicas",
            timeout=60, what="the stable's pods unready", after=degraded.t,
        )  # fmt: skip
        lines.append(f"deploy -> matching round: {matching.t - start:.1f}s; -> Degraded "
                     f"{degraded.t - start:.1f}s; -> unready {unready.t - start:.1f}s")  # fmt: skip
        lines.append(f"checks failing: {degraded.checks('fail')}")
    assert degraded.phase == "Degraded"
    assert degraded.stable == stable
    assert degraded.condition("Ready")["status"] == "True"  # still serving when it fails
    assert degraded.analysed(stable, "fail")
    golden = degraded.checks("fail")["golden"]
    assert golden["value"] > golden["threshold"] == 0
    assert stack.messages("AnalysisFailed", stable, "golden answers did not match")
    md = {"namespace": NAMESPACE, "name": "churn"}
    assert metric(values, contract.OPERATOR_DEGRADED, **md, reason="AnalysisFailed") == 1
    assert metric(values, contract.OPERATOR_ROLLBACKS_TOTAL, **md) == 0
    assert unready.stable == stable  # never rolled back
    assert unready.status.get("failedRevision") is None


@pytest.fixture(scope="module")
def canary_stack(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE + "-canary")
    with stable_stack(kube, prometheus, workdir, NAMESPACE + "-canary") as s:
        yield s


def test_a_canary_whose_golden_answers_change_is_rolled_back(canary_stack: AnalysisStack) -> None:
    stack = canary_stack
    old = stack.status()["stableRevision"]
    env = [{"name": "CHURN_TURN_SECONDS", "value": str(CANARY_TURN_SECONDS)}]
    with printed_section("canary golden answers change") as lines, stack.timeline() as timeline:
        start = time.monotonic()
        stack.deploy(TURNING, "7", template={"env": env})
        started = timeline.wait(lambda s: s.canary is not None, 60, "a canary")
        back = timeline.wait(
            lambda s: s.phase == "RolledBack" and s.canary is None, timeout=120,
            what="the canary rolled back", after=started.t,
        )  # fmt: skip
        lines.append(f"deploy -> rolled back: {back.t - start:.1f}s")
        lines.append(f"history: {back.last_history}")
    assert back.stable == old
    assert back.status.get("failedRevision") == started.canary
    assert back.last_history["event"] == "RolledBack"
    assert "golden: " in back.last_history["reason"]
    assert "golden answers did not match" in back.last_history["reason"]
