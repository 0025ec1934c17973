"""`status`'s tree of owned objects, `history`'s merged trail and name completion, from plain
data as the apiserver returns it."""

from datetime import UTC, datetime
from typing import Any

import pytest
from test_cli_render import progressing, rolled_back, row

from modeldeploy.console import render, views
from modeldeploy.console.completion import matching
from modeldeploy.console.objects import MAX_PODS_SHOWN, objects_view

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 12, 5, tzinfo=UTC)
UID = "u-churn"
Body = dict[str, Any]
STABLE, CANARY = "5d8f7c9b2a", "9a1b2c3d4e"


def meta(name: str, labels: Body | None = None, owned: bool = True) -> Body:
    refs = [{"controller": True, "uid": UID if owned else "someone-else"}]
    return {"name": name, "labels": labels or {}, "ownerReferences": refs,
            "creationTimestamp": "2026-11-20T12:00:00Z"}  # fmt: skip


def deployment(revision: str, track: str, replicas: int, ready: int) -> Body:
    labels = {"modeldeploy.io/name": "churn", "modeldeploy.io/revision": revision,
              "modeldeploy.io/track": track}  # fmt: skip
    return {
        "metadata": meta(f"churn-{revision}", labels),
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready, "updatedReplicas": replicas},
    }


def pod(name: str, revision: str, *, ready: bool, waiting: str | None = None) -> Body:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-11-20T12:04:00Z",
                     "labels": {"modeldeploy.io/name": "churn",
                                "modeldeploy.io/revision": revision}},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"restartCount": 2 if waiting else 0, "state": state}]},
    }  # fmt: skip


def listed() -> dict[str, list[Body] | None]:
    return {
        "Deployment": [deployment(CANARY, "canary", 1, 0), deployment(STABLE, "stable", 3, 3)],
        "Service": [
            {"metadata": meta("churn"), "spec": {"selector": {"modeldeploy.io/name": "churn"}}},
            {"metadata": meta("churn-intruder", owned=False), "spec": {"selector": {}}},
        ],
        "HorizontalPodAutoscaler": [{
            "metadata": meta("churn-stable"),
            "spec": {"scaleTargetRef": {"name": f"churn-{STABLE}"}, "minReplicas": 2,
                     "maxReplicas": 10},
            "status": {"currentReplicas": 3, "desiredReplicas": 4},
        }],
        "PodDisruptionBudget": [{
            "metadata": meta("churn-stable"),
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {
                "modeldeploy.io/name": "churn", "modeldeploy.io/revision": STABLE}}},
            "status": {"currentHealthy": 3, "disruptionsAllowed": 1},
        }],
        "Pod": [
            *(pod(f"churn-{STABLE}-{i}", STABLE, ready=True) for i in range(3)),
            pod(f"churn-{CANARY}-0", CANARY, ready=False, waiting="CrashLoopBackOff"),
        ],
    }  # fmt: skip


def owned_obj() -> Body:
    obj = progressing()
    obj["metadata"]["uid"] = UID
    return obj


def test_the_tree_shows_revisions_with_pods_hpa_pdb_services_and_traffic() -> None:
    objects = objects_view(owned_obj(), listed())
    assert [(r["track"], r["revision"]) for r in objects["revisions"]] == [
        ("stable", STABLE), ("canary", CANARY),
    ]  # fmt: skip
    assert [s["name"] for s in objects["services"]] == ["churn"]  # not someone else's
    assert objects["traffic"] == {  # complete.yaml: HTTPRoute churn, not read here
        "mode": "gatewayAPI", "requested": 5, "effective": 5, "httpRoute": "churn",
        "routeWeights": None,
    }  # fmt: skip
    text = render.text(render.objects_tree("churn", objects, NOW))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert lines[0] == "ModelDeployment/churn"
    split = "traffic (gatewayAPI): canary requested 5%, effective 5%; HTTPRoute/churn weights"
    assert f"{split} not readable" in " ".join(text.split())
    assert row(text, "├── stable") == (f"├── stable {STABLE} Deployment/churn-{STABLE} 3/3 Ready")
    flat = " ".join(text.split())
    assert "HorizontalPodAutoscaler/churn-stable current 3, desired 4, min 2, max 10" in flat
    assert "PodDisruptionBudget/churn-stable minAvailable 2, healthy 3, disruptions allowed 1" in (
        flat
    )
    assert f"canary {CANARY} Deployment/churn-{CANARY} 0/1 Ready" in flat
    assert f"pod churn-{CANARY}-0 CrashLoopBackOff ready 0/1 restarts 2 age 1m" in flat
    assert "Service/churn selector modeldeploy.io/name=churn" in flat


def test_route_weights_and_what_could_not_be_read() -> None:
    obj = owned_obj()
    obj["spec"]["rollout"]["traffic"] = {"mode": "gatewayAPI", "httpRoute": "churn-route"}
    weights = [{"name": "churn-stable", "weight": 95}, {"name": "churn-canary", "weight": 5}]
    route = {"spec": {"rules": [{"backendRefs": weights}]}}
    unreadable: dict[str, list[Body] | None] = dict.fromkeys(listed())
    objects = objects_view(obj, unreadable, route)
    assert objects["traffic"]["routeWeights"] == [
        {"service": "churn-stable", "weight": 95}, {"service": "churn-canary", "weight": 5},
    ]  # fmt: skip
    text = " ".join(render.text(render.objects_tree("churn", objects, NOW)).split())
    assert "HTTPRoute/churn-route weights churn-stable=95, churn-canary=5" in text
    assert "Deployments: not readable" in text
    assert "Services: not readable" in text


def test_many_pods_are_counted_and_a_shadow_canary_is_named_so() -> None:
    obj = owned_obj()
    obj["status"]["step"] = None  # the shadow phase of a rollout mirroring traffic
    obj["status"]["requestedWeight"] = 0  # as the operator writes it there
    obj["spec"]["rollout"]["shadow"] = {"percent": 10}
    many = listed()
    many["Pod"] = [pod(f"churn-{STABLE}-{i:02}", STABLE, ready=True) for i in range(14)]
    objects = objects_view(obj, many)
    assert [r["track"] for r in objects["revisions"]] == ["stable", "shadow"]
    assert objects["traffic"]["requested"] == 0
    text = render.text(render.objects_tree("churn", objects, NOW))
    assert text.count(f"pod churn-{STABLE}-") == MAX_PODS_SHOWN
    assert f"... and {14 - MAX_PODS_SHOWN} more pods" in text


def test_status_shows_the_owner_and_the_tree() -> None:
    view = views.summary(owned_obj(), [])
    view["objects"] = objects_view(owned_obj(), listed())
    text = render.text(render.status_view(view, views.analysis_of(owned_obj()), NOW))
    assert row(text, "owner") == (
        "owner retention · ml-oncall@example.com (#churn-model on chat) · runbook "
        "https://runbooks.example/ml/churn?section=rollback#canary"
    )
    assert text.index("Conditions") < text.index("ModelDeployment/churn") < text.index("Events")
    assert "owner" not in render.text(
        render.status_view(views.summary(rolled_back(), []), views.analysis_of(rolled_back()), NOW)
    )


def test_history_merges_status_history_and_events_oldest_first() -> None:
    events = [
        {"metadata": {"name": "churn.aaaa"}, "type": "Warning", "reason": "AnalysisFailed",
         "message": "b7c8d9e0f1: feature-psi 3.91 [owner: retention]",
         "lastTimestamp": "2026-11-20T12:02:00Z", "count": 2},
        {"metadata": {"name": "churn.bbbb"}, "type": "Warning", "reason": "RolledBack",
         "message": "b7c8d9e0f1 rolled back", "lastTimestamp": "2026-11-20T12:03:00Z"},
        {"metadata": {"name": "churn.cccc"}, "type": "Normal", "reason": "RolloutStarted",
         "message": "older than the history", "lastTimestamp": "2026-11-20T11:00:00Z"},
    ]  # fmt: skip
    trail = views.trail_view(rolled_back(), events)
    assert [(t["source"], t["event"]) for t in trail] == [
        ("event", "RolloutStarted"), ("history", "Started"), ("event", "AnalysisFailed"),
        ("history", "RolledBack"), ("event", "RolledBack"),
    ]  # fmt: skip
    assert trail[2]["key"] == "churn.aaaa"
    assert trail[1]["key"] is None
    text = render.text(render.history_table(trail, NOW))
    assert row(text, "2026-11-20T12:02:00Z") == (
        "2026-11-20T12:02:00Z 3m AnalysisFailed b7c8d9e0f1: feature-psi 3.91 [owner: retention] "
        "(x2) event"
    )
    assert views.trail_view(rolled_back(), None) == [t for t in trail if t["source"] == "history"]


def test_completion_offers_the_names_starting_with_what_was_typed() -> None:
    names = ["fraud", "churn", "churn-eu", "Churn"]
    assert matching(names, "ch") == ["churn", "churn-eu"]
    assert matching(names, "") == ["Churn", "churn", "churn-eu", "fraud"]
    assert matching([*names, "churn"], "churn") == ["churn", "churn-eu"]
    assert matching(names, "x") == []
