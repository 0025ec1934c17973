"""What the operator costs: memory and import time of its process, and the objects each
ModelDeployment puts in the cluster.

    python bench/bench_operator_footprint.py [--count 60] [--steady 30] [--operator-code DIR]

Needs the cluster tools' environment (`eval "$(hack/testenv.sh env)"`). First, in fresh
interpreters: VmRSS after `import modeldeploy.handlers` (median of 3) and the biggest
imports of `python -X importtime`. Then a kwokctl cluster of its own (3 fake nodes, torn
down at the end), `--count` ModelDeployments without analysis, and one `modeldeploy
operator` watching their namespace; once all are Ready, the operator's VmRSS is sampled
every second for `--steady` seconds of level-based reconciling, and the Deployments,
Services (ClusterIPs), EndpointSlices, HPAs and PDBs in the namespace are counted.
`--operator-code` runs everything from another checkout's `operator/` directory (e.g.
`git archive main operator | tar -x -C /tmp/main`) for a before/after. Prints figures;
asserts nothing.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modeldeploy.api import API_VERSION, KIND, PLURAL
from modeldeploy.crd import CRD_FILENAME
from modeldeploy.devenv import testruns
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.tools import free_port, toolchain

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench-footprint"
IMAGE = "registry.example/churn:1"
MIN_WARM = 2
IMPORT_RUNS = 3
TOP_IMPORTS = 12
READY_TIMEOUT = 600.0
KINDS = {  # kubectl resource -> kind, in the order printed
    "deployments": "Deployment",
    "services": "Service",
    "endpoints": "Endpoints",
    "endpointslices": "EndpointSlice",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "poddisruptionbudgets": "PodDisruptionBudget",
}
RSS_OF = r"import re; print(re.search(r'VmRSS:\s+(\d+)', open('/proc/self/status').read())[1])"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g}s")
        time.sleep(1.0)


def status_kb(pid: int | str, field: str) -> int:
    found = re.search(rf"{field}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(found[1]) if found else 0


def python(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter of this venv."""
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=True, timeout=120
    )


def import_rss_kb(env: Mapping[str, str]) -> int:
    runs = [
        int(python(env, "-c", f"import modeldeploy.handlers; {RSS_OF}").stdout)
        for _ in range(IMPORT_RUNS)
    ]
    return int(statistics.median(runs))


def import_costs(env: Mapping[str, str]) -> Counter[str]:
    """Microseconds of `import modeldeploy.handlers` by top-level package (the self times of
    every module of the package, whoever imported it first), and "total"."""
    err = python(env, "-X", "importtime", "-c", "import modeldeploy.handlers").stderr
    costs: Counter[str] = Counter()
    for line in err.splitlines():  # post-order: a module's imports come before it
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        name = parts[2].rstrip()
        if name.strip() == "modeldeploy.handlers":
            costs["modeldeploy"] += int(parts[0])
            costs["total"] = int(parts[1])
            return costs
        if not name.startswith("   "):  # depth 0: imported by the interpreter's start
            costs.clear()
        else:
            costs[name.strip().split(".")[0]] += int(parts[0])
    return costs


def median_import_costs(env: Mapping[str, str]) -> list[tuple[float, str]]:
    """(median ms over IMPORT_RUNS, package), the total first, then the TOP_IMPORTS biggest."""
    runs = [import_costs(env) for _ in range(IMPORT_RUNS)]
    packages = set().union(*runs)
    medians = [(statistics.median(run[p] for run in runs) / 1000, p) for p in packages]
    return sorted(medians, reverse=True)[: TOP_IMPORTS + 1]


def model_deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": name, "version": "1"},
            "image": IMAGE,
            "imagePolicy": "allowTags",
            "replicas": {"minWarm": MIN_WARM, "max": 6},
        },
    }


def ready_count(cluster: KwokCluster) -> int:
    items = cluster.get_json(PLURAL, "-n", NAMESPACE)["items"]
    return sum(
        any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        for status in (item.get("status") or {} for item in items)
    )


def counted_objects(cluster: KwokCluster) -> Counter[str]:
    listed = cluster.get_json(",".join(KINDS), "-n", NAMESPACE)["items"]
    counts = Counter(item["kind"] for item in listed)
    counts["ClusterIP"] = sum(
        item["kind"] == "Service" and item["spec"].get("clusterIP") not in (None, "None")
        for item in listed
    )
    return counts


def operator_command(port: int, interval: float) -> list[str]:
    script = shutil.which("modeldeploy", path=str(Path(sys.executable).parent))
    assert script is not None, "run with the project's venv (modeldeploy on its bin/)"
    return [
        script, "operator", "--namespace", NAMESPACE, "--interval", str(interval),
        "--liveness", f"http://127.0.0.1:{port}/healthz", "--metrics-port", "0",
    ]  # fmt: skip


def live(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def run_cluster(args: argparse.Namespace, env: dict[str, str]) -> None:
    tools = toolchain()
    testruns.reap_stale_runs(tools)
    cluster = testruns.test_cluster(tools)
    log_path = testruns.run_dir() / "operator.log"
    operator: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        cluster.create(nodes=3)
        crd = ROOT / "crds" / CRD_FILENAME
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
        cluster.kubectl("wait", "--for=condition=Established", "-f", str(crd), "--timeout=60s")
        cluster.kubectl("create", "namespace", NAMESPACE)
        print(f"cluster up in {time.monotonic() - started:.0f}s")
        port = free_port()
        with log_path.open("wb") as log:
            operator = subprocess.Popen(
                operator_command(port, args.interval),
                env={**env, "KUBECONFIG": str(cluster.kubeconfig)},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: operator.poll() is None and live(url), 60, "operator liveness")
        idle_kb = status_kb(operator.pid, "VmRSS")
        started = time.monotonic()
        cluster.apply_objects([model_deployment(f"m{i:03d}") for i in range(args.count)])
        wait_until(lambda: ready_count(cluster) == args.count, READY_TIMEOUT, "all Ready")
        print(f"{args.count} ModelDeployments Ready in {time.monotonic() - started:.0f}s")
        samples = []
        for _ in range(int(args.steady)):
            samples.append(status_kb(operator.pid, "VmRSS"))
            time.sleep(1.0)
        counts = counted_objects(cluster)
        peak_kb = status_kb(operator.pid, "VmHWM")
        median_kb = statistics.median(samples)
        print(f"operator VmRSS, MiB: {idle_kb / 1024:.1f} before any ModelDeployment; "
              f"{args.count} Ready, {args.steady:g} s: median {median_kb / 1024:.1f}, "
              f"max {max(samples) / 1024:.1f}; VmHWM {peak_kb / 1024:.1f}")  # fmt: skip
        print(f"objects in the namespace (per ModelDeployment), {MIN_WARM} pods each:")
        for kind in [*KINDS.values(), "ClusterIP"]:
            print(f"  {kind:<24}{counts[kind]:>6}{counts[kind] / args.count:>8.2f}")
    finally:
        if operator is not None and operator.poll() is None:
            operator.terminate()
            operator.wait(timeout=30)
        cluster.delete()
    print(f"operator log: {log_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=60, help="ModelDeployments")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds sampled")
    parser.add_argument("--interval", type=float, default=10.0, help="reconcile interval")
    parser.add_argument("--operator-code", type=Path, help="an operator/ dir to run instead")
    parser.add_argument("--imports-only", action="store_true", help="no cluster")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.operator_code is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(args.operator_code.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    code = python(env, "-c", "import modeldeploy; print(modeldeploy.__file__)").stdout.strip()
    print(f"operator code: {Path(code).parent}")
    print(f"VmRSS after import modeldeploy.handlers: {import_rss_kb(env) / 1024:.1f} MiB "
          f"(median of {IMPORT_RUNS})")  # fmt: skip
    print(f"import time, ms (median of {IMPORT_RUNS}), by top-level package:")
    for millis, package in median_import_costs(env):
        print(f"  {millis:8.1f}  {package}")
    if not args.imports_only:
        run_cluster(args, env)


if __name__ == "__main__":
    main()
