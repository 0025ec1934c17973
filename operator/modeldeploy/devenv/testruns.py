"""Per-process work directories for test sessions, outside pytest's tmp rotation.

pytest prunes old `pytest-N` base directories, which concurrent sessions (several people or
agents testing on one machine) would do under each other's running clusters; these
directories belong to one process id and are reaped only once that process is gone.
"""

import os
import shutil
import subprocess
from pathlib import Path

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.tools import Toolchain, cache_dir, pid_alive

CLUSTER_PREFIX = "md-test-"


def runs_root() -> Path:
    return cache_dir() / "test-runs"


def run_dir() -> Path:
    path = runs_root() / str(os.getpid())
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_cluster(tools: Toolchain) -> KwokCluster:
    return _session_cluster(tools, "")


def own_cluster(tools: Toolchain, purpose: str) -> KwokCluster:
    """A second cluster of this session's, for a test that would leave the session's cluster
    unlike a fresh one."""
    return _session_cluster(tools, f"-{purpose}")


def _session_cluster(tools: Toolchain, suffix: str) -> KwokCluster:
    return KwokCluster(f"{CLUSTER_PREFIX}{os.getpid()}{suffix}", run_dir() / f"kwok{suffix}", tools)


def create_cluster(cluster: KwokCluster, nodes: int = 3) -> None:
    """Create it, once more if the first try fails (a machine loaded by other work can miss
    kwokctl's start deadline); a leftover of the same name is deleted first."""
    cluster.delete()
    try:
        cluster.create(nodes=nodes)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as error:
        print(f"cluster creation failed, retrying once: {error}")
        cluster.delete()
        cluster.create(nodes=nodes)


def reap_stale_runs(tools: Toolchain) -> list[str]:
    """Delete clusters and files of test sessions whose process has exited."""
    reaped = []
    for path in runs_root().glob("*") if runs_root().exists() else []:
        if not path.name.isdigit() or pid_alive(int(path.name)):
            continue
        for kwok in path.glob("kwok*"):
            suffix = kwok.name.removeprefix("kwok")
            KwokCluster(f"{CLUSTER_PREFIX}{path.name}{suffix}", kwok, tools).delete()
        shutil.rmtree(path, ignore_errors=True)
        reaped.append(path.name)
    return reaped
