"""The long-lived local stack behind `make demo`: one kwokctl cluster and one Prometheus,
kept under the cache directory so that `modeldeploy dev down` can find and stop them."""

import json
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.tools import cache_dir, pid_alive, toolchain

DEMO_CLUSTER = "modeldeploy-demo"


def stack_dir() -> Path:
    return cache_dir() / "demo"


@dataclass
class StackState:
    kubeconfig: str
    prometheus_url: str
    prometheus_pid: int
    prometheus_targets: str


def _state_file() -> Path:
    return stack_dir() / "state.json"


def read_state() -> StackState | None:
    try:
        return StackState(**json.loads(_state_file().read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def demo_cluster() -> KwokCluster:
    return KwokCluster(DEMO_CLUSTER, stack_dir() / "kwok", toolchain())


def up(say: Callable[[str], None]) -> StackState:
    """Create (or reuse) the demo cluster and Prometheus."""
    cluster = demo_cluster()
    tools = cluster.tools
    state = read_state()
    if cluster.exists() and cluster.kubeconfig.exists():
        say(f"cluster {DEMO_CLUSTER} already running")
    else:
        say(f"creating cluster {DEMO_CLUSTER} (kube-apiserver {tools.kube_version}, kwok nodes)")
        cluster.create(nodes=3)
    if state is not None and pid_alive(state.prometheus_pid):
        say(f"prometheus already running on {state.prometheus_url}")
        return state
    say("starting prometheus on 127.0.0.1")
    prometheus = PrometheusServer(tools.prometheus, stack_dir() / "prometheus")
    pid = prometheus.start()
    state = StackState(
        kubeconfig=str(cluster.kubeconfig),
        prometheus_url=prometheus.url,
        prometheus_pid=pid,
        prometheus_targets=str(prometheus.targets_dir),
    )
    _state_file().write_text(json.dumps(asdict(state)))
    return state


def run_dir() -> Path:
    """Where `modeldeploy dev demo` keeps its operator, pod runner and logs."""
    return stack_dir() / "run"


def down(say: Callable[[str], None]) -> None:
    from modeldeploy.devenv.demo import reap_leftovers

    if reaped := reap_leftovers(run_dir()):
        say(f"stopped {len(reaped)} process group(s) a demo left running")
    state = read_state()
    if state is not None and pid_alive(state.prometheus_pid):
        say("stopping prometheus")
        os.kill(state.prometheus_pid, signal.SIGTERM)
    cluster = demo_cluster()
    if cluster.exists():
        say(f"deleting cluster {DEMO_CLUSTER}")
        cluster.delete()
    _state_file().unlink(missing_ok=True)
