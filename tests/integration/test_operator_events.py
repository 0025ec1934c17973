"""The Event outbox on a real control plane: an operator that dies right after writing a
transition into status, before posting its Events (or after posting them, before clearing
them from status), loses none and duplicates none once it is started again.

Where it dies is the operator's test-only setting `MODELDEPLOY_TEST_EXIT_AFTER`
(`handlers.EXIT_AFTER_ENV`): the process ends there at once, without cleanup, as a SIGKILL
at that moment would end it. A kill from outside could not hit the moment between the two
writes reliably."""

from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    apply_object,
    ensure_crd,
    ensure_namespace,
    model_deployment,
    patch_model_deployment,
    wait_for,
)

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.handlers import (
    EXIT_AFTER_ENV,
    EXIT_AFTER_EVENTS_POSTED,
    EXIT_AFTER_EVENTS_WRITTEN,
    EXIT_FOR_TEST_CODE,
)

pytestmark = pytest.mark.integration

NAMESPACE = "op-events"
NAME = "churn"
ONCE_PER_TRANSITION = ("Deploying", "RolloutStarted", "StepAdvanced", "Promoting", "Promoted")
"""The Events of this rollout (steps 25 and 50, no analysis), each posted at one transition;
BakeComplete ends it."""


@pytest.fixture
def operator(kube: KwokCluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    """Not started: the test starts it, with the exit it asks for, again and again."""
    ensure_crd(kube)
    ensure_namespace(kube, NAMESPACE)
    op = OperatorProcess(kube, NAMESPACE, tmp_path)
    yield op
    op.stop()


def ended(op: OperatorProcess) -> bool:
    return op.process is not None and op.process.poll() is not None


def events(reader: ClusterReader) -> list[dict[str, Any]]:
    """The operator's Events on the ModelDeployment."""
    query = {"fieldSelector": f"involvedObject.name={NAME}"}
    items = reader.api.get(f"/api/v1/namespaces/{NAMESPACE}/events", query).get("items") or []
    return [e for e in items if e.get("reportingComponent", "").startswith("modeldeploy")]


def pending(reader: ClusterReader) -> list[dict[str, Any]]:
    return list(reader.status(NAMESPACE, NAME).get("pendingEvents") or [])


def started_to_exit(op: OperatorProcess, step: str) -> None:
    """Start the operator, to end after `step` of a reconcile; wait until it has."""
    op.env[EXIT_AFTER_ENV] = step
    # It may end before its liveness endpoint answers (start raises): the exit code says why.
    with suppress(RuntimeError):
        op.start()
    wait_for(lambda: ended(op), timeout=60, what=f"operator ended after {step}")
    assert op.process is not None
    assert op.process.returncode == EXIT_FOR_TEST_CODE, op.log()[-3000:]


def test_killed_between_a_transitions_status_write_and_its_events_loses_and_repeats_none(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    left_pending: list[dict[str, Any]] = []
    kills = 0

    def killed_before_posting() -> None:
        """The operator ended with a transition written and its Events not posted."""
        nonlocal kills
        kills += 1
        waiting = pending(reader)
        assert waiting, "killed without pending Events"
        posted = {e["metadata"]["name"] for e in events(reader)}
        assert not posted & {e["name"] for e in waiting}
        left_pending.extend(waiting)

    # The first revision: written (Deploying pending), killed before the post.
    operator.env[EXIT_AFTER_ENV] = EXIT_AFTER_EVENTS_WRITTEN
    operator.start()
    apply_object(kube, model_deployment(NAME, NAMESPACE, "registry.example/churn:1"))
    wait_for(lambda: ended(operator), timeout=60, what="operator ended after the first write")
    killed_before_posting()
    # Started again, killed after posting what was pending, before clearing it from status.
    started_to_exit(operator, EXIT_AFTER_EVENTS_POSTED)
    assert [e["reason"] for e in pending(reader)] == ["Deploying"]
    assert [e["reason"] for e in events(reader)] == ["Deploying"]
    # Started again: it posts the same Event again (AlreadyExists: no duplicate), clears it.
    operator.env[EXIT_AFTER_ENV] = EXIT_AFTER_EVENTS_WRITTEN
    operator.start()
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready") and not pending(reader),
             timeout=60, what="Ready, nothing pending")  # fmt: skip
    assert [e["reason"] for e in events(reader)] == ["Deploying"]

    # A rollout, the operator killed after writing each of its transitions.
    patch_model_deployment(kube, NAMESPACE, NAME, {"spec": {"image": "registry.example/churn:2"}})
    while True:
        wait_for(lambda: ended(operator), timeout=60, what="operator ended after a transition")
        assert operator.process is not None
        assert operator.process.returncode == EXIT_FOR_TEST_CODE, operator.log()[-3000:]
        killed_before_posting()
        if "BakeComplete" in {e["reason"] for e in left_pending}:
            break
        started_to_exit(operator, EXIT_AFTER_EVENTS_WRITTEN)
    operator.env.pop(EXIT_AFTER_ENV)
    operator.start()
    wait_for(lambda: not pending(reader), timeout=60, what="the last Events posted")

    posted = events(reader)
    names = Counter(e["metadata"]["name"] for e in posted)
    assert {e["name"] for e in left_pending} <= set(names)
    reasons = Counter(e["reason"] for e in posted)
    print(f"[events] {len(left_pending)} pending at {kills} kills before the post: {reasons}")
    for reason in (*ONCE_PER_TRANSITION, "BakeComplete"):
        assert reasons[reason] == 1, reasons
    assert max(Counter((e["reason"], e["message"]) for e in posted).values()) == 1
    history = reader.status(NAMESPACE, NAME)["history"]
    assert [h["event"] for h in history] == ["Started", "Started", "Promoted"]
    first, rollout, promoted = history
    messages = {e["reason"]: e["message"] for e in posted}
    assert first["revision"] in messages["Deploying"]
    assert rollout["revision"] in messages["RolloutStarted"]
    assert promoted["revision"] in messages["Promoted"]
