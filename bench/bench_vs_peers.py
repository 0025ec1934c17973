"""Argo Rollouts, Flagger and modeldeploy side by side: the same cluster, servers, traffic,
breaches and thresholds.

    python bench/bench_vs_peers.py [--runs 1] [--scenarios healthy,slow,skewed,erroring]
        [--tools argo,flagger,modeldeploy] [--rate 36] [--timeout 180]
        [--one-at-a-time] [--modeldeploy-min-samples N]

Builds the peers once (`hack/testenv.sh peers`: Argo Rollouts' controller and Flagger from
their Go modules, their CRDs from the same modules), creates a kwok cluster of its own and a
Prometheus on 127.0.0.1 (1 s scrapes), and per tool, in a namespace of its own: the pod
runner (one real `modeldeploy serve` of the churn example per Ready pod), the controller as
a local process on the cluster's kubeconfig and that Prometheus, the first version (healthy)
deployed and Ready, then for each run and scenario a new version:

- healthy: the healthy variant again (it must be promoted; a rollback is a false one);
- slow: the same model 60 ms late (latency p95 over 50 ms: must be rolled back);
- skewed: monthly_charges preprocessed 100x (feature PSI over 0.15: must be rolled back);
- erroring: one request in ten a 500 after warm-up (5xx share over 0.02: must be rolled back).

The tools run at the same time, each in its own namespace, so that they meet the same load
(and the runs take a third of the time); `--one-at-a-time` runs them one after another.

The same policy in each tool's terms (`modeldeploy.devenv.peers.Rules`): 4 replicas, steps
25 % and 50 % with 6 s after each, analysis every 2 s over 30 s windows, 2 failing rounds
roll back. Argo: a basic (replica-ratio) canary, the one client Service selecting both
ReplicaSets, a background AnalysisTemplate of Prometheus queries. Flagger: the kubernetes
provider's Blue/Green (clients reach the primary only; the canary gets a load tester's
requests through `<name>-canary`, here at the first step's share of the client rate),
MetricTemplates, analysis every 10 s for as many iterations as the others' steps last.
modeldeploy: a ModelDeployment with the same steps and thresholds, without the peers'
200-request floor (its tests are anytime-valid; `--modeldeploy-min-samples` sets one).

Per run: breach→0 is from the bad version's first request to its last one (any Service),
→promoted from the new version's first request to the controller saying so; stuck is
neither within `--timeout`. Each controller's CPU and peak RSS from /proc over its runs.
Client traffic is open loop at `--rate` requests/s from the example's held-out rows, spread
over the Service's Ready pods as kube-proxy would. Only 127.0.0.1 is ever dialled. Targets
are printed, never asserted.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from analysis_stack import (  # noqa: E402
    ERRORING,
    SKEWED,
    SLOW,
    V1,
    V3,
    AnalysisStack,
    Traffic,
    manifest,
    write_image_map,
)
from operator_harness import apply_object, ensure_namespace, wait_for  # noqa: E402

from modeldeploy.devenv import testruns  # noqa: E402
from modeldeploy.devenv.cluster import KwokCluster  # noqa: E402
from modeldeploy.devenv.endpoints import read_published  # noqa: E402
from modeldeploy.devenv.loadgen import EndpointSource  # noqa: E402
from modeldeploy.devenv.peers import (  # noqa: E402
    FOOTPRINT_HEADERS,
    NAME,
    SUMMARY_HEADERS,
    TOOLS,
    Footprint,
    Outcome,
    Rules,
    RunResult,
    Scenario,
    Tool,
    argo_analysis_template,
    argo_rollout,
    client_service,
    flagger_canary,
    flagger_deployment,
    flagger_halt_reason,
    flagger_metric_templates,
    footprint_rows,
    modeldeploy_spec,
    parse_exports,
    summary_rows,
    target_lines,
)
from modeldeploy.devenv.podrunner import PodRunner, RunnerConfig  # noqa: E402
from modeldeploy.devenv.prometheus import PrometheusServer  # noqa: E402
from modeldeploy.devenv.scale import ProcessSample, process_sample, table  # noqa: E402
from modeldeploy.devenv.tools import free_port, prometheus_binary, toolchain  # noqa: E402
from modeldeploy.devenv.traffic import read_rows  # noqa: E402
from modeldeploy.profile_schema import Profile  # noqa: E402
from modeldeploy.resources.names import LABEL_REVISION  # noqa: E402

Body = dict[str, Any]
SCENARIOS = {
    "healthy": Scenario("healthy", "healthy", bad=False),
    "slow": Scenario("slow", "slow", bad=True),
    "skewed": Scenario("skewed", "skewed", bad=True),
    "erroring": Scenario("erroring", "erroring", bad=True),
}
# The healthy runs alternate two healthy builds, so that every run changes the image too.
IMAGES = {"slow": [SLOW], "skewed": [SKEWED], "erroring": [ERRORING], "healthy": [V3, V1]}
POLL = 0.5  # seconds between status reads
DRAIN = 2.0  # seconds a rolled-back version must have no Ready pod behind a Service


def say(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", flush=True)


def peer_binaries() -> dict[str, str]:
    """Builds the peers (cached) and returns `hack/testenv.sh peers`' exports."""
    say("hack/testenv.sh peers (builds Argo Rollouts and Flagger once, then cached)")
    printed = subprocess.run(
        [str(ROOT / "hack" / "testenv.sh"), "peers"],
        check=True, capture_output=True, text=True, timeout=3600,
    ).stdout  # fmt: skip
    return parse_exports(printed)


def proc_sample(pid: int) -> ProcessSample:
    proc = Path(f"/proc/{pid}")
    ticks = os.sysconf("SC_CLK_TCK")
    return process_sample((proc / "stat").read_text(), (proc / "status").read_text(), ticks)


@dataclass
class Meter:
    """CPU and peak RSS of one controller process over its runs."""

    pid: int
    began: float = field(default_factory=time.monotonic)
    first: ProcessSample | None = None

    def __post_init__(self) -> None:
        self.first = proc_sample(self.pid)

    def footprint(self) -> Footprint:
        last = proc_sample(self.pid)
        assert self.first is not None
        return Footprint(
            last.cpu_seconds - self.first.cpu_seconds,
            time.monotonic() - self.began,
            last.peak_rss_bytes,
        )


class Controller:
    """A peer's controller as a local process with the cluster's kubeconfig."""

    def __init__(self, command: Sequence[str], log: Path) -> None:
        self.command = list(command)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Controller":
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    @property
    def pid(self) -> int:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.command[0]} exited:\n{self.log.read_text()[-3000:]}")
        return self.process.pid


# --- one tool's stack -----------------------------------------------------------------------


class ToolStack(ABC):
    """Deploys versions and reads the outcome in one tool's terms."""

    tool: Tool

    def __init__(self, kube: KwokCluster, prometheus: PrometheusServer, workdir: Path) -> None:
        self.kube = kube
        self.prometheus = prometheus
        self.workdir = workdir
        self.namespace = f"bench-{self.tool}"
        self.rules = Rules()
        self.exits = ExitStack()

    @abstractmethod
    def start(self) -> int:
        """Pod runner, controller, the first version Ready and served; the controller's pid."""

    @abstractmethod
    def deploy(self, image: str, version: str) -> None:
        """Roll out `version` of `image` in the tool's terms."""

    @abstractmethod
    def outcome(self, version: str) -> Outcome | None:
        """What the controller says of `version` so far (None: undecided)."""

    def revision(self, version: str) -> str:
        """The revision label the pod runner's endpoints carry for that version's pods."""
        return f"v{version}"

    @abstractmethod
    def why(self) -> str:
        """Why the last version was rolled back, in the tool's words (for the run's line)."""

    def traffic_services(self) -> list[tuple[str, float]]:
        """(Service, share of `--rate`) that the bench's clients send to."""
        return [(NAME, 1.0)]

    @abstractmethod
    def endpoints_path(self) -> Path:
        """The pod runner's endpoints file the clients read."""

    def close(self) -> None:
        self.exits.close()


class PeerStack(ToolStack):
    """A peer's controller (`binary`) beside a pod runner of its own."""

    def __init__(self, binary: str, *args: Any) -> None:
        self.binary = binary
        super().__init__(*args)
        self.progressed = False  # the current version was seen under way (not a past abort)

    def start_runner(self) -> None:
        ensure_namespace(self.kube, self.namespace)
        self.runner = PodRunner(
            RunnerConfig(
                write_image_map(self.workdir),
                self.workdir / "pod-runner",
                namespace=self.namespace,
                targets_dir=self.prometheus.targets_dir,
                job=f"peers-{self.tool}",
            ),
            str(self.kube.kubeconfig),
        )
        self.runner.start()
        self.exits.callback(self.runner.stop)

    def endpoints_path(self) -> Path:
        return self.runner.endpoints_path

    def ready_behind(self, service: str, revision: str, count: int) -> bool:
        published = self.runner.published()
        behind = published.ready_behind(self.namespace, service)
        return sum(1 for e in behind if e.revision == revision) >= count

    def get(self, kind: str) -> Body:
        found = self.kube.kubectl("get", kind, NAME, "-n", self.namespace, "-o", "json")
        body: Body = json.loads(found.stdout)
        return body


class ArgoStack(PeerStack):
    tool: Tool = "argo"

    def start(self) -> int:
        self.start_runner()
        command = [
            self.binary, "--kubeconfig", str(self.kube.kubeconfig),
            "--namespaced", "--namespace", self.namespace,
            "--metricsPort", str(free_port()), "--healthzPort", str(free_port()),
            "--leader-elect=false", "--loglevel", "info",
        ]  # fmt: skip
        controller = self.exits.enter_context(Controller(command, self.workdir / "argo.log"))
        apply_object(self.kube, client_service(self.namespace))
        apply_object(
            self.kube, argo_analysis_template(self.namespace, self.prometheus.url, self.rules)
        )
        self.deploy(V1, "1")
        wait_for(
            lambda: self.outcome("1") == "promoted"
            and self.ready_behind(NAME, "v1", self.rules.replicas),
            timeout=180, interval=POLL, what="Argo's first revision Healthy and served",
        )  # fmt: skip
        return controller.pid

    def deploy(self, image: str, version: str) -> None:
        self.progressed = False
        apply_object(self.kube, argo_rollout(self.namespace, image, version, self.rules))

    def outcome(self, version: str) -> Outcome | None:
        # An abort outlives a run until the controller takes up the new template: only one
        # reached after this version was seen progressing counts.
        rollout = self.get("rollouts.argoproj.io")
        status = rollout.get("status") or {}
        labels = rollout["spec"]["template"]["metadata"]["labels"]
        current = str(status.get("observedGeneration")) == str(rollout["metadata"]["generation"])
        if not (current and labels.get(LABEL_REVISION) == f"v{version}"):
            return None
        if status.get("stableRS") == status.get("currentPodHash"):
            return "promoted" if status.get("phase") == "Healthy" else None
        if not status.get("abort"):
            self.progressed = True
        return "rolled back" if status.get("abort") and self.progressed else None

    def why(self) -> str:
        listed = self.kube.kubectl(
            "get", "analysisruns.argoproj.io", "-n", self.namespace, "-o", "json"
        )
        runs = sorted(
            json.loads(listed.stdout)["items"], key=lambda r: r["metadata"]["creationTimestamp"]
        )
        results = (runs[-1].get("status") or {}).get("metricResults", []) if runs else []
        failed = [
            f"{m['name']} {m.get('measurements', [{}])[-1].get('value', '?')}"
            for m in results
            if m.get("phase") == "Failed"
        ]
        return ", ".join(failed) or "no failed metric"


class FlaggerStack(PeerStack):
    tool: Tool = "flagger"

    def start(self) -> int:
        self.start_runner()
        command = [
            self.binary, "-kubeconfig", str(self.kube.kubeconfig),
            "-mesh-provider", "kubernetes", "-metrics-server", self.prometheus.url,
            "-namespace", self.namespace, "-port", str(free_port()),
            "-log-level", "info", "-enable-config-tracking=false",
        ]  # fmt: skip
        controller = self.exits.enter_context(Controller(command, self.workdir / "flagger.log"))
        for template in flagger_metric_templates(self.namespace, self.prometheus.url, self.rules):
            apply_object(self.kube, template)
        apply_object(self.kube, flagger_deployment(self.namespace, V1, "1", self.rules))
        apply_object(self.kube, flagger_canary(self.namespace, self.rules))
        wait_for(
            lambda: self._phase() == "Initialized"
            and self.ready_behind(NAME, "v1", self.rules.replicas),
            timeout=180, interval=POLL, what="Flagger's primary initialised and served",
        )  # fmt: skip
        return controller.pid

    def _phase(self) -> str:
        return str((self.get("canaries.flagger.app").get("status") or {}).get("phase", ""))

    def deploy(self, image: str, version: str) -> None:
        self.progressed = False
        self.deployed = datetime.now(UTC)  # only this version's Halt Events explain it
        apply_object(self.kube, flagger_deployment(self.namespace, image, version, self.rules))

    def outcome(self, version: str) -> Outcome | None:
        # Flagger's phase outlives a run: only one reached after this run's Progressing counts.
        phase = self._phase()
        if phase == "Progressing":
            self.progressed = True
        if not self.progressed:
            return None
        return {"Succeeded": "promoted", "Failed": "rolled back"}.get(phase)  # type: ignore[return-value]

    def why(self) -> str:
        listed = self.kube.kubectl(
            "get", "events", "-n", self.namespace, "-o", "json",
            "--field-selector", "involvedObject.kind=Canary",
        )  # fmt: skip
        return flagger_halt_reason(json.loads(listed.stdout)["items"], self.deployed)

    def traffic_services(self) -> list[tuple[str, float]]:
        # Blue/Green: clients reach the primary; a load tester calls the canary's Service.
        return [(NAME, 1.0), (f"{NAME}-canary", self.rules.steps[0] / 100)]


class ModeldeployStack(ToolStack):
    tool: Tool = "modeldeploy"

    def __init__(self, *args: Any, min_samples: int | None = None) -> None:
        super().__init__(*args)
        self.min_samples = min_samples

    def start(self) -> int:
        self.stack = self.exits.enter_context(
            AnalysisStack(
                self.kube, self.prometheus.url, self.prometheus.targets_dir, self.namespace,
                self.workdir,
            )
        )  # fmt: skip
        self._apply(V1, "1")
        self.stack.wait_stable(180)
        self.canary: str | None = None
        self.previous: str | None = None
        process = self.stack.operator.process
        assert process is not None
        return process.pid

    def _apply(self, image: str, version: str) -> None:
        spec = modeldeploy_spec(self.rules, self.min_samples)
        apply_object(self.kube, manifest(self.namespace, image, version, **spec))

    def deploy(self, image: str, version: str) -> None:
        # A canary left from a stuck run is not this version's.
        self.previous = self.stack.status().get("canaryRevision")
        self._apply(image, version)

    def outcome(self, version: str) -> Outcome | None:
        status = self.stack.status()
        if status.get("phase") == "RolledBack" and not status.get("canaryRevision"):
            return "rolled back"
        if status.get("phase") == "Stable" and status.get("stableRevision") == self.canary:
            return "promoted"
        return None

    def why(self) -> str:
        history = self.stack.status().get("history") or [{}]
        return str(history[-1].get("reason", ""))

    def _new_canary(self) -> str | None:
        canary = self.stack.status().get("canaryRevision")
        return None if canary == self.previous else canary

    def revision(self, version: str) -> str:
        """The new version's revision, once the operator has made it the canary."""
        self.canary = wait_for(self._new_canary, timeout=60, interval=0.2, what="a new canary")
        assert self.canary is not None
        return self.canary

    def endpoints_path(self) -> Path:
        return self.stack.runner.endpoints_path


# --- runs -------------------------------------------------------------------------------------


@contextmanager
def client_traffic(stack: ToolStack, rate: float, seed: int) -> Iterator[list[Traffic]]:
    launch = write_image_map(stack.workdir).launch(V1)
    assert launch.model_dir is not None
    assert launch.data_dir is not None
    profile = Profile.model_validate_json((launch.model_dir / "profile.json").read_bytes())
    rows = read_rows(launch.data_dir / "holdout.csv", profile.features)
    with ExitStack() as exits:
        streams = []
        for i, (service, share) in enumerate(stack.traffic_services()):
            source = EndpointSource(stack.endpoints_path(), stack.namespace, service, refresh=0.5)
            traffic = Traffic(source, rows, profile.features, rate * share, seed=seed + i)
            streams.append(exits.enter_context(traffic))
        yield streams


def first_and_last(streams: Sequence[Traffic], revision: str) -> tuple[float, float] | None:
    times = [t for s in streams for t in s.sent.get(revision, [])]
    return (min(times), max(times)) if times else None


def served(stack: ToolStack, revision: str) -> bool:
    """Does any Service the clients call still have a Ready pod of `revision`?"""
    published = read_published(stack.endpoints_path())
    return any(
        e.revision == revision
        for service, _ in stack.traffic_services()
        for e in published.ready_behind(stack.namespace, service)
    )


def one_run(
    stack: ToolStack, scenario: Scenario, image: str, version: str, *, rate: float, timeout: float
) -> RunResult:
    with client_traffic(stack, rate, seed=int(version)) as streams:
        time.sleep(2)  # clients are sending before the new version appears
        stack.deploy(image, version)
        revision = stack.revision(version)
        deadline = time.monotonic() + timeout
        outcome: Outcome | None = None
        while outcome is None and time.monotonic() < deadline:
            time.sleep(POLL)
            outcome = stack.outcome(version)
        decided = time.monotonic()
        if outcome == "rolled back":
            wait_for(
                lambda: not served(stack, revision), timeout=60, interval=0.2,
                what=f"{revision} out of the Services",
            )  # fmt: skip
            time.sleep(DRAIN)  # requests in flight when it left
    span = first_and_last(streams, revision)
    seconds: float | None = None
    if outcome == "rolled back" and span:
        seconds = span[1] - span[0]
    elif outcome == "promoted" and span:
        seconds = decided - span[0]
    result = RunResult(stack.tool, scenario.name, scenario.bad, outcome or "stuck", seconds)
    shown = "-" if seconds is None else f"{seconds:.1f}s"
    why = f": {stack.why()[:200]}" if outcome == "rolled back" else ""
    say(f"{stack.tool} {scenario.name} v{version}: {result.outcome} ({shown}){why}")
    return result


def bench_tool(
    stack: ToolStack, scenarios: Sequence[Scenario], runs: int, rate: float, timeout: float
) -> tuple[list[RunResult], Footprint]:
    say(f"{stack.tool}: starting (runner, controller, first version)")
    pid = stack.start()
    meter = Meter(pid)
    results = []
    version = 1
    for run in range(runs):
        for scenario in scenarios:
            version += 1
            images = IMAGES[scenario.name]
            image = images[run % len(images)]
            results.append(
                one_run(stack, scenario, image, str(version), rate=rate, timeout=timeout)
            )
    return results, meter.footprint()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="per scenario and tool")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--rate", type=float, default=36.0, help="client requests/s")
    parser.add_argument("--timeout", type=float, default=180.0, help="per run, seconds")
    parser.add_argument(
        "--one-at-a-time", action="store_true", help="one tool after another, not together"
    )
    parser.add_argument(
        "--modeldeploy-min-samples", type=int, default=None,
        help="a sample floor for modeldeploy too (default none: its tests need none)",
    )  # fmt: skip
    args = parser.parse_args()
    if not (1 <= args.runs <= 20 and 0 < args.rate <= 100 and 30 <= args.timeout <= 600):
        parser.error("runs in 1..20, rate in (0, 100], timeout in [30, 600]")
    if not set(args.tools.split(",")) <= set(TOOLS):
        parser.error(f"tools among {', '.join(TOOLS)}")
    if not set(args.scenarios.split(",")) <= set(SCENARIOS):
        parser.error(f"scenarios among {', '.join(SCENARIOS)}")
    return args


def main() -> None:
    args = parse_args()
    scenarios = [SCENARIOS[s] for s in args.scenarios.split(",")]
    tools = args.tools.split(",")
    binaries = peer_binaries() if set(tools) & {"argo", "flagger"} else {}
    tools_found = toolchain()
    cluster = testruns.test_cluster(tools_found)
    results: list[RunResult] = []
    footprints: dict[Tool, Footprint] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))  # kept: the controllers' logs
    say("creating a kwok cluster and a Prometheus on 127.0.0.1")
    testruns.create_cluster(cluster)
    try:
        if binaries:
            cluster.kubectl(
                "apply", "--server-side", "-f", binaries["MODELDEPLOY_PEER_CRDS"], timeout=120
            )
        with PrometheusServer(prometheus_binary(), work / "prometheus") as prometheus:
            makers: dict[str, Callable[[Path], ToolStack]] = {
                "argo": lambda d: ArgoStack(
                    binaries["MODELDEPLOY_ARGO_ROLLOUTS"], cluster, prometheus, d
                ),
                "flagger": lambda d: FlaggerStack(
                    binaries["MODELDEPLOY_FLAGGER"], cluster, prometheus, d
                ),
                "modeldeploy": lambda d: ModeldeployStack(
                    cluster, prometheus, d, min_samples=args.modeldeploy_min_samples
                ),
            }

            def bench(tool: str) -> tuple[Tool, list[RunResult], Footprint]:
                directory = work / tool
                directory.mkdir()
                stack = makers[tool](directory)
                try:
                    found, footprint = bench_tool(
                        stack, scenarios, args.runs, args.rate, args.timeout
                    )
                finally:
                    stack.close()
                return stack.tool, found, footprint

            with ThreadPoolExecutor(1 if args.one_at_a_time else len(tools)) as pool:
                for tool, found, footprint in pool.map(bench, tools):
                    results += found
                    footprints[tool] = footprint
    finally:
        cluster.delete()
    rules = Rules()
    print(
        f"\nchurn example, {args.rate:g} client requests/s, {args.runs} run(s) per scenario and "
        f"tool; steps {list(rules.steps)} of {rules.replicas} replicas, {rules.step_seconds}s "
        f"each; p95 {rules.p95_ms:g} ms, 5xx {rules.max_error_rate:g}, feature PSI "
        f"{rules.feature_psi:g}; {rules.failure_limit} failing rounds roll back; peers' "
        f"floor {rules.min_samples} requests, modeldeploy's "
        f"{args.modeldeploy_min_samples or 'none'}; tools "
        f"{'one at a time' if args.one_at_a_time else 'together'}; load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(table(SUMMARY_HEADERS, summary_rows(results), text_columns=2))
    print()
    print(table(FOOTPRINT_HEADERS, footprint_rows(footprints)))
    print()
    for line in target_lines(results):
        print(line)
    print(f"logs (controllers, pod runner, Prometheus): {work}")


if __name__ == "__main__":
    main()
