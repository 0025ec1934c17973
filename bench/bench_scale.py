"""The operator at scale: N ModelDeployments beside a raw `kubectl apply` of the same
children, on a local kwokctl cluster (kwok nodes: pods turn Ready without containers).

    python bench/bench_scale.py [--sizes 100,300,1000] [--idle-seconds 60]
        [--workers 4,8,16] [--restart defaults|every-pass]

For each N, on a fresh cluster each:
- raw: `kubectl apply --server-side` of the objects the operator's first reconcile would
  write for N ModelDeployments (Deployment, Service, HPA, PDB each; built by the pure
  machine, `plan()`), then wait until every Deployment has its pods Ready;
- operator, once per `--workers` value (each on a fresh cluster): `modeldeploy operator
  --namespace scale [--workers W]` at its default interval and resync (as the integration
  tests start it), `kubectl apply --server-side` of N ModelDeployments (default spec:
  minWarm 2), wait until every one's pods are Ready and its Ready condition is True; after
  a settle, an idle window: the operator's API requests and writes, RSS and CPU; with
  `--restart defaults` (after the last workers value) the operator restarted as it was
  (a cold start among N existing objects: Kopf lists and indexes all of them, then the first
  pass plans each once), timed to its first pass, and a second idle window; with
  `--restart every-pass` the same with `--resync 10`, i.e. every ModelDeployment planned
  every 10 s as before requeue-after; then the kill switch of one ModelDeployment while all
  N exist.

Per object "apply -> Ready" runs from the moment the bench's watch first saw the object the
user applied (the ModelDeployment; for raw, the Deployment) to the moment it saw it Ready;
"all" runs from the start of `kubectl apply` to the last one.

The operator's requests are counted by the apiserver: `apiserver_request_total` has no
client label, and every other client of a kwokctl cluster (controller-manager, scheduler,
kwok, this bench) uses the same admin certificate, so the operator runs as a ServiceAccount
of its own (bound to cluster-admin) and the apiserver audits that user's requests only
(`modeldeploy.devenv.scale.audit_policy`). Its writes are also counted from its own log
(`write METHOD path`, logged by modeldeploy.kube for each one). The apiserver's
`apiserver_request_total` over the idle window is printed beside them: every client.

Every wait is bounded (`--ready-timeout`, `--kill-timeout`): what does not happen in time
is printed as "timed out". Prints figures; asserts nothing.
"""

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from modeldeploy.api import GROUP, PLURAL, VERSION
from modeldeploy.devenv import testruns
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.kubewatch import ObjectWatcher, core_api
from modeldeploy.devenv.scale import (
    AuditCount,
    Body,
    Milestones,
    ProcessSample,
    apiserver_requests,
    audit_policy,
    condition_true,
    count_audit,
    deployment_ready,
    first_children,
    latencies,
    model_deployment,
    model_name,
    nodes_for,
    phase,
    process_sample,
    scaled_to_zero,
    seconds,
    table,
    token_kubeconfig,
)
from modeldeploy.devenv.tools import Toolchain, toolchain
from modeldeploy.handlers import DEFAULT_RESYNC, DEFAULT_WORKERS
from modeldeploy.resources.names import LABEL_NAME

ROOT = Path(__file__).resolve().parents[1]
# The operator as the integration tests run it.
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from operator_harness import OperatorProcess, ensure_crd, ensure_namespace  # noqa: E402

NAMESPACE = "scale"
OPERATOR_ACCOUNT = "modeldeploy-operator"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_ACCOUNT}"
INTERVAL_ENV = "MODELDEPLOY_RECONCILE_INTERVAL"  # must not be set: the default interval
# After all Ready, before the idle window: a reconcile interval (10 s by default) and a
# margin, so that the rollout's last status writes are not counted as idle.
SETTLE_SECONDS = 15.0
EVERY_PASS = 10.0  # --restart every-pass: the resync that plans everything as the 10 s pass did
RESTARTS = ("defaults", "every-pass")
PROGRESS_EVERY = 10.0
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[scale {time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


# --- watching what happens --------------------------------------------------------------


class ModelDeploymentsApi:
    """ModelDeployments as ObjectWatcher lists and watches them (raw dicts)."""

    def __init__(self, api_client: object) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)

    def list_namespaced_modeldeployment(self, namespace: str, **kwargs: object) -> object:
        return self._api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs)


class Board:
    """Milestones fed by a watch; new ones see the objects already there at once."""

    def __init__(self) -> None:
        self._milestones: list[Milestones] = []
        self._lock = threading.Lock()
        self.watcher: ObjectWatcher | None = None

    def observe(self, body: Body) -> None:
        now = time.monotonic()
        with self._lock:
            for milestones in self._milestones:
                milestones.observe(body, now)

    def track(self, holds: Callable[[Body], bool]) -> Milestones:
        milestones = Milestones(holds)
        now = time.monotonic()
        with self._lock:
            for body in (self.watcher.snapshot() if self.watcher else None) or []:
                milestones.observe(body, now)
            self._milestones.append(milestones)
        return milestones


@contextmanager
def watching(cluster: KwokCluster, *, models: bool = True) -> Iterator[tuple[Board, Board]]:
    """Boards of the Deployments and (with `models`) the ModelDeployments of the bench
    namespace, watched as the bench's own client (the admin identity: never counted as the
    operator's)."""
    from kubernetes import client

    api_client = core_api(str(cluster.kubeconfig)).api_client
    deployment_board, model_board = Board(), Board()
    watched = [(client.AppsV1Api(api_client), "deployment", LABEL_NAME, deployment_board)]
    if models:
        watched.append((ModelDeploymentsApi(api_client), "modeldeployment", "", model_board))
    for api, kind, selector, board in watched:
        board.watcher = ObjectWatcher(
            api, kind, NAMESPACE, selector, on_object=board.observe, resync=120
        )
        board.watcher.start()
    try:
        yield deployment_board, model_board
    finally:
        for *_, board in watched:
            if board.watcher is not None:
                board.watcher.stop()


def wait_all(what: str, tracked: Sequence[Milestones], count: int, timeout: float) -> bool:
    """Until every milestone has `count` objects, printing progress; False on timeout."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + PROGRESS_EVERY
    while True:
        done = [len(m.times) for m in tracked]
        if min(done) >= count:
            return True
        if time.monotonic() > deadline:
            say(f"{what}: timed out after {timeout:.0f}s at {done} of {count}")
            return False
        if time.monotonic() >= next_report:
            say(f"{what}: {done} of {count}")
            next_report += PROGRESS_EVERY
        time.sleep(0.2)


# --- the cluster ------------------------------------------------------------------------


@contextmanager
def fresh_cluster(tools: Toolchain, pods: int, policy: Body | None = None) -> Iterator[KwokCluster]:
    """A cluster of its own, deleted afterwards; named like a test session's, so that
    `testruns.reap_stale_runs` removes it should this process die."""
    cluster = dataclasses.replace(testruns.test_cluster(tools), audit_policy=policy)
    nodes = nodes_for(pods)
    say(f"creating a cluster with {nodes} kwok nodes")
    try:
        testruns.create_cluster(cluster, nodes=nodes)
        yield cluster
    finally:
        cluster.delete()


def apply_all(cluster: KwokCluster, bodies: list[Body], manager: str) -> float:
    """`kubectl apply --server-side` of every body in one call; its duration."""
    started = time.monotonic()
    cluster.kubectl(
        "apply", "--server-side", f"--field-manager={manager}", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": bodies}),
        timeout=60 + len(bodies) * 0.2,
    )  # fmt: skip
    return time.monotonic() - started


def operator_kubeconfig(cluster: KwokCluster, path: Path) -> Path:
    """A ServiceAccount of the operator's own, with cluster-admin: its requests are the
    audit log's only ones."""
    for args in (
        ("create", "serviceaccount", OPERATOR_ACCOUNT, "-n", NAMESPACE),
        ("create", "clusterrolebinding", OPERATOR_ACCOUNT, "--clusterrole=cluster-admin",
         f"--serviceaccount={NAMESPACE}:{OPERATOR_ACCOUNT}"),
    ):  # fmt: skip
        cluster.kubectl(*args)
    token = cluster.kubectl(
        "create", "token", OPERATOR_ACCOUNT, "-n", NAMESPACE, "--duration=4h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    path.write_text(yaml.safe_dump(token_kubeconfig(admin, OPERATOR_ACCOUNT, token)))
    return path


def requests_total(cluster: KwokCluster) -> float:
    return apiserver_requests(cluster.kubectl("get", "--raw", "/metrics").stdout)


def sample(pid: int) -> ProcessSample:
    proc = Path("/proc") / str(pid)
    return process_sample(
        (proc / "stat").read_text(), (proc / "status").read_text(), os.sysconf("SC_CLK_TCK")
    )


# --- one size ---------------------------------------------------------------------------


@dataclass
class Rollout:
    label: str
    apply_seconds: float
    per_object: list[float]
    total: float | None  # None: not every object was Ready in time


@dataclass
class Idle:
    seconds: float
    audit: AuditCount
    apiserver_requests: float  # every client's
    logged_writes: int
    cpu_seconds: float
    process: ProcessSample


@dataclass
class OperatorRun:
    workers: int | None  # None: the operator's default
    pods: Rollout
    ready: Rollout
    rollout_cpu_seconds: float
    idle: Idle | None  # None: not all Ready in time
    restart: str | None  # --restart: how it was restarted after the idle window
    idle_after_restart: Idle | None
    restart_to_planned: float | None  # --restart: restart -> every one reconciled once
    kill_to_zero: float | None
    kill_to_killed: float | None


@dataclass
class Result:
    n: int
    raw: Rollout
    operators: list[OperatorRun]


def names(n: int) -> list[str]:
    return [f"scale-{i:04d}" for i in range(n)]


def rollout(
    label: str, n: int, *, started: float, apply: float, first: Milestones, done: Milestones
) -> Rollout:
    complete = len(done.times) >= n
    total = max(done.times.values()) - started if complete else None
    return Rollout(label, apply, latencies(first.times, done.times), total)


def run_raw(tools: Toolchain, n: int, timeout: float) -> Rollout:
    children = [
        child for name in names(n) for child in first_children(model_deployment(name, NAMESPACE))
    ]
    with (
        fresh_cluster(tools, pods=2 * n) as cluster,
        watching(cluster, models=False) as (deployments, _),
    ):
        ensure_namespace(cluster, NAMESPACE)
        seen, ready = deployments.track(lambda _: True), deployments.track(deployment_ready)
        say(f"raw: applying {len(children)} objects")
        started = time.monotonic()
        apply = apply_all(cluster, children, "bench-raw")
        say(f"raw: applied in {apply:.1f}s")
        wait_all("raw: Deployments Ready", [ready], n, timeout)
        return rollout("raw kubectl apply", n, started=started, apply=apply, first=seen, done=ready)


def run_operator(
    tools: Toolchain, n: int, workers: int | None, restart: str | None, args: argparse.Namespace
) -> OperatorRun:
    bodies = [model_deployment(name, NAMESPACE) for name in names(n)]
    # The log stays until the run is reaped.
    workdir = testruns.run_dir() / f"operator-{n}-{workers or 'default'}"
    workdir.mkdir(exist_ok=True)
    with fresh_cluster(tools, pods=2 * n, policy=audit_policy(OPERATOR_USER)) as cluster:
        ensure_crd(cluster)
        ensure_namespace(cluster, NAMESPACE)
        kubeconfig = operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
        operator = OperatorProcess(
            cluster, NAMESPACE, workdir, interval=None,
            extra_args=["--workers", str(workers)] if workers else [],
            env={"KUBECONFIG": str(kubeconfig)},
        )  # fmt: skip
        with watching(cluster) as (deployments, models), operator:
            assert operator.process is not None
            pid = operator.process.pid
            seen = models.track(lambda _: True)
            pods_ready = deployments.track(deployment_ready)
            md_ready = models.track(lambda body: condition_true(body, "Ready"))
            say(f"operator: applying {n} ModelDeployments (log: {operator.log_path})")
            before = sample(pid)
            started = time.monotonic()
            apply = apply_all(cluster, bodies, "bench")
            say(f"operator: applied in {apply:.1f}s")
            all_ready = wait_all(
                "operator: pods Ready, Ready condition",
                [pods_ready, md_ready],
                n,
                args.ready_timeout,
            )
            rollout_cpu = sample(pid).cpu_seconds - before.cpu_seconds
            idle = measure_idle(cluster, operator, pid, args.idle_seconds) if all_ready else None
            after_restart, restarted = None, None
            if idle is not None and restart is not None:
                operator.stop()
                if restart == "every-pass":
                    operator.resync = EVERY_PASS
                say(f"operator: restarted ({restart}, resync {operator.resync or 'default'})")
                restarting = time.monotonic()
                operator.start()
                assert operator.process is not None
                # Kopf fills every index before it calls a handler: until then it is busy
                # listing, not idle. Its first pass plans each ModelDeployment once.
                if wait_reconciled(operator, n, args.ready_timeout):
                    restarted = time.monotonic() - restarting
                    pid = operator.process.pid
                    after_restart = measure_idle(cluster, operator, pid, args.idle_seconds)
            to_zero, to_killed = kill_switch(
                cluster, deployments, models, names(n)[n // 2], args.kill_timeout
            )
    pods, ready = (
        rollout(label, n, started=started, apply=apply, first=seen, done=done)
        for label, done in (("operator: pods Ready", pods_ready), ("operator: Ready", md_ready))
    )
    return OperatorRun(
        workers=workers,
        pods=pods,
        ready=ready,
        rollout_cpu_seconds=rollout_cpu,
        idle=idle,
        restart=restart,
        idle_after_restart=after_restart,
        restart_to_planned=restarted,
        kill_to_zero=to_zero,
        kill_to_killed=to_killed,
    )


def wait_reconciled(operator: OperatorProcess, n: int, timeout: float) -> bool:
    """Until the operator's counters show `n` reconciles (its first pass after a start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if operator.stats().get("reconciles", 0) >= n:
                return True
        except OSError:
            pass  # not serving its liveness endpoint yet
        time.sleep(1)
    say(f"operator: not {n} reconciles after {timeout:.0f}s")
    return False


def measure_idle(cluster: KwokCluster, operator: OperatorProcess, pid: int, window: float) -> Idle:
    say(f"operator: all Ready; settling {SETTLE_SECONDS:.0f}s, then idle for {window:.0f}s")
    time.sleep(SETTLE_SECONDS)
    mark, before, total_before = operator.mark(), sample(pid), requests_total(cluster)
    start = datetime.now(UTC)
    time.sleep(window)
    end = datetime.now(UTC)
    total_after, after = requests_total(cluster), sample(pid)
    writes = len(operator.writes(since=mark))
    with cluster.audit_log.open() as lines:
        audit = count_audit(lines, OPERATOR_USER, start, end)
    seconds_idle = (end - start).total_seconds()
    say(f"operator idle: {audit.requests} requests ({audit.by_verb}), {writes} writes logged")
    return Idle(
        seconds_idle,
        audit,
        total_after - total_before,
        writes,
        after.cpu_seconds - before.cpu_seconds,
        after,
    )


def kill_switch(
    cluster: KwokCluster, deployments: Board, models: Board, name: str, timeout: float
) -> tuple[float | None, float | None]:
    """Seconds from the patch to its Deployments at 0 replicas, and to phase Killed."""
    say(f"operator: engaging the kill switch of {name}")
    zero = deployments.track(lambda d: model_name(d) == name and scaled_to_zero(d))
    killed = models.track(lambda m: model_name(m) == name and phase(m) == "Killed")
    started = time.monotonic()
    cluster.kubectl(
        "patch", f"{PLURAL}.{GROUP}", name, "-n", NAMESPACE, "--type=merge",
        "-p", json.dumps({"spec": {"killSwitch": {"engaged": True}}}),
    )  # fmt: skip
    wait_all("operator: kill switch (Deployments at 0, phase Killed)", [zero, killed], 1, timeout)
    return (
        zero.times[name] - started if name in zero.times else None,
        killed.times[name] - started if name in killed.times else None,
    )


# --- printing ---------------------------------------------------------------------------


def rollout_row(n: int, r: Rollout, raw: Rollout, workers: str = "") -> list[str]:
    def pct(q: float) -> str:
        return seconds(float(np.percentile(r.per_object, q))) if r.per_object else "-"

    ratio = f"{r.total / raw.total:.2f}" if r.total and raw.total else "-"
    return [
        f"{n}",
        f"{r.label} ({workers} workers)" if workers else r.label,
        f"{r.apply_seconds:.1f}s",
        f"{len(r.per_object)}",
        pct(50),
        pct(95),
        seconds(r.total),
        ratio,
    ]


def workers_of(run: OperatorRun) -> str:
    return str(run.workers or DEFAULT_WORKERS)


def idle_row(n: int, run: OperatorRun, idle: Idle | None, passes: str) -> list[str]:
    figures = ["-"] * 6
    if idle is not None:
        per_hour = 3600 / idle.seconds
        figures = [
            f"{idle.audit.requests / idle.seconds:.1f}",
            f"{idle.apiserver_requests / idle.seconds:.1f}",
            f"{idle.audit.writes * per_hour:.0f}",
            f"{idle.logged_writes * per_hour:.0f}",
            f"{idle.process.rss_bytes / 2**20:.0f}/{idle.process.peak_rss_bytes / 2**20:.0f}",
            f"{100 * idle.cpu_seconds / idle.seconds:.1f}",
        ]
    main = idle is run.idle
    return [
        f"{n}",
        workers_of(run),
        passes,
        *figures,
        f"{run.rollout_cpu_seconds:.1f}" if main else "-",
        seconds(run.kill_to_zero) if main else "-",
        seconds(run.kill_to_killed) if main else "-",
    ]


def report(results: list[Result], idle_seconds: float) -> None:
    print()
    print("apply -> Ready (per object: p50/p95 from first seen; all: from the start of apply)")
    rows = []
    for r in results:
        rows.append(rollout_row(r.n, r.raw, r.raw))
        for run in r.operators:
            rows += [
                rollout_row(r.n, rollout, r.raw, workers_of(run))
                for rollout in (run.pods, run.ready)
            ]
    headers = ["N", "path", "apply", "ready", "p50", "p95", "all Ready", "x raw"]
    print(table(headers, rows, text_columns=2))
    print()
    print(
        f"operator idle ({idle_seconds:.0f}s window after all Ready + {SETTLE_SECONDS:.0f}s)"
        " and kill switch of one object while N exist"
    )
    headers = [
        "N", "workers", "planned", "op req/s", "all req/s", "writes/h audit", "writes/h log",
        "RSS/peak MiB", "CPU% idle", "CPU s rollout", "kill -> 0 pods", "kill -> Killed",
    ]  # fmt: skip
    rows = []
    for r in results:
        for run in r.operators:
            rows.append(idle_row(r.n, run, run.idle, "when due"))
            if run.idle_after_restart is not None:
                planned = (
                    f"all every {EVERY_PASS:.0f}s"
                    if run.restart == "every-pass"
                    else "when due, restarted"
                )
                rows.append(idle_row(r.n, run, run.idle_after_restart, planned))
    print(table(headers, rows, text_columns=3))
    for r in results:
        for run in r.operators:
            if run.restart_to_planned is not None:
                print(
                    f"N={r.n}, {workers_of(run)} workers: restart ({run.restart}) -> every "
                    f"ModelDeployment reconciled once {run.restart_to_planned:.1f}s"
                )
    print()
    print("op req/s: the operator's ServiceAccount in the apiserver's audit log; all req/s:")
    print("apiserver_request_total (every client: controller-manager, scheduler, kwok, bench);")
    print("writes/h audit: its create/update/patch/delete; writes/h log: its `write` log lines.")
    print(f"planned: when due (requeue-after, resync {DEFAULT_RESYNC:.0f}s; restarted: after a")
    print(f"cold restart among N objects), or all every {EVERY_PASS:.0f}s (--resync")
    print(f"{EVERY_PASS:.0f} after a restart: the periodic pass before requeue-after).")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,300,1000", help="comma-separated N")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=900.0,
        help="seconds to wait for all Ready, per path and N",
    )
    parser.add_argument("--kill-timeout", type=float, default=180.0)
    parser.add_argument(
        "--workers",
        default="",
        help="comma-separated reconcile workers, one operator run each (default: the "
        f"operator's, {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--restart",
        choices=RESTARTS,
        default=None,
        help="after the last workers value's idle window, restart the operator (defaults: as "
        f"it was; every-pass: with --resync {EVERY_PASS:.0f}, every ModelDeployment planned "
        f"every {EVERY_PASS:.0f} s as before requeue-after), time its first pass and measure "
        "idle again",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    sweep: list[int | None] = [int(w) for w in args.workers.split(",") if w.strip()] or [None]
    os.environ.pop(INTERVAL_ENV, None)
    tools = toolchain()
    testruns.reap_stale_runs(tools)
    say(f"sizes {sizes}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    results = []
    for n in sizes:
        say(f"N={n}")
        result = Result(n, run_raw(tools, n, args.ready_timeout), [])
        results.append(result)
        for i, workers in enumerate(sweep):
            last = i == len(sweep) - 1
            result.operators.append(
                run_operator(tools, n, workers, args.restart if last else None, args)
            )
            say(f"N={n}, {workers or DEFAULT_WORKERS} workers done; load {os.getloadavg()[0]:.2f}")
            report(results, args.idle_seconds)
        # The report after each operator run: a run stopped later keeps what it has.


if __name__ == "__main__":
    main()
