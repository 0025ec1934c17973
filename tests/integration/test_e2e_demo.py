"""The whole loop, as `make demo` runs it: real operator, real model servers behind kwok
pods, real Prometheus, client traffic through the `<name>` Service. A skewed v2 must be
rolled back for drift on the feature it skews; a healthy v3 must be promoted through every
step; the stable revision never has fewer than minWarm Ready pods while it happens."""

from contextlib import ExitStack

import pytest
from operator_harness import ClusterReader, WarmWatcher

from modeldeploy.devenv import testruns
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.demo import Demo, ReleaseOutcome, summary
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

NAMESPACE = "e2e"
SKEWED_FEATURE = "monthly_charges"


def test_skewed_release_rolls_back_and_healthy_release_is_promoted(
    kube: KwokCluster, prometheus: PrometheusServer
) -> None:
    lines: list[str] = []
    with ExitStack() as watchers:
        watcher: list[WarmWatcher] = []

        def watch_once_stable(outcome: ReleaseOutcome) -> None:
            if not watcher:  # from the first Stable on, sample continuously
                watcher.append(
                    watchers.enter_context(
                        WarmWatcher(ClusterReader(kube), NAMESPACE, demo.name, demo.min_warm)
                    )
                )

        demo = Demo(
            kube,
            prometheus.url,
            prometheus.targets_dir,
            testruns.run_dir() / "e2e-demo",
            namespace=NAMESPACE,
            say=lambda line: (lines.append(line), print(line)),  # type: ignore[func-returns-value]
            after_release=watch_once_stable,
        )
        result = demo.run()
    for line in summary(result):
        print(line)

    first, skewed, healthy = result.outcomes
    assert first.reached == "Stable"
    assert first.revision

    assert skewed.reached == "RolledBack"
    assert skewed.weights, "the skewed canary never took traffic"
    assert SKEWED_FEATURE in skewed.reason, skewed.reason
    assert any(SKEWED_FEATURE in check for check in skewed.failing), skewed.failing
    assert skewed.breach_to_rollback is not None

    assert healthy.reached == "Stable"
    steps = demo.story.manifest["spec"]["rollout"]["canary"]["steps"]
    assert healthy.steps == list(range(len(steps))), healthy.steps  # every step, in order
    assert steps[0] in healthy.weights  # replica ratio: 1 canary pod beside 3 stable = 25%
    assert max(healthy.weights) == steps[-1]
    assert healthy.revision not in (first.revision, skewed.revision)

    assert result.min_stable_ready is not None
    assert result.min_stable_ready >= demo.min_warm
    (warm,) = watcher
    warm.assert_never_below()
