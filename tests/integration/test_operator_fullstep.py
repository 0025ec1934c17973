"""A full canary step with slowly warming pods, on the real cluster with real model servers.

The `warming` churn variant is healthy but its servers answer their golden requests only
about 8 s after they start (a cache filled on first use); the pod runner holds each pod's
Ready condition until then, as a kubelet would. Steps `[100]` size the canary like the
stable at once; the client Service `<name>` must keep minWarm Ready pods behind it at every
moment, i.e. select the canary alone only once it can carry all the traffic.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from analysis_stack import (
    ANALYSIS,
    LATENCY_OFF_THE_POINT,
    MIN_WARM,
    NAME,
    WARMING,
    AnalysisStack,
    stable_stack,
)
from operator_harness import WarmWatcher

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NAMESPACE = "fullstep"
RATE = 30.0
FULL_STEP = {"canary": {"steps": [100]}, "stepInterval": "6s", "bakeTime": "5s"}
# Latency and errors only: at a full step the stable serves no traffic, so the predictions'
# comparison with it gains no evidence and cannot pass (a known limit, see docs/concepts.md).
# Latency with room: the warm pods are the point, and on a loaded machine (two test workers)
# the tests' 40 ms limit rolled this healthy canary back (p95 130 ms).
THRESHOLDS_ONLY = {**ANALYSIS, "drift": {"enabled": False}, "latency": LATENCY_OFF_THE_POINT}


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnalysisStack]:
    workdir: Path = tmp_path_factory.mktemp(NAMESPACE)
    spec = {"rollout": FULL_STEP, "analysis": THRESHOLDS_ONLY}
    with stable_stack(kube, prometheus, workdir, NAMESPACE, **spec) as s:
        yield s


def test_a_full_step_keeps_min_warm_pods_behind_the_service_while_the_canary_warms(
    stack: AnalysisStack,
) -> None:
    old = stack.status()["stableRevision"]
    watch = WarmWatcher(stack.reader, NAMESPACE, NAME, MIN_WARM, period=0.1)
    with stack.traffic(RATE), stack.timeline() as timeline, watch:
        stack.deploy(WARMING, "5", rollout=FULL_STEP, analysis=THRESHOLDS_ONLY)
        started, done = timeline.canary_promoted()
    canary = started.canary
    watch.assert_never_below()
    during = [s for s in timeline.snapshot() if started.t <= s.t <= done.t]
    # The canary stood at its full step with no traffic while its pods warmed: the case
    # where a selector switch at once would have left nothing Ready behind the Service.
    warming = [s for s in during if s.canary == canary and s.step == 0 and s.weight == 0]
    assert warming, [(s.step, s.weight) for s in during]
    assert warming[-1].t - warming[0].t >= 2.0, "the canary warmed too fast to show anything"
    assert any(s.weight == 100 for s in during if s.canary == canary)
    assert stack.status()["stableRevision"] == canary != old
    print(
        f"\n[fullstep] canary at 0% while warming for {warming[-1].t - warming[0].t:.1f}s; "
        f"{watch.samples} samples, lowest behind the Service {watch.lowest_serving}, "
        f"lowest Ready stable {watch.lowest_stable} (minWarm {MIN_WARM})"
    )
