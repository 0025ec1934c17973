"""The whole loop, as `make demo` runs it: real operator, real model servers behind kwok
pods, real Prometheus, client traffic through the `<name>` Service. A skewed v2 must be
rolled back for drift on the feature it skews; a healthy v3 must be promoted through every
step; the stable revision never has fewer than minWarm Ready pods while it happens. Then the
same story as `make demo GATEWAY=1` tells it: traffic through the user's HTTPRoute, whose
weights the operator sets at each step and takes back from the canary on the rollback."""

from contextlib import ExitStack

import pytest
from operator_harness import ClusterReader, WarmWatcher

from modeldeploy.devenv import testruns
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.demo import Demo, DemoResult, ReleaseOutcome, summary
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

SKEWED_FEATURE = "monthly_charges"


def run_demo(
    kube: KwokCluster, prometheus: PrometheusServer, namespace: str, *, gateway_api: bool
) -> tuple[Demo, DemoResult]:
    """The story, run and printed, with the lowest count of the stable's Ready pods watched
    from the first Stable on (asserted never below minWarm)."""
    lines: list[str] = []
    with ExitStack() as watchers:
        watcher: list[WarmWatcher] = []

        def watch_once_stable(outcome: ReleaseOutcome) -> None:
            if not watcher:  # from the first Stable on, sample continuously
                watcher.append(
                    watchers.enter_context(
                        WarmWatcher(ClusterReader(kube), namespace, demo.name, demo.min_warm)
                    )
                )

        demo = Demo(
            kube,
            prometheus.url,
            prometheus.targets_dir,
            testruns.run_dir() / f"e2e-demo-{namespace}",
            namespace=namespace,
            say=lambda line: (lines.append(line), print(line)),  # type: ignore[func-returns-value]
            after_release=watch_once_stable,
            gateway_api=gateway_api,
            # Through the route the canary gets exactly its step's share (25%, where the
            # replica ratio gives it a third), so its evidence takes longer: 192 s for v3 on
            # an idle machine, and a release timed out at 300 s on a loaded one.
            release_timeout=600.0 if gateway_api else 300.0,
        )
        result = demo.run()
    for line in summary(result):
        print(line)
    (warm,) = watcher
    warm.assert_never_below()
    return demo, result


def assert_the_story(demo: Demo, result: DemoResult) -> None:
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


def test_skewed_release_rolls_back_and_healthy_release_is_promoted(
    kube: KwokCluster, prometheus: PrometheusServer
) -> None:
    demo, result = run_demo(kube, prometheus, "e2e", gateway_api=False)
    assert_the_story(demo, result)
    assert not [o.route_shares for o in result.outcomes if o.route_shares]


@pytest.mark.timeout(1200)  # 240 s on an idle machine; a release may take up to 600 s
def test_the_story_through_an_http_route_follows_its_weights(
    kube: KwokCluster, prometheus: PrometheusServer
) -> None:
    demo, result = run_demo(kube, prometheus, "e2e-gateway", gateway_api=True)
    assert_the_story(demo, result)
    first, skewed, healthy = result.outcomes
    steps = demo.story.manifest["spec"]["rollout"]["canary"]["steps"]
    # The route's weights, as the demo read them from the cluster: all on the stable...
    assert first.route_shares == [0], first.route_shares
    # ...the first step's on the skewed canary, then back on the stable after the rollback...
    assert steps[0] in skewed.route_shares, skewed.route_shares
    assert skewed.route_shares[-1] == 0, skewed.route_shares
    # ...and every step exactly (a route's weights are not a replica ratio), then promotion.
    assert [s for s in healthy.route_shares if s] == steps, healthy.route_shares
    assert healthy.route_shares[-1] == 0, healthy.route_shares
    assert healthy.weights == steps, healthy.weights  # status read the route's back
