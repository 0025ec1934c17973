"""The pure bits of the Kopf glue: reading a stored status, noticing what changed."""

from unittest.mock import Mock

import pytest

from modeldeploy.handlers import Reconciler, read_status

pytestmark = pytest.mark.unit


def test_read_status_tolerates_foreign_keys_and_garbage() -> None:
    status, note = read_status({"phase": "Stable", "stableRevision": "abc", "kopf": {"x": 1}})
    assert (status.phase, status.stable_revision, note) == ("Stable", "abc", None)
    status, note = read_status({"phase": "Nonsense"})
    assert status.phase == "Pending"
    assert note is not None
    assert "unreadable" in note
    assert read_status(None)[0].stable_revision is None


def test_only_spec_and_command_changes_trigger_an_immediate_reconcile() -> None:
    reconciler = Reconciler(kube=Mock())
    key = ("ml", "churn")
    body = {"metadata": {"generation": 1, "annotations": {"other": "x"}}, "status": {}}
    assert reconciler.changed(key, body)
    assert not reconciler.changed(key, {**body, "status": {"phase": "Stable"}})
    promoted = {"metadata": {"generation": 1, "annotations": {"modeldeploy.io/promote": "r"}}}
    assert reconciler.changed(key, promoted)
    assert reconciler.changed(key, {"metadata": {"generation": 2, "annotations": {}}})
    assert key in reconciler.known
    reconciler.forget(key)
    assert key not in reconciler.known
