"""The Argo CD health check (gitops/argocd/health.lua), run by a real Lua runtime (lupa) on
status objects made by the operator's own status renderer (`rollout.report.render`) in
every phase, on the documented status example, and on the argocd-cm snippet's copy.

Argo CD runs health scripts with `obj` set and only basic functions; the script runs here in
an environment holding only `obj`, `ipairs`, `pairs`, `tostring` and `type`, so that a
library call Argo CD lacks fails the test.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from lupa import LuaRuntime

from modeldeploy.api import (
    API_VERSION,
    KIND,
    AnalysisResult,
    ModelDeploymentStatus,
    Phase,
    to_wire,
)
from modeldeploy.rollout.report import Facts, render
from modeldeploy.rollout.state import State

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "gitops" / "argocd" / "health.lua"
ARGOCD_CM = ROOT / "gitops" / "argocd" / "argocd-cm.yaml"
STATUS_EXAMPLE = ROOT / "examples" / "modeldeployments" / "status.yaml"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
GENERATION = 3
STABLE, CANARY = "5d8f7c9b2a", "9a1b2c3d4e"
Body = dict[str, Any]

SANDBOX = """
return function(script, obj)
  local env = {obj = obj, ipairs = ipairs, pairs = pairs, tostring = tostring, type = type}
  local chunk = assert(load(script, "health.lua", "t", env))
  return chunk()
end
"""


def health(obj: Body, script: str | None = None) -> tuple[str, str]:
    """(status, message) of the health script for `obj`."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    run = lua.execute(SANDBOX)
    result = run(script or HEALTH_LUA.read_text(), lua.table_from(obj, recursive=True))
    return str(result["status"]), str(result["message"])


def model_deployment(status: Body | None, generation: int = GENERATION) -> Body:
    body: Body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "churn", "namespace": "ml", "generation": generation},
        "spec": {},
    }
    if status is not None:
        body["status"] = status
    return body


def facts(**changes: Any) -> Facts:
    base: Body = {
        "generation": GENERATION,
        "revision": STABLE,
        "min_warm": 2,
        "killed": False,
        "kill_mode": "scaleToZero",
        "paused": False,
        "waiting": False,
        "steps": (10, 50),
        "stable_ready": 2,
        "canary_ready": 0,
        "canary_wanted": 0,
        "weight": 0,
        "awaiting_approval": False,
        "rollback_reason": "",
        "apply_error": None,
    }
    return Facts(**{**base, **changes})


def rendered(state: State, fact: Facts, prev_phase: Phase = "Stable") -> Body:
    """The status the operator writes, from its own renderer."""
    prev = ModelDeploymentStatus(phase=prev_phase)
    return to_wire(render(prev, state, fact, "no pods serve", NOW))


def failed_analysis(revision: str) -> AnalysisResult:
    return AnalysisResult(time=NOW, revision=revision, samples=900, verdict="fail")


ROLLOUT = {"canary_ready": 1, "canary_wanted": 1, "weight": 10}
# (case, state, facts, previous phase, Argo CD health, phase the operator reports)
CASES: list[tuple[str, State, Facts, Phase, str, Phase]] = [
    ("pending", State(stable=STABLE), facts(stable_ready=0), "Pending", "Progressing", "Pending"),
    ("stable", State(stable=STABLE), facts(), "Stable", "Healthy", "Stable"),
    (
        "canary-step",
        State(stable=STABLE, canary=CANARY, step=0, step_started_at=NOW),
        facts(revision=CANARY, **ROLLOUT),
        "Progressing",
        "Progressing",
        "Progressing",
    ),
    (
        "canary-warming-up",
        State(stable=STABLE, canary=CANARY, step=0, step_started_at=NOW),
        facts(revision=CANARY, canary_wanted=2, weight=0),
        "Progressing",
        "Progressing",
        "Progressing",
    ),
    (
        "promoting",
        State(stable=STABLE, canary=CANARY, step=1, promoting=True),
        facts(revision=CANARY, **ROLLOUT),
        "Progressing",
        "Progressing",
        "Promoting",
    ),
    (
        "awaiting-approval",
        State(stable=STABLE, canary=CANARY, step=1),
        facts(revision=CANARY, awaiting_approval=True, **ROLLOUT),
        "Progressing",
        "Suspended",
        "Paused",
    ),
    (
        "paused-before-rollout",
        State(stable=STABLE),
        facts(revision=CANARY, paused=True, waiting=True),
        "Stable",
        "Suspended",
        "Paused",
    ),
    (
        "rolled-back",
        State(stable=STABLE, failed=CANARY),
        facts(revision=CANARY, rollback_reason="latency-p99 720.5 > 600 on 812 samples"),
        "Progressing",
        "Degraded",
        "RolledBack",
    ),
    (
        "killed",
        State(stable=STABLE),
        facts(killed=True, stable_ready=0),
        "Stable",
        "Suspended",
        "Killed",
    ),
    (
        "killed-mid-rollout",
        State(stable=STABLE, canary=CANARY, step=0),
        facts(revision=CANARY, killed=True, stable_ready=0),
        "Progressing",
        "Suspended",
        "Killed",
    ),
    (
        "too-few-warm-pods",
        State(stable=STABLE),
        facts(stable_ready=1),
        "Stable",
        "Degraded",
        "Degraded",
    ),
    (
        "stable-fails-analysis",
        State(stable=STABLE, last_analysis=failed_analysis(STABLE)),
        facts(),
        "Stable",
        "Degraded",
        "Degraded",
    ),
    (
        "apply-failed-mid-rollout",
        State(stable=STABLE, canary=CANARY, step=0),
        facts(revision=CANARY, apply_error="apply Deployment/churn-9a1b2c3d4e: 403", **ROLLOUT),
        "Progressing",
        "Degraded",
        "Progressing",
    ),
    (
        "warmup-timeout",
        State(stable=STABLE),
        facts(stable_ready=0, stable_timed_out=True),
        "Pending",
        "Degraded",
        "Pending",
    ),
]


@pytest.mark.parametrize(
    ("state", "fact", "prev", "expected", "phase"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_health_of_rendered_status(
    state: State, fact: Facts, prev: Phase, expected: str, phase: Phase
) -> None:
    status = rendered(state, fact, prev)
    assert status["phase"] == phase
    got, message = health(model_deployment(status))
    assert got == expected, message
    assert message


def test_every_phase_is_covered() -> None:
    phases = {rendered(state, fact, prev)["phase"] for _, state, fact, prev, _, _ in CASES}
    assert phases == set(get_args(Phase))


def test_degraded_names_the_reason() -> None:
    state = State(stable=STABLE, failed=CANARY)
    fact = facts(revision=CANARY, rollback_reason="latency-p99 720.5 > 600 on 812 samples")
    _, message = health(model_deployment(rendered(state, fact, "Progressing")))
    assert message.startswith("RolledBack: ")
    assert "latency-p99 720.5 > 600" in message


def test_no_status_or_unobserved_generation_is_progressing() -> None:
    assert health(model_deployment(None))[0] == "Progressing"
    assert health(model_deployment({}))[0] == "Progressing"
    stable = rendered(State(stable=STABLE), facts())
    status, message = health(model_deployment(stable, generation=GENERATION + 1))
    assert status == "Progressing"
    assert f"generation {GENERATION + 1}" in message


def test_documented_status_example() -> None:
    status = yaml.safe_load(STATUS_EXAMPLE.read_text())["status"]
    assert health(model_deployment(status)) == ("Progressing", status["message"])


def test_argocd_cm_snippet_holds_the_script_verbatim() -> None:
    configmap = yaml.safe_load(ARGOCD_CM.read_text())
    assert configmap["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {
            "app.kubernetes.io/name": "argocd-cm",
            "app.kubernetes.io/part-of": "argocd",
        },
    }
    script = configmap["data"]["resource.customizations.health.modeldeploy.io_ModelDeployment"]
    assert script == HEALTH_LUA.read_text()
    stable = model_deployment(rendered(State(stable=STABLE), facts()))
    assert health(stable, script)[0] == "Healthy"
