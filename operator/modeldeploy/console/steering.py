"""What each steering command writes, decided from the object as read (pure).

Two kinds of writes, as the API defines them:

- one-shot commands are annotations whose value names the revision they are meant for
  (`modeldeploy.io/promote=<canaryRevision>`, `abort=<canaryRevision>`,
  `retry=<failedRevision>`); the operator consumes them. They are written with the
  resourceVersion that was read, so that a rollout that moved on meanwhile (a newer canary)
  is re-read and decided again instead of being acted on blindly;
- holding and the kill switch are declarative spec fields (`spec.rollout.paused`,
  `spec.killSwitch.engaged`/`mode`), written as merge patches.

A command that does not apply to the current state raises CliError(REFUSED) saying why and
what would apply; one whose effect is already in place is a no-op (`patch` None).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeldeploy.api import ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_RETRY
from modeldeploy.console.exits import CliError, ExitCode
from modeldeploy.console.views import Body, remaining_steps, stage_of, summary

ACTED_ON = "the operator acts on it at its next reconcile"


@dataclass(frozen=True)
class Change:
    patch: Body | None
    """Merge patch of the ModelDeployment (None: nothing to write)."""
    done: str
    """What happened, for people."""
    conditional: bool = False
    """The patch carries the resourceVersion read (it rests on status)."""


def _refuse(message: str, hint: str = "") -> CliError:
    return CliError(ExitCode.REFUSED, message, hint)


def _annotate(obj: Mapping[str, Any], key: str, revision: str, done: str) -> Change:
    meta = obj.get("metadata") or {}
    patch: Body = {"metadata": {"annotations": {key: revision}}}
    if meta.get("resourceVersion"):
        patch["metadata"]["resourceVersion"] = meta["resourceVersion"]
    return Change(patch, done, conditional=True)


def _no_rollout(view: Body, verb: str) -> CliError:
    name, phase = view["name"], view["phase"] or "no status yet"
    hint = ""
    if view["failedRevision"]:
        hint = (
            f"{view['failedRevision']} was rolled back; `modeldeploy retry {name}` rolls it "
            "out again"
        )
    return _refuse(f"nothing to {verb}: {name} has no rollout under way ({phase})", hint)


def _canary(view: Body, verb: str) -> str:
    canary = view["canaryRevision"]
    if not canary:
        raise _no_rollout(view, verb)
    return str(canary)


def promote(obj: Mapping[str, Any], full: bool = False) -> Change:
    """Promote the canary now. The operator promotes in one go (there is no single-step
    promote), so with steps still ahead this needs `full`, i.e. skipping them."""
    view = summary(obj)
    name = view["name"]
    canary = _canary(view, "promote")
    if view["killSwitch"]["engaged"]:
        raise _refuse(
            f"{name}: the kill switch is engaged; a promotion waits until it is released",
            f"`modeldeploy unkill {name}` first",
        )
    if view["phase"] == "Promoting":
        return Change(None, f"{name}: {canary} is already being promoted")
    ahead = remaining_steps(view["step"], view["steps"])
    if ahead and not full:
        steps = ", ".join(f"{p}%" for p in ahead)
        raise _refuse(
            f"{name}: {canary} is at {stage_of(view)} with steps ahead "
            f"({steps}); promoting now skips them",
            f"`modeldeploy promote {name} --full` promotes now, skipping the remaining steps",
        )
    return _annotate(
        obj,
        ANNOTATION_PROMOTE,
        canary,
        f"{name}: promotion of {canary} requested ({ANNOTATION_PROMOTE}={canary}); " + ACTED_ON,
    )


def approve(obj: Mapping[str, Any]) -> Change:
    """Let a canary that holds at its last step for a person (rollout.requireApproval) be
    promoted."""
    view = summary(obj)
    name = view["name"]
    canary = _canary(view, "approve")
    if not view["requireApproval"]:
        raise _refuse(
            f"{name} does not wait for approval (spec.rollout.requireApproval is false): it "
            "is promoted by itself after its last step",
            f"`modeldeploy promote {name} [--full]` promotes now",
        )
    ahead = remaining_steps(view["step"], view["steps"])
    if ahead:
        raise _refuse(
            f"{name}: {canary} is at {stage_of(view)}, not yet at the "
            "approval gate after its last step",
            f"`modeldeploy promote {name} --full` promotes now, skipping the remaining steps",
        )
    return promote(obj)


def abort(obj: Mapping[str, Any]) -> Change:
    view = summary(obj)
    name = view["name"]
    canary = _canary(view, "abort")
    return _annotate(
        obj,
        ANNOTATION_ABORT,
        canary,
        f"{name}: abort of {canary} requested ({ANNOTATION_ABORT}={canary}): traffic goes "
        f"back to {view['stableRevision']}; " + ACTED_ON,
    )


def retry(obj: Mapping[str, Any]) -> Change:
    view = summary(obj)
    name, failed = view["name"], view["failedRevision"]
    if not failed:
        raise _refuse(f"nothing to retry: {name} has no rolled-back revision")
    return _annotate(
        obj,
        ANNOTATION_RETRY,
        str(failed),
        f"{name}: retry of {failed} requested ({ANNOTATION_RETRY}={failed}); " + ACTED_ON,
    )


def set_paused(obj: Mapping[str, Any], paused: bool) -> Change:
    view = summary(obj)
    name = view["name"]
    if view["paused"] == paused:
        state = "paused" if paused else "not paused"
        done = f"{name}: already {state} (spec.rollout.paused={str(paused).lower()})"
        if not paused and view["requireApproval"] and view["phase"] == "Paused":
            done += f"; if it waits for approval: `modeldeploy approve {name}`"
        return Change(None, done)
    verb = "paused: the rollout holds where it is" if paused else "resumed"
    return Change(
        {"spec": {"rollout": {"paused": paused}}},
        f"{name}: {verb} (spec.rollout.paused={str(paused).lower()})",
    )


def set_kill_switch(obj: Mapping[str, Any], engaged: bool, mode: str | None = None) -> Change:
    view = summary(obj)
    name, current = view["name"], view["killSwitch"]
    wanted_mode = mode or current["mode"]
    if current["engaged"] == engaged and (not engaged or wanted_mode == current["mode"]):
        state = f"engaged ({current['mode']})" if engaged else "not engaged"
        return Change(None, f"{name}: the kill switch is already {state}")
    switch: Body = {"engaged": engaged}
    if mode is not None:
        switch["mode"] = mode
    done = (
        f"{name}: kill switch engaged ({wanted_mode}): traffic leaves the model on the next "
        f"reconcile; `modeldeploy unkill {name}` restores it"
        if engaged
        else f"{name}: kill switch released: the model serves again on the next reconcile"
    )
    return Change({"spec": {"killSwitch": switch}}, done)
