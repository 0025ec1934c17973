"""The CLI with the real operator running: `status --wait-for` exit codes on real rollouts,
the steering commands acted on by the operator (promote --full, abort, kill/unkill,
retry), `status`'s tree of the objects the operator made, the owner in status and in its
Events, and `history` merging status.history with those Events, each of which is a line of
the operator's audit log under the same key."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    OperatorProcess,
    apply_object,
    ensure_crd,
    ensure_namespace,
    model_deployment,
    patch_model_deployment,
    wait_for,
)

from modeldeploy.console.exits import ExitCode
from modeldeploy.devenv.cluster import KwokCluster

pytestmark = pytest.mark.integration

NAMESPACE = "cli-operator"
NAME = "churn"
HOLD = {"canary": {"steps": [25, 50]}, "stepInterval": "10m", "bakeTime": "2s"}
"""Steps long enough that only a person moves the rollout on."""
OWNER = {
    "team": "retention",
    "contact": "ml-oncall@example.com",
    "runbookUrl": "https://runbooks.example/churn",
}


def modeldeploy(kube: KwokCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `modeldeploy` program, as a CI job would run it."""
    script = Path(sys.executable).parent / "modeldeploy"
    return subprocess.run(
        [str(script), *args, "-n", NAMESPACE, "--kubeconfig", str(kube.kubeconfig)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def wait_for_phase(
    kube: KwokCluster, phase: str, timeout: str = "90s"
) -> subprocess.CompletedProcess[str]:
    return modeldeploy(kube, "status", NAME, "--wait-for", phase, "--timeout", timeout,
                       "--interval", "0.5")  # fmt: skip


def view(kube: KwokCluster) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(modeldeploy(kube, "status", NAME, "-o", "json").stdout)
    return data


def set_image(kube: KwokCluster, tag: str) -> None:
    spec = {"image": f"registry.example/churn:{tag}", "rollout": HOLD}
    patch_model_deployment(kube, NAMESPACE, NAME, {"spec": spec})


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    ensure_crd(kube)
    ensure_namespace(kube, NAMESPACE)
    with OperatorProcess(kube, NAMESPACE, Path(tmp_path_factory.mktemp(NAMESPACE))) as op:
        md = model_deployment(NAME, NAMESPACE, "registry.example/churn:1", owner=OWNER)
        apply_object(kube, md)
        yield op
    kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_wait_for_stable_on_a_new_model_deployment(operator: OperatorProcess) -> None:
    run = wait_for_phase(operator.kube, "Stable")
    assert run.returncode == ExitCode.OK, run.stderr
    assert f"{NAME} in {NAMESPACE}: Stable" in run.stdout


def test_status_shows_the_tree_of_the_objects_the_operator_made(
    operator: OperatorProcess,
) -> None:
    kube = operator.kube

    def objects() -> dict[str, Any] | None:
        tree: dict[str, Any] = view(kube)["objects"]
        revisions = tree["revisions"] or []
        full = [r for r in revisions if r["deployment"]["ready"] == 2 == len(r["pods"] or [])]
        return tree if full and revisions[0]["hpa"] and revisions[0]["pdb"] else None

    what = "stable Deployment with 2 Ready pods, its HPA and PDB"
    tree = wait_for(objects, 60, interval=1.0, what=what)
    assert tree is not None
    (stable,) = tree["revisions"]
    revision = stable["revision"]
    assert stable["track"] == "stable"
    assert stable["deployment"] == {
        "name": f"{NAME}-{revision}", "replicas": 2, "ready": 2, "updated": 2,
    }  # fmt: skip
    assert all(p["ready"] and p["phase"] == "Running" for p in stable["pods"])
    assert (stable["hpa"]["name"], stable["hpa"]["min"], stable["hpa"]["max"]) == (
        f"{NAME}-stable", 2, 6,
    )  # fmt: skip
    assert stable["pdb"]["name"] == f"{NAME}-stable"
    assert tree["services"] == [
        {
            "name": NAME,
            "selector": {"modeldeploy.io/name": NAME, "modeldeploy.io/revision": revision},
        }
    ]
    assert tree["traffic"]["effective"] == 0
    table = " ".join(modeldeploy(kube, "status", NAME).stdout.split())
    assert f"stable {revision} Deployment/{NAME}-{revision} 2/2 Ready" in table
    assert f"HorizontalPodAutoscaler/{NAME}-stable current" in table
    assert "min 2, max 6" in table
    assert f"PodDisruptionBudget/{NAME}-stable minAvailable 2" in table
    assert (
        f"Service/{NAME} selector modeldeploy.io/name={NAME},modeldeploy.io/revision={revision}"
        in (table)
    )
    assert table.count(f"pod {NAME}-{revision}-") == 2
    assert (
        "owner retention · ml-oncall@example.com · runbook https://runbooks.example/churn" in table
    )
    (listed,) = json.loads(modeldeploy(kube, "list", "-o", "json").stdout)["items"]
    assert listed["owner"] == OWNER


def test_promote_full_then_stable(operator: OperatorProcess) -> None:
    kube = operator.kube
    set_image(kube, "2")
    assert wait_for_phase(kube, "Progressing").returncode == ExitCode.OK
    canary = view(kube)["canaryRevision"]
    refused = modeldeploy(kube, "promote", NAME)
    assert refused.returncode == ExitCode.REFUSED
    assert "with steps ahead (50%)" in refused.stderr
    promoted = modeldeploy(kube, "promote", NAME, "--full")
    assert promoted.returncode == ExitCode.OK, promoted.stderr
    run = wait_for_phase(kube, "Stable")
    assert run.returncode == ExitCode.OK, run.stderr
    assert view(kube)["stableRevision"] == canary
    history = json.loads(modeldeploy(kube, "history", NAME, "-o", "json").stdout)["items"]
    transitions = [h for h in history if h["source"] == "history"]
    assert (transitions[-1]["event"], transitions[-1]["revision"]) == ("Promoted", canary)


def test_abort_makes_wait_for_stable_fail(operator: OperatorProcess) -> None:
    kube = operator.kube
    set_image(kube, "3")
    assert wait_for_phase(kube, "Progressing").returncode == ExitCode.OK
    canary = view(kube)["canaryRevision"]
    assert modeldeploy(kube, "abort", NAME).returncode == ExitCode.OK
    run = wait_for_phase(kube, "Stable")
    assert run.returncode == ExitCode.ROLLOUT_FAILED, run.stderr
    assert f"error: {NAME} is RolledBack" in run.stderr
    explained = modeldeploy(kube, "explain-verdict", NAME)
    assert f"{canary} was aborted at" in explained.stdout
    assert "aborted by modeldeploy.io/abort" in explained.stdout


def test_kill_unkill_and_retry(operator: OperatorProcess) -> None:
    kube = operator.kube
    assert modeldeploy(kube, "kill", NAME).returncode == ExitCode.OK
    assert wait_for_phase(kube, "Killed").returncode == ExitCode.OK
    assert wait_for_phase(kube, "Stable", timeout="5s").returncode == ExitCode.ROLLOUT_FAILED
    assert modeldeploy(kube, "unkill", NAME).returncode == ExitCode.OK
    assert wait_for_phase(kube, "RolledBack").returncode == ExitCode.OK
    assert modeldeploy(kube, "retry", NAME).returncode == ExitCode.OK
    run = wait_for_phase(kube, "Progressing")
    assert run.returncode == ExitCode.OK, run.stderr
    assert view(kube)["failedRevision"] is None


def audit_lines(operator: OperatorProcess) -> list[dict[str, Any]]:
    lines = (line for line in operator.log().splitlines() if line.startswith('{"time"'))
    return [json.loads(line) for line in lines]


def test_history_has_the_events_with_the_owner_and_the_audit_log_every_decision(
    operator: OperatorProcess,
) -> None:
    kube = operator.kube
    trail = json.loads(modeldeploy(kube, "history", NAME, "-o", "json").stdout)
    events = [h for h in trail["items"] if h["source"] == "event"]
    reasons = [e["event"] for e in events]
    for reason in ("RolloutStarted", "Promoted", "KillSwitchEngaged", "KillSwitchReleased"):
        assert reason in reasons, reasons
    assert {"RolledBack", "Aborted"} & set(reasons), reasons
    assert all(e["reason"].endswith(" [owner: retention]") for e in events), events
    assert [h["time"] for h in trail["items"]] == sorted(h["time"] for h in trail["items"])

    # Every Event is a line of the audit log with the Event's name as its key.
    def logged() -> list[dict[str, Any]] | None:
        lines = audit_lines(operator)
        keys = {line["key"] for line in lines}
        return lines if all(e["key"] in keys for e in events) else None

    lines = wait_for(logged, 30, what="an audit line for every Event")
    assert lines is not None
    by_key = {line["key"]: line for line in lines}
    for event in events:
        line = by_key[event["key"]]
        assert (line["kind"], line["reason"], line["namespace"], line["name"], line["team"]) == (
            "event", event["event"], NAMESPACE, NAME, "retention",
        )  # fmt: skip
    commands = [line["message"] for line in lines if line["kind"] == "command"]
    assert any(c.startswith("modeldeploy.io/promote=") for c in commands), commands
    assert any(c.startswith("modeldeploy.io/abort=") for c in commands), commands
    assert all(tuple(line) == tuple(lines[0]) for line in lines)  # the same fields, in order


def test_completion_of_names_from_the_cluster(operator: OperatorProcess) -> None:
    """What bash asks when TAB is pressed after `modeldeploy status ch`."""
    kube = operator.kube
    apply_object(kube, model_deployment("churn-eu", NAMESPACE, "registry.example/churn:1"))
    apply_object(kube, model_deployment("fraud", NAMESPACE, "registry.example/fraud:1"))
    script = Path(sys.executable).parent / "modeldeploy"

    def complete(line: str, kubeconfig: str) -> list[str]:
        result = subprocess.run(
            [str(script)], capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "KUBECONFIG": kubeconfig, "_MODELDEPLOY_COMPLETE": "complete_bash",
                 "COMP_WORDS": line, "COMP_CWORD": str(len(line.split()) - 1)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return result.stdout.split()

    config = str(kube.kubeconfig)
    assert complete(f"modeldeploy status -n {NAMESPACE} ch", config) == ["churn", "churn-eu"]
    assert complete(f"modeldeploy kill --namespace {NAMESPACE} f", config) == ["fraud"]
    given = f"modeldeploy history --kubeconfig {config} -n {NAMESPACE} churn-"
    assert complete(given, "/nonexistent") == ["churn-eu"]
    assert complete("modeldeploy status -n elsewhere ch", config) == []
    # Fails silent: no kubeconfig, no cluster, no names, no error on the prompt.
    assert complete(f"modeldeploy status -n {NAMESPACE} ch", "/nonexistent") == []
