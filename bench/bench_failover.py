"""Failover of the operator's two replicas (leader election over a Lease, the chart's
defaults: lease 10 s, renew deadline 7 s, retry 2 s), on a local kwokctl cluster.

    python bench/bench_failover.py [--runs 5] [--count 20]

Two `modeldeploy operator --leader-elect` replicas watch `--count` ModelDeployments (all
Ready). Each run SIGKILLs the leader (no release of the Lease: as when its node dies),
engages the kill switch of one ModelDeployment at the same moment, and times: SIGKILL ->
the standby holds the Lease, and SIGKILL -> that ModelDeployment's phase is Killed (the
first decision of the new leader). The killed replica is started again as the standby, the
kill switch released, and the next run begins. Also counted: API writes logged by a replica
while it was the standby (never two writers: must be 0). Prints figures; asserts nothing.
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_scale import NAMESPACE, fresh_cluster, operator_kubeconfig, say

from modeldeploy.api import GROUP, PLURAL
from modeldeploy.devenv import testruns
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.scale import model_deployment, seconds
from modeldeploy.devenv.tools import toolchain
from modeldeploy.leader import LeaseSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from operator_harness import (  # noqa: E402
    OperatorProcess,
    ensure_crd,
    ensure_namespace,
    lease_holder,
)

LEASE = "modeldeploy-operator"
DEFAULTS = LeaseSettings(namespace=NAMESPACE, identity="-")


def wait(condition: Callable[[], bool], since: float, timeout: float) -> float | None:
    """Seconds from `since` (monotonic) until `condition` held (polled every 0.1 s), None
    past `timeout`."""
    while time.monotonic() - since < timeout:
        if condition():
            return time.monotonic() - since
        time.sleep(0.1)
    return None


def holder(cluster: KwokCluster) -> str:
    return lease_holder(cluster, NAMESPACE, LEASE)


def phase(cluster: KwokCluster, name: str) -> str:
    answer = cluster.kubectl(
        "get", f"{PLURAL}.{GROUP}", name, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}",
        check=False,
    )  # fmt: skip
    return answer.stdout.strip()


def kill_switch(cluster: KwokCluster, name: str, engaged: bool) -> None:
    cluster.kubectl(
        "patch", f"{PLURAL}.{GROUP}", name, "-n", NAMESPACE, "--type=merge",
        "-p", json.dumps({"spec": {"killSwitch": {"engaged": engaged}}}),
    )  # fmt: skip


def replica(cluster: KwokCluster, identity: str, kubeconfig: Path) -> OperatorProcess:
    workdir = testruns.run_dir() / f"failover-{identity}"
    workdir.mkdir(exist_ok=True)
    args = ["--leader-elect", "--lease-namespace", NAMESPACE, "--lease-name", LEASE,
            "--lease-identity", identity]  # fmt: skip
    return OperatorProcess(
        cluster, NAMESPACE, workdir, interval=None, extra_args=args,
        env={"KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip


def summary(values: list[float | None]) -> str:
    done = [v for v in values if v is not None]
    missed = len(values) - len(done)
    if not done:
        return "timed out"
    text = f"p50 {statistics.median(done):5.1f}s  max {max(done):5.1f}s"
    return text + (f"  ({missed} timed out)" if missed else "")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=20, help="ModelDeployments")
    parser.add_argument("--timeout", type=float, default=60.0, help="per wait, seconds")
    args = parser.parse_args(argv)
    names = [f"m-{i}" for i in range(args.count)]
    to_lease: list[float | None] = []
    to_killed: list[float | None] = []
    standby_writes = 0
    with fresh_cluster(toolchain(), pods=2 * args.count) as cluster:
        ensure_crd(cluster)
        ensure_namespace(cluster, NAMESPACE)
        kubeconfig = operator_kubeconfig(cluster, testruns.run_dir() / "failover.kubeconfig")
        replicas = {i: replica(cluster, i, kubeconfig) for i in ("replica-a", "replica-b")}
        try:
            for process in replicas.values():
                process.start()
            cluster.kubectl(
                "apply", "--server-side", "-f", "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List",
                                  "items": [model_deployment(n, NAMESPACE) for n in names]}),
            )  # fmt: skip
            stable = wait(
                lambda: all(phase(cluster, n) == "Stable" for n in names), time.monotonic(), 300
            )
            say(f"{args.count} ModelDeployments Stable after {seconds(stable)}")
            marks = dict.fromkeys(replicas, 0)  # where each one's log began as the standby
            for run in range(args.runs):
                leader = holder(cluster)
                standby = next(i for i in replicas if i != leader)
                standby_writes += len(replicas[standby].writes(since=marks[standby]))
                target = names[run % len(names)]
                replicas[leader].kill()
                killed = time.monotonic()
                kill_switch(cluster, target, engaged=True)

                def leads(identity: str = standby) -> bool:
                    return holder(cluster) == identity

                def in_phase(wanted: str, name: str = target) -> bool:
                    return phase(cluster, name) == wanted

                to_lease.append(wait(leads, killed, args.timeout))
                to_killed.append(wait(lambda: in_phase("Killed"), killed, args.timeout))
                say(
                    f"run {run + 1}: after SIGKILL, the Lease in {seconds(to_lease[-1])}, "
                    f"Killed in {seconds(to_killed[-1])}"
                )
                replicas[leader].start()  # back as the standby
                marks[leader] = replicas[leader].mark()
                kill_switch(cluster, target, engaged=False)
                wait(lambda: in_phase("Stable"), time.monotonic(), args.timeout)
        finally:
            for process in replicas.values():
                process.stop()
    lease_s, deadline_s, retry_s = DEFAULTS.duration, DEFAULTS.renew_deadline, DEFAULTS.retry_period
    print(f"\nfailover, {args.runs} runs, {args.count} ModelDeployments, lease {lease_s:g} s / "
          f"renew deadline {deadline_s:g} s / retry {retry_s:g} s")  # fmt: skip
    print(f"  SIGKILL -> standby holds the Lease:        {summary(to_lease)}")
    print(f"  SIGKILL -> kill switch acted on (Killed):  {summary(to_killed)}")
    print(f"  writes by the standby while it was one:   {standby_writes}")


if __name__ == "__main__":
    main()
