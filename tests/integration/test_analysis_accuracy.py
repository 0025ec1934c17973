"""Ground truth on real metrics: the real operator, real model servers behind kwok pods,
client traffic through the `<name>` Service that posts each answered row's label back to the
pod that answered, one second later. Against a healthy stable v1, the `mislabelled` canary
(same inputs, trained on 60% shuffled labels, about 10 points less accurate) is rolled back
on the accuracy check, while its feature drift checks pass: its inputs do not drift.

Prediction drift is switched out of the way (a tolerance no change reaches): this canary also
predicts `churn` less often, which prediction-psi would catch first; here only ground truth
is to decide.
"""

from collections.abc import Iterator

import pytest
from analysis_stack import (
    ANALYSIS,
    LATENCY_OFF_THE_POINT,
    MISLABELLED,
    AnalysisStack,
    Body,
    Sample,
    Traffic,
    breach_timing,
    printed_section,
    rolled_back,
    stable_stack,
)

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "analysis-accuracy"
RATE = 30.0  # requests/s through the Service: ~10/s reach a canary at 1 of 3 pods
LABEL_DELAY = 1.0  # seconds from an answer to its label
ACCURACY: Body = {"enabled": True, "maxDrop": 0.05, "minLabels": 150}
WITH_ACCURACY: Body = {
    **ANALYSIS,
    "drift": {"features": {"psi": 0.15}, "predictions": {"psi": 100}},
    "latency": LATENCY_OFF_THE_POINT,  # accuracy waits for its labels
    "accuracy": ACCURACY,
}


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with stable_stack(kube, prometheus, workdir, NAMESPACE, analysis=WITH_ACCURACY) as s:
        yield s


@pytest.fixture(scope="module")
def traffic(stack: AnalysisStack) -> Iterator[Traffic]:
    with stack.traffic(RATE, label_delay=LABEL_DELAY) as load:
        yield load
    assert load.report is not None
    print(f"\nclient traffic: {load.report.summary()}")


def test_a_less_accurate_canary_is_rolled_back_on_accuracy(
    stack: AnalysisStack, traffic: Traffic
) -> None:
    stable = stack.status()["stableRevision"]
    what = "accuracy (mislabelled canary)"
    with printed_section(what) as lines, stack.timeline() as timeline:
        stack.deploy(MISLABELLED, "6", analysis=WITH_ACCURACY)
        started = timeline.wait(lambda s: s.canary is not None, 30, "a canary")
        canary = started.canary
        assert canary is not None
        back = timeline.wait(rolled_back, 300, f"{what}: rollback", after=started.t)
        lines.extend(breach_timing(stack, traffic, timeline, canary, after=started.t).lines(what))
        lines.append(f"  failing checks: {back.checks('fail')}")
        lines.append(f"  history: {back.last_history.get('reason')}")
        drift_verdicts = timeline.seen(_drift_verdicts, after=started.t)
        lines.append(f"  drift checks seen (worst subject per check): {drift_verdicts}")
    assert back.status["failedRevision"] == canary
    assert back.stable == stable, "the stable revision must not change"
    assert back.last_history["event"] == "RolledBack"

    failing = back.checks("fail")
    assert set(failing) == {"accuracy"}, failing
    accuracy = failing["accuracy"]
    assert accuracy["value"] > ACCURACY["maxDrop"]
    assert accuracy["samples"] >= ACCURACY["minLabels"]
    reason = back.last_history["reason"]
    assert "accuracy: canary" in reason
    assert "labels) vs stable" in reason
    # Its inputs look like training: no feature drift check failed in any round (status
    # shows each check by its worst feature: passing, or still gathering evidence).
    assert any(drift_verdicts), "no feature drift check was seen"
    assert all("fail" not in seen.values() for seen in drift_verdicts), drift_verdicts
    assert stack.messages("RolledBack", canary)


def _drift_verdicts(sample: Sample) -> dict[str, str]:
    """The verdicts of a round's feature drift checks (feature-psi, missing-rate)."""
    return {
        name: check["verdict"]
        for name, check in sample.checks().items()
        if name.startswith(("feature-", "missing-rate"))
    }
