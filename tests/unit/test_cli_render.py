"""The CLI's views and tables, from ModelDeployment objects as the apiserver returns them:
the status example, a rolled-back rollout, an object without status."""

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.console import render, views
from modeldeploy.console.explain import explain

OWN_QUERY = 'acc{revision="{{revision}}",namespace="{{namespace}}"}'

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modeldeployments"
NOW = datetime(2026, 11, 20, 12, 5, tzinfo=UTC)
Body = dict[str, Any]


def example(name: str) -> Body:
    data: Body = yaml.safe_load((EXAMPLES / name).read_text())
    return data


def progressing() -> Body:
    """complete.yaml with the status example: step 2 of 4, latency failing once."""
    obj = example("complete.yaml")
    obj["metadata"].update(namespace="ml", generation=3, creationTimestamp="2026-11-01T00:00:00Z")
    obj["status"] = example("status.yaml")["status"]
    return obj


def rolled_back() -> Body:
    """A canary rolled back on drift and a custom minimum, after 3 failed analyses."""
    obj = example("minimal.yaml")
    obj["metadata"].update(namespace="fraud-ml", generation=7, uid="u-1")
    obj["spec"]["analysis"] = {
        "failureLimit": 3,
        "minSamples": 400,
        "custom": [{"name": "accuracy", "query": OWN_QUERY, "min": 0.8}],
    }
    checks = [
        {"name": "feature-psi/monthly_charges", "value": 3.91, "threshold": 0.1,
         "samples": 640, "verdict": "fail"},
        {"name": "custom/accuracy", "value": 0.72, "threshold": 0.8, "samples": 640,
         "verdict": "fail"},
        {"name": "error-rate", "value": 0.001, "threshold": 0.01, "samples": 640,
         "verdict": "pass"},
    ]  # fmt: skip
    reason = "failure 3 of 3: feature-psi of monthly_charges: 3.91 > max 0.1, n=640"
    obj["status"] = {
        "phase": "RolledBack",
        "message": f"b7c8d9e0f1 rolled back ({reason}); serving 5d8f7c9b2a",
        "observedGeneration": 7,
        "stableRevision": "5d8f7c9b2a",
        "failedRevision": "b7c8d9e0f1",
        "consecutiveFailures": 3,
        "lastAnalysis": {
            "time": "2026-11-20T12:03:00Z",
            "revision": "b7c8d9e0f1",
            "samples": 640,
            "verdict": "fail",
            "checks": checks,
        },
        "conditions": [
            {
                "type": "Degraded",
                "status": "True",
                "reason": "RolledBack",
                "message": f"b7c8d9e0f1: {reason}",
                "lastTransitionTime": "2026-11-20T12:03:00Z",
            }
        ],
        "history": [
            entry("Started", "changed: image r/churn:2", "2026-11-20T11:50:00Z"),
            entry("RolledBack", reason, "2026-11-20T12:03:00Z"),
        ],
    }
    return obj


def entry(event: str, reason: str, time: str) -> Body:
    revision = {"revision": "b7c8d9e0f1", "version": "2026-11-20", "image": "r/churn:2"}
    return {**revision, "event": event, "reason": reason, "time": time}


def status_text(obj: Body, events: list[Body] | None = None) -> str:
    view = views.summary(obj, events if events is not None else [])
    return render.text(render.status_view(view, views.analysis_of(obj), NOW))


def row(text: str, first: str) -> str:
    """The table row that starts with `first`, single-spaced."""
    line = next(line for line in text.splitlines() if line.strip().startswith(first))
    return " ".join(line.split())


def row_of(text: str, *words: str) -> str:
    """The row whose first words are `words`, single-spaced."""
    return next(
        " ".join(line.split())
        for line in text.splitlines()
        if line.split()[: len(words)] == list(words)
    )


def test_status_example_shows_phase_traffic_step_and_every_check() -> None:
    text = status_text(progressing())
    assert text.startswith("churn in ml: Progressing")
    assert "canary 9a1b2c3d4e 5% · stable 5d8f7c9b2a 95%" in text
    assert "step 2 of 4 (5%), steps 1% 5% 25% 50%, since 2026-11-20T12:00:00Z (5m ago)" in text
    assert "0f1e2d3c4b kept warm until 2026-11-20T10:10:00Z" in text
    assert "consecutive failures 1 of 2" in text
    assert row(text, "latency-p99") == "latency-p99 720.5 ms max 600 ms 812 fail"
    assert row(text, "error-rate") == "error-rate 0.002 max 0.01 812 pass"
    # complete.yaml's custom accuracy check has a minimum: shown as such, without data
    assert row(text, "custom/accuracy") == "custom/accuracy no data min 0.8 0 inconclusive"
    assert row(text, "Progressing").startswith("Progressing True StepAdvanced at step 2 of 4")
    assert row_of(text, "gate", "offline-eval") == (
        "gate offline-eval (preRollout): approved 2026-11-20T11:55:00Z (10m ago): HTTP 200: "
        '{"approved": true}'
    )
    assert row_of(text, "gate", "sign-off") == (
        "gate sign-off (step) at step 2: refused 2026-11-20T12:04:00Z (1m ago): HTTP 403: "
        "waiting for the model owner"
    )
    assert row(text, "notifying") == "notifying 1 pending (status.pendingNotifications)"


def test_rolled_back_status_names_the_failing_checks_with_value_threshold_and_samples() -> None:
    text = status_text(rolled_back())
    assert text.startswith("churn in fraud-ml: RolledBack")
    assert "b7c8d9e0f1 (not rolled out again by itself: modeldeploy retry churn)" in text
    assert row(text, "traffic") == "traffic stable 5d8f7c9b2a 100%"
    assert "consecutive failures 3 of 3 (analysis.failureLimit)" in text
    assert row(text, "feature-psi/monthly_charges") == (
        "feature-psi/monthly_charges 3.91 max 0.1 640 fail"
    )
    assert row(text, "custom/accuracy") == "custom/accuracy 0.72 min 0.8 640 fail"
    assert row(text, "Degraded").startswith("Degraded True RolledBack b7c8d9e0f1: failure 3 of 3")


def test_explain_verdict_of_a_rollback_names_checks_and_limits() -> None:
    result = explain(rolled_back())
    assert result["decision"] == (
        "b7c8d9e0f1 was rolled back at 2026-11-20T12:03:00Z: failure 3 of 3: feature-psi of "
        "monthly_charges: 3.91 > max 0.1, n=640"
    )
    assert [c["reason"] for c in result["failing"]] == [
        "feature-psi/monthly_charges 3.91 > max 0.1 on 640 samples",
        "custom/accuracy 0.72 < min 0.8 on 640 samples",
    ]
    assert result["passing"][0]["reason"] == "error-rate 0.001 within max 0.01 on 640 samples"
    assert "its analyses failed 3 times in a row; analysis.failureLimit is 3" in result["details"]
    assert result["policy"]["failureLimit"] == 3
    assert result["policy"]["minSamples"] == 400
    text = render.text(render.explanation(result))
    assert "Failing:\n  feature-psi/monthly_charges 3.91 > max 0.1 on 640 samples" in text
    assert "`modeldeploy retry churn`" in text


def test_explain_verdict_while_holding_counts_failures_and_no_data() -> None:
    result = explain(progressing())
    assert result["decision"].startswith(
        "9a1b2c3d4e holds at step 2 of 4 (5%): its last analysis failed (1 of 2"
    )
    assert result["details"] == ["one more failed analysis rolls it back"]
    assert result["inconclusive"][0]["reason"] == (
        "custom/accuracy: no verdict, 0 of 200 samples (analysis.minSamples)"
    )
    obj = progressing()
    obj["status"]["lastAnalysis"]["verdict"] = "inconclusive"
    held = explain(obj)
    assert held["decision"] == (
        "9a1b2c3d4e holds at step 2 of 4 (5%): its last analysis gave no verdict"
    )
    # complete.yaml: noDataTimeout 20m, onNoData rollback; no verdict since 11:58:30
    assert held["details"] == [
        "after analysis.noDataTimeout 20m without a verdict it rolls back (onNoData=rollback) "
        "(no verdict since 2026-11-20T11:58:30Z, i.e. at 2026-11-20T12:18:30Z)"
    ]


def test_explain_verdict_of_a_passing_canary_and_of_a_quiet_stable() -> None:
    obj = progressing()
    obj["status"]["lastAnalysis"]["verdict"] = "pass"
    assert explain(obj)["decision"] == (
        "9a1b2c3d4e passed its analysis at step 2 of 4 (5%): it moves to 25% once "
        "rollout.stepInterval has passed"
    )
    obj["status"]["step"] = 3
    assert explain(obj)["decision"] == (
        "9a1b2c3d4e passed its last step and waits for approval: `modeldeploy approve churn`"
    )
    stable = rolled_back()
    stable["status"].update(phase="Stable", failedRevision=None, lastAnalysis=None, conditions=[])
    result = explain(stable)
    assert result["decision"] == "nothing under way: 5d8f7c9b2a serves (Stable)"
    assert result["details"][0].startswith("last event: RolledBack b7c8d9e0f1 at 2026-11-20T12:03")


def test_an_object_without_status_still_renders() -> None:
    obj = example("minimal.yaml")
    obj["metadata"]["namespace"] = "ml"
    text = status_text(obj)
    assert "churn in ml: (no status)" in text
    assert "no status yet: the operator has not reconciled it" in text
    assert "No analysis recorded yet." in text
    assert "(observed never)" in text
    assert explain(obj)["decision"].startswith("no status yet")


def test_a_status_from_another_version_is_shown_as_far_as_it_goes() -> None:
    obj = progressing()
    obj["spec"]["rollout"] = {"canary": {"steps": "not a list"}}  # unreadable: defaults
    obj["status"]["lastAnalysis"]["checks"].append({"name": "new-kind-of-check"})
    text = status_text(obj)
    assert "new-kind-of-check" in text
    assert views.summary(obj)["steps"] == [10]


def test_events_newest_last_with_counts_and_unreadable_events_said_so() -> None:
    events = [
        {"type": "Normal", "reason": "StepAdvanced", "message": "9a1b2c3d4e: 5% of traffic",
         "lastTimestamp": "2026-11-20T12:00:00Z"},
        {"type": "Warning", "reason": "AnalysisFailed", "message": "latency-p99 720.5 > max 600",
         "count": 2, "lastTimestamp": "2026-11-20T12:04:30Z"},
        {"type": "Normal", "reason": "RolloutStarted", "message": "9a1b2c3d4e (image)",
         "eventTime": "2026-11-20T11:55:00.000000Z"},
    ]  # fmt: skip
    assert [e["reason"] for e in views.events_view(events)] == [
        "RolloutStarted", "StepAdvanced", "AnalysisFailed",
    ]  # fmt: skip
    text = status_text(progressing(), events)
    assert row(text, "30s") == "30s (x2) Warning AnalysisFailed latency-p99 720.5 > max 600"
    obj = progressing()
    view = views.summary(obj, None)
    unreadable = render.text(render.status_view(view, views.analysis_of(obj), NOW))
    assert "Events: not readable (no permission to list events)" in unreadable


def test_pending_commands_and_stale_status_are_pointed_out() -> None:
    obj = progressing()
    obj["metadata"]["generation"] = 4
    obj["metadata"]["annotations"] = {"modeldeploy.io/promote": "9a1b2c3d4e", "team": "x"}
    text = status_text(obj)
    assert "modeldeploy.io/promote=9a1b2c3d4e (not yet acted on by the operator)" in text
    assert "the operator has not acted on the change yet" in text
    assert views.summary(obj)["pendingCommands"] == {"modeldeploy.io/promote": "9a1b2c3d4e"}


def test_list_and_history_tables() -> None:
    items = [views.summary(progressing()), views.summary(rolled_back())]
    text = render.text(render.list_view(items, NOW, namespaces=True))
    assert row(text, "ml") == (
        "ml churn Progressing 5% 5d8f7c9b2a 9a1b2c3d4e step 2 of 4 (5%) fail 19d retention"
    )
    assert row(text, "fraud-ml") == "fraud-ml churn RolledBack - 5d8f7c9b2a - - fail -"
    history = render.text(render.history_table(views.trail_view(rolled_back(), None), NOW))
    assert row(history, "2026-11-20T12:03:00Z") == (
        "2026-11-20T12:03:00Z 2m RolledBack b7c8d9e0f1 2026-11-20 failure 3 of 3: feature-psi of "
        "monthly_charges: 3.91 > max 0.1, n=640 history"
    )


@pytest.mark.parametrize(
    ("since", "expected"),
    [("2026-11-20T12:04:58Z", "2s"), ("2026-11-20T12:00:00Z", "5m"),
     ("2026-11-20T11:58:30Z", "6m30s"), ("2026-11-20T09:35:00Z", "2h30m"),
     ("2026-11-18T10:05:00Z", "2d2h"), ("2026-10-01T00:00:00Z", "50d"), (None, ""),
     ("yesterday", "")],
)  # fmt: skip
def test_age_reads_like_kubectl(since: str | None, expected: str) -> None:
    assert views.age(since, NOW) == expected


def test_json_view_is_plain_data() -> None:
    view = views.summary(rolled_back(), [])
    assert view == copy.deepcopy(view)
    assert view["phase"] == "RolledBack"
    assert view["failedRevision"] == "b7c8d9e0f1"
    assert view["killSwitch"] == {"engaged": False, "mode": "scaleToZero"}
    assert view["failureLimit"] == 3
    assert view["events"] == []


def test_pod_problems_are_shown_with_pod_revision_reason_and_message() -> None:
    text = status_text(progressing())
    assert "Pod problems" in text
    assert row(text, "churn-9a1b2c3d4e-5f7b9c-x2k4q").startswith(
        "churn-9a1b2c3d4e-5f7b9c-x2k4q (model) 9a1b2c3d4e (canary) CrashLoopBackOff 2 back-off 20s"
    )
    assert views.summary(progressing())["podProblems"][0]["reason"] == "CrashLoopBackOff"
    assert "Pod problems" not in status_text(rolled_back())


def test_the_stage_names_the_cohort_phase() -> None:
    assert views.stage(None, [10, 50], "header x-canary=true") == "cohort (header x-canary=true)"
    assert views.stage(None, [10, 50]) == "shadow"
    assert views.stage(1, [10, 50]) == "step 2 of 2 (50%)"
