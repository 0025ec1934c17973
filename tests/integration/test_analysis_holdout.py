"""The stable against its training holdout: the real operator, real model servers behind
kwok pods, client traffic through the `<name>` Service posting each answered row's label
back one second later. The churn images' profiles record their accuracy on the held-out
rows (86.5% for the healthy model); the runtime exports it, and the operator's drift monitor
of the stable holds the accuracy on labels over `analysis.window` against it.

While the labels are the held-out rows' true ones, the stable passes `holdout-accuracy` and
stays healthy; once 40% of them come back as the other class (the world no longer agreeing
with the model: about 57% right), it is marked Degraded (AnalysisFailed) naming the check,
with a Warning Event and the operator's Degraded gauge, and never rolled back.
"""

from collections.abc import Iterator

import pytest
from analysis_stack import (
    ANALYSIS,
    LATENCY_OFF_THE_POINT,
    AnalysisStack,
    Body,
    Sample,
    metric,
    printed_section,
    stable_stack,
)

from modeldeploy import contract
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "analysis-holdout"
CHECK = "holdout-accuracy"
RATE = 30.0  # requests/s, all to the stable
LABEL_DELAY = 1.0  # seconds from an answer to its label
WRONG_LABELS = 0.4
ACCURACY: Body = {"enabled": True, "maxDrop": 0.08, "minLabels": 150}
# A window of a minute: room for the labels (~500 at 30/s) that bound a healthy stable within.
WITH_ACCURACY: Body = {
    **ANALYSIS,
    "window": "60s",
    "latency": LATENCY_OFF_THE_POINT,
    "accuracy": ACCURACY,
}


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with stable_stack(kube, prometheus, workdir, NAMESPACE, analysis=WITH_ACCURACY) as s:
        yield s


def _verdict(sample: Sample) -> str | None:
    verdict: str | None = sample.checks().get(CHECK, {}).get("verdict")
    return verdict


def _degraded(sample: Sample) -> bool:
    return sample.condition("Degraded").get("status") == "True"


def test_a_stable_whose_labels_turn_bad_is_degraded_on_its_holdout_accuracy(
    stack: AnalysisStack,
) -> None:
    stable = stack.status()["stableRevision"]
    with printed_section("stable vs its holdout accuracy") as lines, stack.timeline() as timeline:
        with stack.traffic(RATE, label_delay=LABEL_DELAY) as healthy:
            passing = timeline.wait(
                lambda s: s.analysed(stable) and _verdict(s) == "pass", 300,
                f"{CHECK} passing on true labels",
            )  # fmt: skip
        assert healthy.report is not None
        assert healthy.report.labels  # labels were sent
        lines.append(f"  healthy: {passing.checks()[CHECK]}")
        healthy_verdicts = timeline.seen(_verdict)
        healthy_degraded = timeline.seen(_degraded)
        with stack.traffic(RATE, seed=1, label_delay=LABEL_DELAY, wrong_labels=WRONG_LABELS):
            degraded = timeline.wait(
                lambda s: s.condition("Degraded").get("reason") == "AnalysisFailed", 300,
                "Degraded AnalysisFailed on wrong labels", after=passing.t,
            )  # fmt: skip
            values = stack.operator_metrics()
        lines.append(f"  turned bad: {degraded.checks('fail')}")
        lines.append(f"  Degraded: {degraded.condition('Degraded').get('message')}")
        lines.append(f"  {CHECK} verdicts seen: {timeline.seen(_verdict)}")
        lines.append(f"  seconds from passing to Degraded: {degraded.t - passing.t:.1f}")
    # Healthy: the check passed and the stable was never Degraded.
    assert "fail" not in healthy_verdicts, healthy_verdicts
    assert healthy_degraded == [False], healthy_degraded
    passed = passing.checks()[CHECK]
    assert passed["samples"] >= ACCURACY["minLabels"]
    # Bad labels: Degraded naming the check, never a rollback.
    assert degraded.phase == "Degraded"
    assert degraded.stable == stable
    assert degraded.status.get("failedRevision") is None
    assert degraded.condition("Ready")["status"] == "True"
    assert CHECK in degraded.condition("Degraded")["message"]
    failing = degraded.checks("fail")
    assert CHECK in failing, failing
    assert failing[CHECK]["value"] > ACCURACY["maxDrop"]
    assert failing[CHECK]["samples"] >= ACCURACY["minLabels"]
    [message, *_] = stack.messages("AnalysisFailed", stable, f"{CHECK}: labelled accuracy")
    assert "vs holdout 86.5%" in message
    assert "labels)" in message
    md = {"namespace": NAMESPACE, "name": "churn"}
    assert metric(values, contract.OPERATOR_DEGRADED, **md, reason="AnalysisFailed") == 1
    assert metric(values, contract.OPERATOR_ROLLBACKS_TOTAL, **md) == 0
    assert metric(values, contract.OPERATOR_CHECK_VERDICTS_TOTAL, **md, track="stable",
                  check=CHECK, verdict="fail") >= 1  # fmt: skip
