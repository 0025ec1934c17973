"""Every CLI command against a real kube-apiserver (RBAC on), without the operator: objects
from examples/modeldeployments, realistic status written through the status subresource,
Events posted as the operator posts them. Reads are asserted on output and exit codes,
steering commands by reading back the annotation or spec field they set, errors (no such
object, no permission, unreachable, bad context, CRD not served) by message and code."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import ensure_crd, ensure_namespace, kubectl
from typer.testing import CliRunner

from modeldeploy.cli import app
from modeldeploy.console import steering
from modeldeploy.console.access import Cluster, Target
from modeldeploy.console.exits import CliError, ExitCode
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.tools import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "modeldeployments"
NAMESPACE = "cli-commands"
VIEWER = "cli-viewer"  # may read ModelDeployments, nothing else
Body = dict[str, Any]

# A canary rolled back after two failed analyses on latency; the stable keeps serving.
FAILED_CHECKS = [
    {"name": "latency-p99", "value": 912.4, "threshold": 600, "samples": 1530, "verdict": "fail"},
    {"name": "error-rate", "value": 0.004, "threshold": 0.01, "samples": 1530, "verdict": "pass"},
    {"name": "feature-psi/tenure", "value": 0.03, "threshold": 0.1, "samples": 1530,
     "verdict": "pass"},
]  # fmt: skip
ROLLBACK_REASON = "failure 2 of 2: latency-p99: 912.4ms > max 600ms, n=1530"


def rolled_back_status(generation: int) -> Body:
    return {
        "phase": "RolledBack",
        "message": f"c0ffee1234 rolled back ({ROLLBACK_REASON}); serving 5d8f7c9b2a",
        "observedGeneration": generation,
        "stableRevision": "5d8f7c9b2a",
        "failedRevision": "c0ffee1234",
        "consecutiveFailures": 2,
        "lastAnalysis": {
            "time": "2026-11-20T12:10:00Z",
            "revision": "c0ffee1234",
            "samples": 1530,
            "verdict": "fail",
            "checks": FAILED_CHECKS,
        },
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "RolledBack",
                "message": "2 of 2 warm pods Ready on 5d8f7c9b2a; spec revision c0ffee1234",
                "lastTransitionTime": "2026-11-20T12:10:00Z",
                "observedGeneration": generation,
            },
            {
                "type": "Degraded",
                "status": "True",
                "reason": "RolledBack",
                "message": f"c0ffee1234: {ROLLBACK_REASON}",
                "lastTransitionTime": "2026-11-20T12:10:00Z",
                "observedGeneration": generation,
            },
        ],
        "history": [
            {
                "revision": "c0ffee1234",
                "version": "2026-11-20",
                "image": "registry.example/churn:2",
                "event": "Started",
                "reason": "changed: image",
                "time": "2026-11-20T12:00:00Z",
            },
            {
                "revision": "c0ffee1234",
                "version": "2026-11-20",
                "image": "registry.example/churn:2",
                "event": "RolledBack",
                "reason": ROLLBACK_REASON,
                "time": "2026-11-20T12:10:00Z",
            },
        ],
    }


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """The `modeldeploy` app in process, pointed at the test cluster."""

    def __init__(self, kube: KwokCluster) -> None:
        self.kube = kube
        self.runner = CliRunner()

    def __call__(self, *args: str, kubeconfig: Path | None = None) -> Run:
        config = str(kubeconfig or self.kube.kubeconfig)
        result = self.runner.invoke(app, [*args, "--kubeconfig", config])
        run = Run(result.exit_code, result.stdout, result.stderr)
        assert "Traceback" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), run
        return run


def example(name: str, new_name: str) -> Body:
    obj: Body = yaml.safe_load((EXAMPLES / name).read_text())
    obj["metadata"] = {**obj["metadata"], "name": new_name, "namespace": NAMESPACE}
    return obj


def create(kube: KwokCluster, obj: Body) -> Body:
    kubectl(kube, "apply", "-f", "-", input=json.dumps(obj))
    return read(kube, obj["metadata"]["name"])


def read(kube: KwokCluster, name: str) -> Body:
    got: Body = json.loads(kubectl(kube, "get", "mdep", name, "-n", NAMESPACE, "-o", "json"))
    return got


def write_status(kube: KwokCluster, name: str, status: Body) -> None:
    kubectl(
        kube, "patch", "mdep", name, "-n", NAMESPACE, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def post_event(
    kube: KwokCluster, obj: Body, suffix: str, *, kind: str, reason: str, text: str
) -> None:
    meta = obj["metadata"]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{suffix}", "namespace": NAMESPACE},
        "involvedObject": {
            "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
            "namespace": NAMESPACE, "uid": meta["uid"],
        },
        "type": kind, "reason": reason, "message": text, "source": {"component": "modeldeploy"},
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }  # fmt: skip
    kubectl(kube, "apply", "-f", "-", input=json.dumps(event))


def annotations(kube: KwokCluster, name: str) -> dict[str, str]:
    meta = read(kube, name)["metadata"]
    return {k: v for k, v in (meta.get("annotations") or {}).items() if "modeldeploy.io/" in k}


@pytest.fixture(scope="module")
def cluster(kube: KwokCluster) -> Iterator[KwokCluster]:
    """Namespace cli-commands: `fraud` rolled back (with Events), `churn` at step 2 of 4 with
    a failing check (the status example), a viewer that may only read ModelDeployments."""
    ensure_crd(kube)
    ensure_namespace(kube, NAMESPACE)
    fraud = create(kube, example("minimal.yaml", "fraud"))
    write_status(kube, "fraud", rolled_back_status(fraud["metadata"]["generation"]))
    started = "c0ffee1234 (changed: image)"
    post_event(kube, fraud, "a1", kind="Normal", reason="RolloutStarted", text=started)
    rolled_back = f"c0ffee1234 rolled back: {ROLLBACK_REASON}"
    post_event(kube, fraud, "a2", kind="Warning", reason="RolledBack", text=rolled_back)
    churn = create(kube, example("complete.yaml", "churn"))
    status = yaml.safe_load((EXAMPLES / "status.yaml").read_text())["status"]
    write_status(kube, "churn", {**status, "observedGeneration": churn["metadata"]["generation"]})
    rules = "--verb=get,list,watch --resource=modeldeployments.modeldeploy.io"
    kubectl(kube, "create", "role", VIEWER, "-n", NAMESPACE, *rules.split())
    kubectl(
        kube,
        "create",
        "rolebinding",
        VIEWER,
        "-n",
        NAMESPACE,
        f"--role={VIEWER}",
        f"--user={VIEWER}",
    )
    try:
        yield kube
    finally:
        kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def cli(cluster: KwokCluster) -> Cli:
    return Cli(cluster)


def line(text: str, first: str) -> str:
    """The output line that starts with `first`, single-spaced."""
    found = next((ln for ln in text.splitlines() if ln.strip().startswith(first)), None)
    assert found is not None, f"no line starting with {first!r} in:\n{text}"
    return " ".join(found.split())


# --- reading ----------------------------------------------------------------------------


def test_list(cli: Cli) -> None:
    run = cli("list", "-n", NAMESPACE)
    assert run.code == ExitCode.OK
    assert line(run.stdout, "churn").startswith(
        "churn Progressing 5% 5d8f7c9b2a 9a1b2c3d4e step 2 of 4 (5%) fail"
    )
    assert line(run.stdout, "fraud").startswith("fraud RolledBack - 5d8f7c9b2a - - fail")
    everywhere = cli("list", "-A")
    assert line(everywhere.stdout, NAMESPACE).startswith(f"{NAMESPACE} churn Progressing")
    items = cli("list", "-n", NAMESPACE, "-o", "json").json()["items"]
    assert [(i["name"], i["phase"]) for i in items] == [
        ("churn", "Progressing"),
        ("fraud", "RolledBack"),
    ]
    empty = cli("list", "-n", "default")
    assert (empty.code, empty.stdout) == (ExitCode.OK, "")
    assert "No ModelDeployments found in namespace default." in empty.stderr


def test_status_of_a_rolled_back_rollout_names_the_failing_check(cli: Cli) -> None:
    run = cli("status", "fraud", "-n", NAMESPACE)
    assert run.code == ExitCode.OK
    out = run.stdout
    assert out.startswith(
        f"fraud in {NAMESPACE}: RolledBack\nc0ffee1234 rolled back (failure 2 of 2"
    )
    assert line(out, "traffic") == "traffic stable 5d8f7c9b2a 100%"
    assert line(out, "failed") == (
        "failed c0ffee1234 (not rolled out again by itself: modeldeploy retry fraud)"
    )
    assert "Last analysis of c0ffee1234: fail on 1530 samples" in out
    assert "consecutive failures 2 of 2 (analysis.failureLimit)" in out
    # the failing check with its value, threshold and sample count
    assert line(out, "latency-p99") == "latency-p99 912.4 ms max 600 ms 1530 fail"
    assert line(out, "error-rate") == "error-rate 0.004 max 0.01 1530 pass"
    assert line(out, "Degraded").startswith("Degraded True RolledBack c0ffee1234: failure 2 of 2")
    # recent Events, oldest first
    events = out[out.index("\nEvents") :]
    assert "Normal RolloutStarted c0ffee1234 (changed: image)" in " ".join(events.split())
    assert events.index("RolloutStarted") < events.index(f"rolled back: {ROLLBACK_REASON}")


def test_status_tree_of_what_exists_and_what_cannot_be_read(cli: Cli) -> None:
    """Without the operator nothing is owned: the tree says so; a viewer who may not list
    Deployments and Services sees that instead. (The tree of real objects: test_cli_operator.)"""
    out = cli("status", "fraud", "-n", NAMESPACE).stdout
    tree = out[out.index("ModelDeployment/fraud") :]
    assert "traffic (replicas): canary requested 0%, effective 0%" in tree
    assert "no Deployments" in tree
    objects = cli("status", "fraud", "-n", NAMESPACE, "-o", "json").json()["objects"]
    assert (objects["revisions"], objects["services"]) == ([], [])
    viewer = cli("status", "fraud", "-n", NAMESPACE, "--as", VIEWER).stdout
    assert "Deployments: not readable (no permission to list them)" in viewer
    assert "Services: not readable" in viewer


def test_status_for_scripts(cli: Cli) -> None:
    view = cli("status", "churn", "-n", NAMESPACE, "-o", "json").json()
    assert view["phase"] == "Progressing"
    assert (view["canaryRevision"], view["canaryWeight"], view["step"]) == ("9a1b2c3d4e", 5, 1)
    assert view["steps"] == [1, 5, 25, 50]
    failing = [c for c in view["lastAnalysis"]["checks"] if c["verdict"] == "fail"]
    assert failing == [
        {"name": "latency-p99", "value": 720.5, "threshold": 600, "samples": 812, "verdict": "fail"}
    ]
    as_yaml = yaml.safe_load(cli("status", "fraud", "-n", NAMESPACE, "-o", "yaml").stdout)
    assert as_yaml["failedRevision"] == "c0ffee1234"
    assert [e["reason"] for e in as_yaml["events"]] == ["RolloutStarted", "RolledBack"]


def test_history(cli: Cli) -> None:
    run = cli("history", "fraud", "-n", NAMESPACE)
    assert run.code == ExitCode.OK
    assert line(run.stdout, "2026-11-20T12:10:00Z").split()[2:5] == [
        "RolledBack", "c0ffee1234", "2026-11-20",
    ]  # fmt: skip
    assert ROLLBACK_REASON in run.stdout
    items = cli("history", "churn", "-n", NAMESPACE, "-o", "json").json()["items"]
    assert [i["event"] for i in items] == ["RolledBack", "Promoted", "Started"]
    # The Events the apiserver holds come after the (older) history, with their names.
    trail = cli("history", "fraud", "-n", NAMESPACE, "-o", "json").json()
    assert trail["eventsRead"] is True
    assert [(i["source"], i["event"], i["key"]) for i in trail["items"]] == [
        ("history", "Started", None), ("history", "RolledBack", None),
        ("event", "RolloutStarted", "fraud.a1"), ("event", "RolledBack", "fraud.a2"),
    ]  # fmt: skip
    events = [ln for ln in run.stdout.splitlines() if ln.rstrip().endswith(" event")]
    assert [ln.split()[2] for ln in events] == ["RolloutStarted", "RolledBack"]
    viewer = cli("history", "fraud", "-n", NAMESPACE, "--as", VIEWER)
    assert viewer.code == ExitCode.OK
    assert "Events: not readable (no permission to list events); history only" in viewer.stderr
    assert viewer.stdout.count(" history\n") == 2


def test_explain_verdict(cli: Cli) -> None:
    run = cli("explain-verdict", "fraud", "-n", NAMESPACE)
    assert run.code == ExitCode.OK
    assert run.stdout.splitlines()[1] == (
        f"c0ffee1234 was rolled back at 2026-11-20T12:10:00Z: {ROLLBACK_REASON}"
    )
    assert "  latency-p99 912.4 ms > max 600 ms on 1530 samples" in run.stdout
    assert "its analyses failed 2 times in a row; analysis.failureLimit is 2" in run.stdout
    held = cli("explain-verdict", "churn", "-n", NAMESPACE, "-o", "json").json()
    assert held["decision"].startswith("9a1b2c3d4e holds at step 2 of 4 (5%)")
    assert held["policy"]["onNoData"] == "rollback"  # complete.yaml
    assert [c["reason"] for c in held["failing"]] == [
        "latency-p99 720.5 ms > max 600 ms on 812 samples"
    ]


# --- waiting and watching -----------------------------------------------------------------


def test_wait_for_exit_codes(cli: Cli, cluster: KwokCluster) -> None:
    # reached: 0
    reached = cli(
        "status", "fraud", "-n", NAMESPACE, "--wait-for", "RolledBack", "--timeout", "10s"
    )
    assert reached.code == ExitCode.OK
    # settled otherwise: 3, with the reason
    failed = cli("status", "fraud", "-n", NAMESPACE, "--wait-for", "Stable", "--timeout", "10s")
    assert failed.code == ExitCode.ROLLOUT_FAILED
    assert "error: fraud is RolledBack: c0ffee1234 rolled back (failure 2 of 2" in failed.stderr
    assert "explain-verdict fraud" in failed.stderr
    # not reached in time: 4
    started = time.monotonic()
    late = cli(
        "status", "churn", "-n", NAMESPACE, "--wait-for", "Stable", "--timeout", "2s",
        "--interval", "0.5",
    )  # fmt: skip
    assert late.code == ExitCode.TIMEOUT
    assert time.monotonic() - started < 10
    assert "error: churn did not reach Stable within 2s; last: churn is Progressing" in late.stderr
    assert "churn in cli-commands: Progressing" in late.stdout  # the last state is shown


def test_wait_for_ignores_a_status_older_than_the_spec(cli: Cli, cluster: KwokCluster) -> None:
    obj = create(cluster, example("minimal.yaml", "stale"))
    generation = obj["metadata"]["generation"]
    write_status(cluster, "stale", {"phase": "Stable", "observedGeneration": generation - 1})
    done = threading.Timer(
        3.0,
        write_status,
        (cluster, "stale", {"phase": "Stable", "message": "now", "observedGeneration": generation}),
    )
    done.start()
    run = cli("status", "stale", "-n", NAMESPACE, "--wait-for", "Stable", "--timeout", "20s",
              "--interval", "0.3")  # fmt: skip
    done.join()
    assert run.code == ExitCode.OK
    assert f"has not yet observed generation {generation}" in run.stderr
    assert line(run.stdout, "stale in").endswith("Stable")


def test_watch_follows_changes(cli: Cli, cluster: KwokCluster) -> None:
    create(cluster, example("minimal.yaml", "watched"))
    write_status(cluster, "watched", {"phase": "Progressing", "canaryRevision": "abc", "step": 0})
    changes = [
        threading.Timer(2.0, write_status, (cluster, "watched", {"phase": "Promoting"})),
        threading.Timer(4.0, write_status, (cluster, "watched", {"phase": "Stable"})),
    ]
    for change in changes:
        change.start()
    run = cli("status", "watched", "-n", NAMESPACE, "-w", "--timeout", "7s", "--interval", "0.3",
              "-o", "json")  # fmt: skip
    for change in changes:
        change.join()
    assert run.code == ExitCode.OK
    phases = [json.loads(ln)["phase"] for ln in run.stdout.splitlines()]
    assert phases == ["Progressing", "Promoting", "Stable"]
    table = cli("status", "watched", "-n", NAMESPACE, "-w", "--timeout", "1s", "--interval", "0.3")
    assert table.code == ExitCode.OK
    assert table.stdout.count("watched in cli-commands: Stable") == 1  # unchanged: shown once


# --- steering -----------------------------------------------------------------------------


def test_promote(cli: Cli, cluster: KwokCluster) -> None:
    refused = cli("promote", "churn", "-n", NAMESPACE)
    assert refused.code == ExitCode.REFUSED
    assert "error: churn: 9a1b2c3d4e is at step 2 of 4 (5%) with steps ahead (25%, 50%)" in (
        refused.stderr
    )
    assert "promote churn --full" in refused.stderr
    assert annotations(cluster, "churn") == {}
    run = cli("promote", "churn", "-n", NAMESPACE, "--full")
    assert run.code == ExitCode.OK
    assert "promotion of 9a1b2c3d4e requested (modeldeploy.io/promote=9a1b2c3d4e)" in run.stdout
    assert annotations(cluster, "churn") == {"modeldeploy.io/promote": "9a1b2c3d4e"}
    pending = cli("status", "churn", "-n", NAMESPACE).stdout
    assert line(pending, "pending") == (
        "pending modeldeploy.io/promote=9a1b2c3d4e (not yet acted on by the operator)"
    )
    nothing = cli("promote", "fraud", "-n", NAMESPACE)
    assert nothing.code == ExitCode.REFUSED
    assert "nothing to promote: fraud has no rollout under way (RolledBack)" in nothing.stderr
    assert "modeldeploy retry fraud" in nothing.stderr
    kubectl(cluster, "annotate", "mdep", "churn", "-n", NAMESPACE, "modeldeploy.io/promote-")


def test_approve_at_the_gate_only(cli: Cli, cluster: KwokCluster) -> None:
    not_gated = cli("approve", "churn", "-n", NAMESPACE)
    assert not_gated.code == ExitCode.REFUSED
    assert "not yet at the approval gate" in not_gated.stderr  # complete.yaml requires approval
    obj = create(cluster, example("complete.yaml", "gated"))
    write_status(cluster, "gated", {
        "phase": "Paused", "observedGeneration": obj["metadata"]["generation"],
        "stableRevision": "5d8f7c9b2a", "canaryRevision": "9a1b2c3d4e", "step": 3,
        "canaryWeight": 50,
    })  # fmt: skip
    run = cli("approve", "gated", "-n", NAMESPACE)
    assert run.code == ExitCode.OK, run.stderr
    assert annotations(cluster, "gated") == {"modeldeploy.io/promote": "9a1b2c3d4e"}


def test_abort_and_retry_name_the_revision(cli: Cli, cluster: KwokCluster) -> None:
    run = cli("abort", "churn", "-n", NAMESPACE)
    assert run.code == ExitCode.OK
    assert "traffic goes back to 5d8f7c9b2a" in run.stdout
    assert annotations(cluster, "churn") == {"modeldeploy.io/abort": "9a1b2c3d4e"}
    kubectl(cluster, "annotate", "mdep", "churn", "-n", NAMESPACE, "modeldeploy.io/abort-")
    no_canary = cli("abort", "fraud", "-n", NAMESPACE)
    assert no_canary.code == ExitCode.REFUSED
    assert "nothing to abort" in no_canary.stderr
    retry = cli("retry", "fraud", "-n", NAMESPACE)
    assert retry.code == ExitCode.OK
    assert annotations(cluster, "fraud") == {"modeldeploy.io/retry": "c0ffee1234"}
    kubectl(cluster, "annotate", "mdep", "fraud", "-n", NAMESPACE, "modeldeploy.io/retry-")


def test_pause_and_resume(cli: Cli, cluster: KwokCluster) -> None:
    def paused() -> Any:
        return read(cluster, "churn")["spec"]["rollout"].get("paused")

    assert cli("pause", "churn", "-n", NAMESPACE).code == ExitCode.OK
    assert paused() is True
    again = cli("pause", "churn", "-n", NAMESPACE)
    assert (again.code, again.stdout.strip()) == (
        ExitCode.OK, "churn: already paused (spec.rollout.paused=true)",
    )  # fmt: skip
    run = cli("resume", "churn", "-n", NAMESPACE)
    assert run.stdout.strip() == "churn: resumed (spec.rollout.paused=false)"
    assert paused() is False


def test_kill_and_unkill(cli: Cli, cluster: KwokCluster) -> None:
    def switch() -> Any:
        return read(cluster, "fraud")["spec"]["killSwitch"]

    run = cli("kill", "fraud", "-n", NAMESPACE)
    assert run.code == ExitCode.OK
    assert "kill switch engaged (scaleToZero)" in run.stdout
    assert switch() == {"engaged": True, "mode": "scaleToZero"}
    # fallback needs spec.fallback: the apiserver's CEL rule refuses it, in its words
    refused = cli("kill", "fraud", "-n", NAMESPACE, "--mode", "fallback")
    assert refused.code == ExitCode.REFUSED
    assert "killSwitch.mode fallback needs spec.fallback" in refused.stderr
    assert cli("unkill", "fraud", "-n", NAMESPACE).code == ExitCode.OK
    assert switch() == {"engaged": False, "mode": "scaleToZero"}
    assert "already not engaged" in cli("unkill", "fraud", "-n", NAMESPACE).stdout


def test_a_command_decided_on_a_stale_read_is_decided_again(cluster: KwokCluster) -> None:
    """The annotation is written with the resourceVersion read: when the object changed in
    between (here: the operator moved to another canary), the apiserver refuses the write
    (409) and the command reads again and decides on what is there now."""
    seen: list[str] = []

    def decide(obj: Body) -> steering.Change:
        seen.append(obj["status"]["canaryRevision"])
        if len(seen) == 1:  # meanwhile, a newer canary
            write_status(cluster, "churn", {"canaryRevision": "feedbeef42"})
        return steering.abort(obj)

    target = Target(kubeconfig=str(cluster.kubeconfig), namespace=NAMESPACE)
    try:
        with Cluster(target) as api:
            change = api.steer("churn", decide)
        assert seen == ["9a1b2c3d4e", "feedbeef42"]
        assert "abort of feedbeef42 requested" in change.done
        assert annotations(cluster, "churn") == {"modeldeploy.io/abort": "feedbeef42"}
    finally:
        write_status(cluster, "churn", {"canaryRevision": "9a1b2c3d4e"})
        kubectl(cluster, "annotate", "mdep", "churn", "-n", NAMESPACE, "modeldeploy.io/abort-")


# --- errors -------------------------------------------------------------------------------


def test_no_such_model_deployment(cli: Cli) -> None:
    for command in ("status", "history", "explain-verdict", "promote", "abort", "kill"):
        run = cli(command, "nope", "-n", NAMESPACE)
        assert run.code == ExitCode.NOT_FOUND, (command, run)
        assert run.stderr.startswith(
            f"error: modeldeployment nope not found in namespace {NAMESPACE}"
        )


def test_no_permission_by_impersonation(cli: Cli) -> None:
    run = cli("status", "fraud", "-n", NAMESPACE, "--as", "stranger")
    assert run.code == ExitCode.FORBIDDEN
    assert (
        'error: no permission: modeldeployments.modeldeploy.io "fraud" is forbidden: '
        'User "stranger"' in run.stderr
    )
    listing = cli("list", "-n", NAMESPACE, "--as", "stranger")
    assert listing.code == ExitCode.FORBIDDEN
    assert "cannot list resource" in listing.stderr


def test_a_viewer_reads_but_cannot_steer(cli: Cli) -> None:
    run = cli("status", "fraud", "-n", NAMESPACE, "--as", VIEWER)
    assert run.code == ExitCode.OK
    assert line(run.stdout, "latency-p99") == "latency-p99 912.4 ms max 600 ms 1530 fail"
    assert "Events: not readable (no permission to list events)" in run.stdout
    denied = cli("kill", "fraud", "-n", NAMESPACE, "--as", VIEWER)
    assert denied.code == ExitCode.FORBIDDEN
    assert f'User "{VIEWER}" cannot patch resource "modeldeployments"' in denied.stderr


def kubeconfig_with(kube: KwokCluster, path: Path, edit: Callable[[Body], None]) -> Path:
    config: Body = yaml.safe_load(kube.kubeconfig.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return path


def test_no_permission_as_a_service_account_without_rights(
    cli: Cli, cluster: KwokCluster, tmp_path: Path
) -> None:
    kubectl(cluster, "create", "serviceaccount", "nobody", "-n", NAMESPACE)
    token = kubectl(cluster, "create", "token", "nobody", "-n", NAMESPACE, "--duration=10m").strip()

    def as_token(config: Body) -> None:
        config["users"][0]["user"] = {"token": token}

    config = kubeconfig_with(cluster, tmp_path / "nobody.kubeconfig", as_token)
    run = cli("history", "fraud", "-n", NAMESPACE, kubeconfig=config)
    assert run.code == ExitCode.FORBIDDEN
    assert f'User "system:serviceaccount:{NAMESPACE}:nobody" cannot get resource' in run.stderr


def test_unreachable_cluster(cli: Cli, cluster: KwokCluster, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there

    def closed(config: Body) -> None:
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"

    config = kubeconfig_with(cluster, tmp_path / "closed.kubeconfig", closed)
    for args in (("list",), ("status", "fraud"), ("promote", "fraud", "--full")):
        run = cli(*args, "-n", NAMESPACE, kubeconfig=config)
        assert run.code == ExitCode.UNREACHABLE, (args, run)
        assert f"error: cannot reach the cluster at https://127.0.0.1:{port}" in run.stderr
        assert "Connection refused" in run.stderr


def test_contexts_and_their_namespace(cli: Cli, cluster: KwokCluster, tmp_path: Path) -> None:
    """A kubeconfig whose current context points at a closed port and a second, working
    context with namespace cli-commands: --context picks it, and its namespace is the
    default."""

    def two_contexts(config: Body) -> None:
        real = config["contexts"][0]
        closed = {**config["clusters"][0], "name": "closed"}
        closed["cluster"] = {**closed["cluster"], "server": f"https://127.0.0.1:{free_port()}"}
        config["clusters"].append(closed)
        config["contexts"] = [
            {"name": "broken", "context": {**real["context"], "cluster": "closed"}},
            {"name": "work", "context": {**real["context"], "namespace": NAMESPACE}},
        ]
        config["current-context"] = "broken"

    config = kubeconfig_with(cluster, tmp_path / "two.kubeconfig", two_contexts)
    assert cli("list", kubeconfig=config).code == ExitCode.UNREACHABLE
    run = cli("list", "--context", "work", kubeconfig=config)
    assert run.code == ExitCode.OK
    assert line(run.stdout, "fraud").startswith("fraud RolledBack")
    wrong = cli("list", "--context", "nope", kubeconfig=config)
    assert wrong.code == ExitCode.CONFIG
    assert "context 'nope' is not in the kubeconfig" in wrong.stderr
    assert "hint: its contexts: broken, work" in wrong.stderr


def test_crd_not_served(cluster: KwokCluster) -> None:
    """The apiserver's answer for an API that is not installed (here: a version it does not
    serve, the same bare 404 as a missing CRD) is told apart from a missing object."""
    target = Target(kubeconfig=str(cluster.kubeconfig), namespace=NAMESPACE)
    with Cluster(target, version="v1alpha9") as api:
        for call in (lambda: api.get("fraud"), api.model_deployments):
            with pytest.raises(CliError) as caught:
                call()
            assert caught.value.code is ExitCode.NO_CRD
            assert "does not serve ModelDeployments (modeldeploy.io/v1alpha9)" in str(caught.value)


# --- the installed programs -----------------------------------------------------------------


def scripts_dir() -> Path:
    return Path(sys.executable).parent


def test_entry_point_exit_code_without_traceback(cluster: KwokCluster) -> None:
    result = subprocess.run(
        [str(scripts_dir() / "modeldeploy"), "status", "nope", "-n", NAMESPACE,
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == ExitCode.NOT_FOUND
    assert result.stderr.startswith("error: modeldeployment nope not found")
    assert "Traceback" not in result.stderr


def test_kubectl_plugin(cluster: KwokCluster) -> None:
    kubectl_bin = cluster.tools.kubectl
    env = {**os.environ, "PATH": f"{scripts_dir()}:{kubectl_bin.parent}:/usr/bin:/bin"}
    plugins = subprocess.run(
        [str(kubectl_bin), "plugin", "list"], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert str(scripts_dir() / "kubectl-modeldeploy") in plugins.stdout, plugins.stderr

    def plugin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl_bin), "modeldeploy", *args], env=env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    status = plugin("status", "fraud", "-n", NAMESPACE, "--kubeconfig", str(cluster.kubeconfig))
    assert status.returncode == ExitCode.OK, status.stderr
    assert " ".join(status.stdout.split()).count("latency-p99 912.4 ms max 600 ms 1530 fail") == 1
    usage = plugin("status", "--help")
    assert "Usage: kubectl modeldeploy status [OPTIONS]" in " ".join(usage.stdout.split())
    missing = plugin("status", "nope", "-n", NAMESPACE, "--kubeconfig", str(cluster.kubeconfig))
    assert missing.returncode == ExitCode.NOT_FOUND
    assert shutil.which("kubectl-modeldeploy", path=env["PATH"]) is not None
