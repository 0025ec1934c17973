"""What each steering command writes, decided from the object as read: annotations naming
the revision (conditional on the resourceVersion read), spec fields, or a refusal that says
why and what would apply."""

from typing import Any

import pytest

from modeldeploy.console import steering
from modeldeploy.console.exits import CliError, ExitCode

pytestmark = pytest.mark.unit

Body = dict[str, Any]


def obj(status: Body | None = None, **rollout: Any) -> Body:
    """churn with steps 5/25/50, as read from the apiserver."""
    return {
        "metadata": {"name": "churn", "namespace": "ml", "resourceVersion": "42"},
        "spec": {
            "model": {"name": "churn", "version": "2"},
            "image": "r/churn:2",
            "rollout": {"canary": {"steps": [5, 25, 50]}, **rollout},
        },
        "status": status or {},
    }


def canary_at(step: int | None, phase: str = "Progressing") -> Body:
    return {"phase": phase, "stableRevision": "aaaa", "canaryRevision": "bbbb", "step": step}


STABLE = {"phase": "Stable", "stableRevision": "aaaa"}
ROLLED_BACK = {"phase": "RolledBack", "stableRevision": "aaaa", "failedRevision": "bbbb"}


def refusal(call: Any) -> CliError:
    with pytest.raises(CliError) as caught:
        call()
    assert caught.value.code is ExitCode.REFUSED
    return caught.value


def annotated(key: str, value: str) -> Body:
    return {"metadata": {"annotations": {key: value}, "resourceVersion": "42"}}


def test_promote_at_the_last_step_names_the_canary() -> None:
    change = steering.promote(obj(canary_at(2)))
    assert change.patch == annotated("modeldeploy.io/promote", "bbbb")
    assert change.conditional
    assert "promotion of bbbb requested" in change.done


def test_promote_with_steps_ahead_needs_full() -> None:
    error = refusal(lambda: steering.promote(obj(canary_at(0))))
    assert error.message == (
        "churn: bbbb is at step 1 of 3 (5%) with steps ahead (25%, 50%); promoting now skips them"
    )
    assert "--full" in error.hint
    assert steering.promote(obj(canary_at(0)), full=True).patch == annotated(
        "modeldeploy.io/promote", "bbbb"
    )
    # the shadow phase comes before every step
    assert "(5%, 25%, 50%)" in refusal(lambda: steering.promote(obj(canary_at(None)))).message


def test_promote_without_a_rollout_or_under_the_kill_switch() -> None:
    assert "no rollout under way (Stable)" in refusal(lambda: steering.promote(obj(STABLE))).message
    error = refusal(lambda: steering.promote(obj(ROLLED_BACK), full=True))
    assert "modeldeploy retry churn" in error.hint
    killed = obj(canary_at(2, "Killed"))
    killed["spec"]["killSwitch"] = {"engaged": True}
    assert "kill switch is engaged" in refusal(lambda: steering.promote(killed)).message


def test_promote_while_promoting_writes_nothing() -> None:
    change = steering.promote(obj(canary_at(2, "Promoting")))
    assert change.patch is None
    assert "already being promoted" in change.done


def test_approve_only_at_the_approval_gate() -> None:
    gated = obj(canary_at(2, "Paused"), requireApproval=True)
    assert steering.approve(gated).patch == annotated("modeldeploy.io/promote", "bbbb")
    early = refusal(lambda: steering.approve(obj(canary_at(1), requireApproval=True)))
    assert "not yet at the approval gate" in early.message
    ungated = refusal(lambda: steering.approve(obj(canary_at(2))))
    assert "does not wait for approval" in ungated.message


def test_abort_and_retry_name_their_revisions() -> None:
    assert steering.abort(obj(canary_at(0))).patch == annotated("modeldeploy.io/abort", "bbbb")
    assert "nothing to abort" in refusal(lambda: steering.abort(obj(STABLE))).message
    assert steering.retry(obj(ROLLED_BACK)).patch == annotated("modeldeploy.io/retry", "bbbb")
    assert "nothing to retry" in refusal(lambda: steering.retry(obj(STABLE))).message


def test_pause_and_resume_are_spec_fields_and_idempotent() -> None:
    change = steering.set_paused(obj(canary_at(0)), True)
    assert change.patch == {"spec": {"rollout": {"paused": True}}}
    assert not change.conditional
    assert steering.set_paused(obj(canary_at(0), paused=True), False).patch == {
        "spec": {"rollout": {"paused": False}}
    }
    same = steering.set_paused(obj(canary_at(0)), False)
    assert same.patch is None
    assert "already not paused" in same.done
    waiting = steering.set_paused(obj(canary_at(2, "Paused"), requireApproval=True), False)
    assert "modeldeploy approve churn" in waiting.done


def test_kill_switch() -> None:
    change = steering.set_kill_switch(obj(STABLE), True)
    assert change.patch == {"spec": {"killSwitch": {"engaged": True}}}
    assert "unkill churn" in change.done
    assert steering.set_kill_switch(obj(STABLE), True, "fallback").patch == {
        "spec": {"killSwitch": {"engaged": True, "mode": "fallback"}}
    }
    killed = obj(STABLE)
    killed["spec"]["killSwitch"] = {"engaged": True, "mode": "scaleToZero"}
    assert steering.set_kill_switch(killed, True).patch is None
    assert steering.set_kill_switch(killed, True, "fallback").patch is not None
    assert steering.set_kill_switch(killed, False).patch == {
        "spec": {"killSwitch": {"engaged": False}}
    }
    assert steering.set_kill_switch(obj(STABLE), False).patch is None
