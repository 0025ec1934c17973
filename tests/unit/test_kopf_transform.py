"""Kopf's watch stream with modeldeploy.kopf_transform installed: the objects of the
operator's resources leave it slimmed, everything else as it was; and the shape of the
private Kopf function it wraps, so that a Kopf release that changes it fails here."""

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kopf._cogs.clients import watching
from kopf._cogs.configs.configuration import OperatorSettings
from kopf._cogs.structs.references import Resource

from modeldeploy import kopf_transform
from modeldeploy.handlers import SLIMMED
from modeldeploy.watchcache import LAST_APPLIED, slim

pytestmark = pytest.mark.unit

PODS = Resource("", "v1", "pods")
ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes")
MODEL_DEPLOYMENTS = Resource("modeldeploy.io", "v1alpha1", "modeldeployments")


def whole_pod(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "churn-abc-x",
            "uid": "u1",
            "resourceVersion": version,
            "labels": {"modeldeploy.io/name": "churn"},
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}] * 20,
        },
        "spec": {"containers": [{"name": "model", "env": [{"name": "X", "value": "1"}] * 20}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def stream_of(events: list[Any]) -> Any:
    """Kopf's `continuous_watch` (the list as type None events, its LISTED mark, then the
    watch), as `infinite_watch` consumes it."""

    async def continuous_watch(**_: Any) -> AsyncIterator[Any]:
        for event in events:
            yield copy.deepcopy(event)

    return continuous_watch


@pytest.fixture
def kopf_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kopf's own watch stream again after the test."""
    monkeypatch.setattr(watching, "infinite_watch", watching.infinite_watch)


async def watched(resource: Resource) -> list[Any]:
    settings = OperatorSettings()
    settings.watching.reconnect_backoff = 0
    stream = watching.infinite_watch(
        settings=settings, resource=resource, namespace="ml", _iterations=1
    )
    return [event async for event in stream]


def test_kopf_watch_stream_is_the_function_the_wrapper_expects(kopf_untouched: None) -> None:
    """Fails when a Kopf release renames or reshapes `infinite_watch` or stops looking it up
    on its module: check the new source, then EXPECTED_PARAMETERS and the Kopf pin."""
    assert kopf_transform.shaped_as_expected()


def test_objects_leave_the_stream_slimmed_and_everything_else_as_it_was(
    kopf_untouched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bookmark = {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "9"}}}
    events = [
        {"type": None, "object": whole_pod("1")},
        watching.Bookmark.LISTED,
        {"type": "MODIFIED", "object": whole_pod("2")},
        bookmark,
        {"type": "DELETED", "object": whole_pod("3")},
    ]
    monkeypatch.setattr(watching, "continuous_watch", stream_of(events))
    assert kopf_transform.install(slim, SLIMMED)
    assert kopf_transform.install(slim, SLIMMED)  # idempotent: wrapped once
    seen = asyncio.run(watched(PODS))
    assert seen[1] is watching.Bookmark.LISTED
    assert seen[3] == bookmark
    objects = [seen[0], seen[2], seen[4]]
    assert [e["type"] for e in objects] == [None, "MODIFIED", "DELETED"]
    assert [e["object"] for e in objects] == [slim(whole_pod(v)) for v in "123"]
    assert all("spec" not in e["object"] for e in objects)
    # Not one of the operator's resources: as Kopf listed it.
    route = {"kind": "HTTPRoute", "metadata": {"name": "web", "managedFields": []}, "spec": {}}
    monkeypatch.setattr(
        watching, "continuous_watch", stream_of([{"type": "ADDED", "object": route}])
    )
    assert asyncio.run(watched(ROUTES)) == [{"type": "ADDED", "object": route}]


def test_model_deployments_keep_what_the_handlers_read(
    kopf_untouched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "churn",
            "uid": "u",
            "generation": 2,
            "resourceVersion": "5",
            "annotations": {"modeldeploy.io/abort": "abc", LAST_APPLIED: "{}"},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"image": "churn@sha256:1"},
        "status": {"phase": "Progressing"},
    }
    monkeypatch.setattr(
        watching, "continuous_watch", stream_of([{"type": "ADDED", "object": body}])
    )
    kopf_transform.install(slim, SLIMMED)
    [event] = asyncio.run(watched(MODEL_DEPLOYMENTS))
    kept = event["object"]
    assert kept["spec"] == body["spec"]
    assert kept["status"] == body["status"]
    assert kept["metadata"] == {
        "name": "churn", "uid": "u", "generation": 2, "resourceVersion": "5",
        "annotations": {"modeldeploy.io/abort": "abc"},
    }  # fmt: skip


def test_a_changed_kopf_is_left_alone(
    kopf_untouched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def infinite_watch(*, settings: Any, resource: Any, namespace: Any) -> AsyncIterator[Any]:
        yield {"type": "ADDED", "object": whole_pod("1")}

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)
    assert not kopf_transform.install(slim, SLIMMED)
    assert watching.infinite_watch is infinite_watch
