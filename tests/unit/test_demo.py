"""The demo's pure parts: the story file, per-release manifests, status snapshots, lines."""

from typing import Any

import pytest

from modeldeploy.api import ModelDeployment
from modeldeploy.devenv.demo import (
    EXAMPLE,
    PROMETHEUS_ENDPOINT,
    DemoResult,
    Release,
    ReleaseOutcome,
    canary_share,
    describe,
    describe_checks,
    describe_route,
    load_story,
    release_manifest,
    snapshot,
    summary,
    through_route,
    user_route,
)
from modeldeploy.devenv.imagemap import ImageMap
from modeldeploy.devenv.images import RECIPES
from modeldeploy.routing.gateway_api import backend_weights, observe_route

pytestmark = pytest.mark.unit


def test_story_releases_are_runnable_images_with_known_expectations() -> None:
    story = load_story()
    images = ImageMap.load(EXAMPLE / "images.yaml")
    assert [r.expect for r in story.releases] == ["Stable", "RolledBack", "Stable"]
    recipes = {recipe.name for recipe in RECIPES}
    for release in story.releases:
        assert release.image in images, release.image
        assert release.recipe in recipes, release.recipe  # container mode's real image
    assert story.manifest["spec"]["image"] == story.releases[0].image


def test_release_manifest_is_a_valid_model_deployment_for_the_run() -> None:
    story = load_story()
    skewed = story.releases[1]
    manifest = release_manifest(story.manifest, skewed, "e2e")
    parsed = ModelDeployment.model_validate(manifest)
    assert parsed.spec.image == skewed.image
    assert parsed.spec.model.version == skewed.version
    assert parsed.spec.prometheus is not None
    assert parsed.spec.prometheus.endpoint == PROMETHEUS_ENDPOINT
    assert manifest["metadata"]["namespace"] == "e2e"
    assert story.manifest["spec"]["image"] != skewed.image  # the base is left untouched


def test_gateway_mode_releases_name_the_users_route_which_splits_to_the_stable() -> None:
    story = load_story()
    route = user_route("e2e")
    assert route["metadata"] == {"name": "churn-route", "namespace": "e2e"}
    routed = through_route(story, route["metadata"]["name"])
    manifest = release_manifest(routed.manifest, routed.releases[1], "e2e")
    traffic = ModelDeployment.model_validate(manifest).spec.rollout.traffic
    assert (traffic.mode, traffic.http_route) == ("gatewayAPI", "churn-route")
    assert (
        routed.manifest["spec"]["rollout"]["canary"] == story.manifest["spec"]["rollout"]["canary"]
    )
    assert "traffic" not in story.manifest["spec"]["rollout"]  # the base is left untouched
    # As the user wrote it: one backend, the stable Service, before the operator's weights.
    split = backend_weights(observe_route(route), "churn")
    assert split == (("churn-stable", 1),)
    assert canary_share(split, "churn") == 0


def test_canary_share_is_the_canary_backends_percent_of_the_routes_weight() -> None:
    assert canary_share((("churn-stable", 75), ("churn-canary", 25)), "churn") == 25
    assert canary_share((("churn-stable", 0), ("churn-canary", 0)), "churn") == 0
    assert canary_share((), "churn") == 0
    line = describe_route("churn-route", (("churn-stable", 75), ("churn-canary", 25)))
    assert line.strip() == "route churn-route: churn-stable 75, churn-canary 25"


def rolled_back() -> dict[str, Any]:
    return {
        "spec": {"rollout": {"canary": {"steps": [25, 50]}}},
        "status": {
            "phase": "RolledBack",
            "canaryWeight": 0,
            "stableRevision": "aaaa",
            "canaryRevision": "bbbb",
            "step": 0,
            "lastAnalysis": {
                "time": "2026-11-21T10:00:00Z",
                "checks": [
                    {"name": "feature-psi/monthly_charges", "verdict": "fail",
                     "value": 3.912, "threshold": 0.1, "samples": 640},
                    {"name": "latency-p95", "verdict": "pass", "value": 0.02,
                     "threshold": 0.5, "samples": 640},
                ],
            },
            "history": [{"event": "RolledBack", "reason": "feature-psi/monthly_charges 3.91"}],
        },
    }  # fmt: skip


def test_snapshot_and_lines_name_the_failing_check_with_value_threshold_and_samples() -> None:
    snap = snapshot(rolled_back(), 12.5)
    assert (snap.phase, snap.weight, snap.step, snap.steps) == ("RolledBack", 0, 0, 2)
    assert snap.reason == "feature-psi/monthly_charges 3.91"
    assert "step 1/2" in describe(snap)
    assert "canary=bbbb" in describe(snap)
    checks = describe_checks(snap)
    assert checks == "FAIL feature-psi/monthly_charges 3.91 > 0.1 (n=640); 1 passed (n=640)"


def test_round_below_min_samples_is_summed_up_not_listed() -> None:
    body = rolled_back()
    for check in body["status"]["lastAnalysis"]["checks"]:
        check.update(verdict="inconclusive", samples=56)
    assert describe_checks(snapshot(body, 1.0)) == "0 passed, 2 inconclusive (n=56)"


def test_snapshot_of_a_fresh_resource_has_no_status() -> None:
    snap = snapshot({"spec": {}}, 0.0)
    assert (snap.phase, snap.weight, snap.step, snap.checks) == ("Pending", 0, None, ())
    assert describe_checks(snap) == "no analysis yet"


def test_summary_reports_breach_to_rollback_and_the_warm_floor() -> None:
    release = Release("2", "img", "RolledBack", "skewed", "churn-v2")
    outcome = ReleaseOutcome(release, "RolledBack", "bbbb", 40.0, weights=[25],
                             reason="feature-psi/monthly_charges", first_traffic=10.0,
                             weight_zero=42.5)  # fmt: skip
    lines = summary(DemoResult([outcome], 3, 3, None, 100.0))
    text = "\n".join(lines)
    assert "v2: RolledBack (expected RolledBack)" in text
    assert "breach to rollback (first canary traffic -> weight 0): 32.5s" in text
    assert "stable Ready pods never below 3 (lowest seen: 3)" in text
