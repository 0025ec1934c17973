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
    describe,
    describe_checks,
    load_story,
    release_manifest,
    snapshot,
    summary,
)
from modeldeploy.devenv.imagemap import ImageMap
from modeldeploy.devenv.images import RECIPES

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
