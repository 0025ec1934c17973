"""The end-to-end story behind `make demo` and its test: ModelDeployment -> Deployments ->
Ready kwok pods -> real model servers on 127.0.0.1 -> Prometheus -> analysis -> rollback or
promotion, printed as a timeline a person can follow.

The releases come from `examples/churn/demo.yaml`; the operator runs as a child process, the
pod runner and the load generator in this process. In container mode each release is its
real image, built offline and pushed by digest to a local registry, and the pod runner runs
the pods' images with podman; otherwise each image runs as a local process (the image map).

In Gateway API mode (`gateway_api`) the ModelDeployment's traffic goes through an HTTPRoute
the user owns (`traffic.mode: gatewayAPI`): the demo installs the Gateway API CRDs, creates
the route with one backend, the stable Service, and the operator (with `--watch-http-routes`)
sets its backends' weights at each step; the load generator splits requests by those
weights, as a Gateway's data plane would (no Gateway controller runs), and the timeline
shows them.
"""

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from modeldeploy.api import GROUP, PLURAL
from modeldeploy.devenv.children import process_start_ticks, reap_recorded
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.containers import ContainerImages
from modeldeploy.devenv.imagemap import ImageMap
from modeldeploy.devenv.images import ensure_images
from modeldeploy.devenv.loadgen import EndpointSource, LoadReport, LoadSpec, RouteSource, run_load
from modeldeploy.devenv.podrunner import CHILDREN_FILE, PodRunner, RunnerConfig
from modeldeploy.devenv.registry import RegistryServer, registry_binary, storage_dir
from modeldeploy.devenv.traffic import choose_uniform, read_rows
from modeldeploy.profile_schema import Profile
from modeldeploy.routing.gateway_api import backend_weights, observe_route
from modeldeploy.serving.process import modeldeploy_command

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "churn"
CRD = REPO / "crds" / f"{PLURAL}.{GROUP}.yaml"
Expectation = Literal["Stable", "RolledBack"]


@dataclass(frozen=True)
class Release:
    version: str
    image: str  # as the image map knows it (process mode)
    expect: Expectation
    story: str
    recipe: str  # the image recipe that builds it (container mode: the real image)


@dataclass(frozen=True)
class Story:
    manifest: dict[str, Any]
    releases: tuple[Release, ...]


def load_story(path: Path = EXAMPLE / "demo.yaml") -> Story:
    document = yaml.safe_load(path.read_text())
    manifest = yaml.safe_load((path.parent / document["manifest"]).read_text())
    return Story(manifest, tuple(Release(**r) for r in document["releases"]))


PROMETHEUS_ENDPOINT = "demo"
"""The operator's name for this run's Prometheus (`--prometheus-endpoint`), which the
example's `spec.prometheus.endpoint` names: a spec picks a Prometheus, never a URL."""


def user_route(namespace: str, path: Path = EXAMPLE / "httproute.yaml") -> dict[str, Any]:
    """The HTTPRoute of Gateway API mode, as its user wrote it, in this run's namespace."""
    route: dict[str, Any] = yaml.safe_load(path.read_text())
    return {**route, "metadata": {**route["metadata"], "namespace": namespace}}


def through_route(story: Story, route: str) -> Story:
    """The story with its releases' traffic through the HTTPRoute `route`."""
    spec = story.manifest["spec"]
    rollout = {**spec["rollout"], "traffic": {"mode": "gatewayAPI", "httpRoute": route}}
    manifest = {**story.manifest, "spec": {**spec, "rollout": rollout}}
    return replace(story, manifest=manifest)


RouteSplit = tuple[tuple[str, int], ...]
"""An HTTPRoute's (Service, weight) pairs, as a gateway splits its requests by them."""


def canary_share(split: RouteSplit, name: str) -> int:
    """The canary Service's percent of the route's weight."""
    total = sum(weight for _, weight in split)
    canary = sum(weight for service, weight in split if service == f"{name}-canary")
    return round(100 * canary / total) if total else 0


def describe_route(route: str, split: RouteSplit) -> str:
    backends = ", ".join(f"{service} {weight}" for service, weight in split)
    return f"          route {route}: {backends or 'no backend of this model'}"


def release_manifest(base: dict[str, Any], release: Release, namespace: str) -> dict[str, Any]:
    """The ModelDeployment for one release, in this run's namespace."""
    spec = {
        **base["spec"],
        "image": release.image,
        "model": {**base["spec"]["model"], "version": release.version},
    }
    return {**base, "metadata": {**base["metadata"], "namespace": namespace}, "spec": spec}


@dataclass(frozen=True)
class Snapshot:
    """What a person watching the rollout cares about, read from the resource's status."""

    elapsed: float
    phase: str
    weight: int
    step: int | None  # 0-based index, as in status
    steps: int  # how many canary steps the spec has
    stable: str
    canary: str
    analysis_time: str
    checks: tuple[tuple[str, str, Any, Any, Any], ...]  # (name, verdict, value, threshold, n)
    reason: str

    @property
    def headline(self) -> tuple[object, ...]:
        return (self.phase, self.weight, self.step, self.stable, self.canary, self.reason)


def snapshot(obj: dict[str, Any], elapsed: float) -> Snapshot:
    status = obj.get("status") or {}
    analysis = status.get("lastAnalysis") or {}
    checks = tuple(
        (c.get("name", "?"), c.get("verdict", "?"), c.get("value"), c.get("threshold"),
         c.get("samples"))
        for c in analysis.get("checks") or []
    )  # fmt: skip
    history = status.get("history") or []
    return Snapshot(
        elapsed=elapsed,
        phase=status.get("phase", "Pending"),
        weight=int(status.get("canaryWeight") or 0),
        step=status.get("step"),
        steps=len(
            ((obj.get("spec") or {}).get("rollout") or {}).get("canary", {}).get("steps") or [0]
        ),
        stable=status.get("stableRevision") or "",
        canary=status.get("canaryRevision") or "",
        analysis_time=analysis.get("time", ""),
        checks=checks,
        reason=(history[-1].get("reason", "") if history else ""),
    )


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def describe_checks(snap: Snapshot) -> str:
    """One line per analysis round: failing checks in full (value, threshold, samples);
    otherwise how many passed and how many still wait for enough samples."""
    if not snap.checks:
        return "no analysis yet"
    failing = [
        f"FAIL {name} {_number(value)} > {_number(threshold)} (n={samples})"
        for name, verdict, value, threshold, samples in snap.checks
        if verdict == "fail"
    ]
    passed = sum(1 for check in snap.checks if check[1] == "pass")
    waiting = len(snap.checks) - passed - len(failing)
    samples = max((c[4] for c in snap.checks if isinstance(c[4], int)), default=0)
    tally = f"{passed} passed" + (f", {waiting} inconclusive" if waiting else "")
    return "; ".join([*failing, f"{tally} (n={samples})"])


def describe(snap: Snapshot) -> str:
    revisions = f"stable={snap.stable or '-'}" + (
        f" canary={snap.canary}" if snap.canary and snap.canary != snap.stable else ""
    )
    step = f" step {snap.step + 1}/{snap.steps}" if snap.step is not None else ""
    return f"[{snap.elapsed:6.1f}s] {snap.phase:<11} weight {snap.weight:>3}%{step}  {revisions}"


@dataclass
class ReleaseOutcome:
    release: Release
    reached: str
    revision: str
    seconds: float
    weights: list[int] = field(default_factory=list)  # effective canary weights seen, in order
    steps: list[int] = field(default_factory=list)  # 0-based canary step indices seen, in order
    reason: str = ""
    failing: list[str] = field(default_factory=list)  # failing checks of the last analysis
    first_traffic: float | None = None  # elapsed when the canary first took traffic
    weight_zero: float | None = None  # elapsed when its weight went back to 0 (rollback)
    route_shares: list[int] = field(default_factory=list)  # gateway mode: the canary's
    # percent of the HTTPRoute's weight, each change in order

    @property
    def breach_to_rollback(self) -> float | None:
        if self.first_traffic is None or self.weight_zero is None:
            return None
        return self.weight_zero - self.first_traffic


@dataclass
class DemoResult:
    outcomes: list[ReleaseOutcome]
    min_warm: int
    min_stable_ready: int | None  # lowest Ready count of the stable seen once one existed
    load: LoadReport | None
    seconds: float


class DemoError(RuntimeError):
    """A release did not reach what the story expects."""


OPERATOR_RECORD = "operator.json"  # pid + start time, so `modeldeploy dev down` can stop it
RUNNER_DIR = "pod-runner"


def reap_leftovers(workdir: Path) -> list[int]:
    """Stop the operator and model servers a killed demo left behind."""
    return reap_recorded(workdir / OPERATOR_RECORD) + reap_recorded(
        workdir / RUNNER_DIR / CHILDREN_FILE
    )


@contextmanager
def operator_process(
    kubeconfig: Path,
    namespace: str,
    workdir: Path,
    prometheus_url: str,
    extra_args: tuple[str, ...] = (),
) -> Iterator[None]:
    """The operator, as a child process, watching only the demo's namespace, with this run's
    Prometheus as its endpoint `demo`."""
    with (workdir / "operator.log").open("ab") as sink:
        process = subprocess.Popen(
            [
                *modeldeploy_command(),
                "operator",
                "-n",
                namespace,
                "--interval",
                "1",
                "--metrics-address",
                "127.0.0.1",
                "--prometheus-endpoint",
                f"{PROMETHEUS_ENDPOINT}={prometheus_url}",
                *extra_args,
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (workdir / OPERATOR_RECORD).write_text(
        json.dumps([{"pid": process.pid, "start_ticks": process_start_ticks(process.pid)}])
    )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        (workdir / OPERATOR_RECORD).unlink(missing_ok=True)


class Demo:
    """Drives one run of the story against a cluster and a Prometheus."""

    def __init__(
        self,
        cluster: KwokCluster,
        prometheus_url: str,
        targets_dir: Path,
        workdir: Path,
        *,
        namespace: str = "ml",
        rate: float = 40.0,
        release_timeout: float = 300.0,
        say: Callable[[str], None] = print,
        story: Story | None = None,
        after_release: Callable[[ReleaseOutcome], None] | None = None,
        containers: bool = False,
        gateway_api: bool = False,
    ) -> None:
        self.cluster = cluster
        self.prometheus_url = prometheus_url
        self.targets_dir = targets_dir
        self.workdir = workdir
        self.namespace = namespace
        self.rate = rate
        self.release_timeout = release_timeout
        self.say = say
        self.after_release = after_release
        self.containers = containers
        story = story or load_story()
        self.name: str = story.manifest["metadata"]["name"]
        # Gateway API mode: the user's route the operator sets the weights of.
        self.route: dict[str, Any] | None = user_route(namespace) if gateway_api else None
        self.story = story if self.route is None else through_route(story, self._route_name)
        self.min_warm: int = self.story.manifest["spec"]["replicas"]["minWarm"]
        self._min_stable_ready: int | None = None
        self._started = time.monotonic()

    @property
    def _route_name(self) -> str:
        assert self.route is not None
        return str(self.route["metadata"]["name"])

    def run(self) -> DemoResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        reap_leftovers(self.workdir)
        self._prepare_cluster()
        # The image map's builds also give the load generator its held-out rows.
        images = ImageMap.load(EXAMPLE / "images.yaml")
        outcomes: list[ReleaseOutcome] = []
        load: LoadReport | None = None
        stop = threading.Event()
        with ExitStack() as stack:
            releases, source = self._images(stack)
            runner = PodRunner(
                RunnerConfig(
                    source,
                    self.workdir / RUNNER_DIR,
                    namespace=self.namespace,
                    targets_dir=self.targets_dir,
                    job=f"demo-{self.namespace}",
                ),
                str(self.cluster.kubeconfig),
            )
            watch_routes = ("--watch-http-routes",) if self.route is not None else ()
            stack.enter_context(
                operator_process(
                    self.cluster.kubeconfig,
                    self.namespace,
                    self.workdir,
                    self.prometheus_url,
                    watch_routes,
                )
            )
            stack.enter_context(runner)
            if self.containers:
                images.prepare(runner.config.build_root, self.say)
            self.say(f"operator and pod runner started (logs in {self.workdir})")
            loader: threading.Thread | None = None
            result: list[LoadReport] = []
            try:
                for release in releases:
                    outcomes.append(self._roll_out(release))
                    if self.after_release is not None:
                        self.after_release(outcomes[-1])
                    if loader is None:
                        loader = self._start_load(images, runner, stop, result)
            finally:
                stop.set()
                if loader is not None:
                    loader.join(timeout=30)
            load = result[0] if result else None
        return DemoResult(outcomes, self.min_warm, self._min_stable_ready, load, self._elapsed())

    def _images(self, stack: ExitStack) -> tuple[list[Release], ImageMap | ContainerImages]:
        """The releases as the pods will name them, and what the pod runner serves."""
        if not self.containers:
            self.say("building the example model images (cached after the first run)")
            return list(self.story.releases), ImageMap.load(EXAMPLE / "images.yaml")
        registry = RegistryServer(registry_binary(), storage_dir(), self.workdir / "registry")
        stack.enter_context(registry)
        self.say(f"container mode: local registry on {registry.host}; images by digest")
        built = ensure_images(registry, self.say, [r.recipe for r in self.story.releases])
        releases = [
            replace(r, image=built[r.recipe].reference(registry.host)) for r in self.story.releases
        ]
        for release in releases:
            self.say(f"  v{release.version}: {release.image}")
        return releases, ContainerImages()

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _prepare_cluster(self) -> None:
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        self.cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s"
        )
        self.cluster.apply_objects(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}]
        )
        # Each run tells the story from the start: a previous run's resource goes first.
        self.cluster.kubectl(
            "delete", f"{PLURAL}.{GROUP}", self.name, "-n", self.namespace,
            "--ignore-not-found", "--wait=true", "--timeout=90s",
        )  # fmt: skip
        if self.route is not None:
            self.cluster.install_gateway_api()  # a stack made before it had them
            self.cluster.kubectl(
                "delete", "httproute", self._route_name, "-n", self.namespace,
                "--ignore-not-found",
            )  # fmt: skip
            self.cluster.apply_objects([self.route])
            self.say(
                f"Gateway API mode: HTTPRoute {self._route_name} is yours (one backend, "
                f"{self.name}-stable); the operator only sets its backends' weights, and the "
                "client traffic follows them as a gateway would"
            )

    def _route_split(self, headers: Mapping[str, str] | None = None) -> RouteSplit:
        """The route's split as the cluster has it now, for a request with `headers` (the
        load generator's question); none while it cannot be read."""
        got = self.cluster.kubectl(
            "get", "httproute", self._route_name, "-n", self.namespace, "-o", "json",
            check=False,
        )  # fmt: skip
        if got.returncode != 0:
            return ()
        return backend_weights(observe_route(json.loads(got.stdout)), self.name, headers)

    def _start_load(
        self,
        images: ImageMap,
        runner: PodRunner,
        stop: threading.Event,
        result: list[LoadReport],
    ) -> threading.Thread:
        launch = images.launch(self.story.releases[0].image)
        if launch.model_dir is None or launch.data_dir is None:
            raise DemoError("the first release's image map entry must be a `build` entry")
        profile = Profile.model_validate_json((launch.model_dir / "profile.json").read_bytes())
        rows = read_rows(launch.data_dir / "holdout.csv", profile.features)
        spec = LoadSpec(rate=self.rate, count=int(self.rate * 1800), duration=1800)
        if self.route is None:
            source: EndpointSource | RouteSource = EndpointSource(
                runner.endpoints_path, self.namespace, self.name
            )
            router = choose_uniform
            through = f"the `{self.name}` Service"
        else:
            source = RouteSource(runner.endpoints_path, self.namespace, self._route_split)
            router = source.choose
            through = f"HTTPRoute {self._route_name}, by its weights"

        def send() -> None:
            result.append(run_load(spec, rows, profile.features, source, stop=stop, router=router))

        self.say(f"client traffic: {self.rate:g} requests/s through {through}")
        thread = threading.Thread(target=send, name="demo-load", daemon=True)
        thread.start()
        return thread

    def _read(self) -> dict[str, Any]:
        return self.cluster.get_json(f"{PLURAL}.{GROUP}", self.name, "-n", self.namespace)

    def _stable_ready(self, stable: str) -> int | None:
        got = self.cluster.kubectl(
            "get", "deployment", f"{self.name}-{stable}", "-n", self.namespace,
            "-o", "jsonpath={.status.readyReplicas}", check=False,
        )  # fmt: skip
        if got.returncode != 0:
            return None
        return int(got.stdout or 0)

    def _roll_out(self, release: Release) -> ReleaseOutcome:
        self.say(f"--- release {release.version}: {release.story}")
        manifest = release_manifest(self.story.manifest, release, self.namespace)
        before = snapshot(self._read(), 0) if self._exists() else None
        applied = self._elapsed()
        self.cluster.apply_objects([manifest])
        outcome = ReleaseOutcome(release, "", "", 0.0)
        last: Snapshot | None = None
        split: RouteSplit | None = None
        deadline = time.monotonic() + self.release_timeout
        while time.monotonic() < deadline:
            snap = snapshot(self._read(), self._elapsed())
            self._track_warm(snap)
            self._follow(outcome, snap, before)
            if last is None or snap.headline != last.headline:
                self.say(describe(snap))
            if snap.analysis_time and (last is None or snap.analysis_time != last.analysis_time):
                self.say(f"          checks: {describe_checks(snap)}")
            last = snap
            if self.route is not None:
                split = self._follow_route(outcome, split)
            # Gateway API mode: done once the route, too, has all the weight back on the stable.
            route_settled = not outcome.route_shares or outcome.route_shares[-1] == 0
            if self._done(release, snap, before, outcome) and route_settled:
                outcome.reached = snap.phase
                outcome.seconds = snap.elapsed - applied
                outcome.reason = snap.reason
                outcome.failing = [c[0] for c in snap.checks if c[1] == "fail"]
                return outcome
            time.sleep(0.5)
        raise DemoError(
            f"release {release.version} did not reach {release.expect} within "
            f"{self.release_timeout:g}s (last: {describe(last) if last else 'no status'}); "
            f"see {self.workdir / 'operator.log'}"
        )

    def _follow_route(self, outcome: ReleaseOutcome, last: RouteSplit | None) -> RouteSplit:
        """Reads the route; says its weights and records the canary's share when they change."""
        split = self._route_split()
        if split != last:
            self.say(describe_route(self._route_name, split))
        share = canary_share(split, self.name)
        if not outcome.route_shares or outcome.route_shares[-1] != share:
            outcome.route_shares.append(share)
        return split

    def _exists(self) -> bool:
        got = self.cluster.kubectl(
            "get", f"{PLURAL}.{GROUP}", self.name, "-n", self.namespace, check=False
        )
        return got.returncode == 0

    def _track_warm(self, snap: Snapshot) -> None:
        """Lowest Ready count of the stable revision, once the first release is Stable."""
        if not snap.stable or (self._min_stable_ready is None and snap.phase != "Stable"):
            return
        ready = self._stable_ready(snap.stable)
        if ready is not None:
            low = self._min_stable_ready
            self._min_stable_ready = ready if low is None else min(low, ready)

    @staticmethod
    def _follow(outcome: ReleaseOutcome, snap: Snapshot, before: Snapshot | None) -> None:
        if snap.canary and snap.canary != (before.stable if before else ""):
            outcome.revision = outcome.revision or snap.canary
        if snap.weight and (not outcome.weights or outcome.weights[-1] != snap.weight):
            outcome.weights.append(snap.weight)
        if snap.step is not None and (not outcome.steps or outcome.steps[-1] != snap.step):
            outcome.steps.append(snap.step)
        if snap.weight and outcome.first_traffic is None:
            outcome.first_traffic = snap.elapsed
        if outcome.first_traffic is not None and not snap.weight and outcome.weight_zero is None:
            outcome.weight_zero = snap.elapsed

    @staticmethod
    def _done(
        release: Release, snap: Snapshot, before: Snapshot | None, outcome: ReleaseOutcome
    ) -> bool:
        if release.expect == "RolledBack":
            return snap.phase == "RolledBack" and snap.weight == 0 and bool(outcome.revision)
        if before is None or not before.stable:  # the first release has no canary
            outcome.revision = snap.stable
            return snap.phase == "Stable" and bool(snap.stable)
        return (
            snap.phase == "Stable" and bool(outcome.revision) and snap.stable == (outcome.revision)
        )


def summary(result: DemoResult) -> list[str]:
    lines = ["", "=== summary ==="]
    for outcome in result.outcomes:
        release = outcome.release
        line = (
            f"v{release.version}: {outcome.reached} (expected {release.expect}) "
            f"revision {outcome.revision} after {outcome.seconds:.0f}s"
        )
        if outcome.weights:
            line += f"; canary weights seen {outcome.weights}"
        lines.append(line)
        if outcome.route_shares:
            lines.append(
                f"    canary's share of the HTTPRoute, as it changed: {outcome.route_shares}"
            )
        if release.expect == "RolledBack":
            lines.append(f"    reason: {outcome.reason}")
            if outcome.breach_to_rollback is not None:
                lines.append(
                    "    breach to rollback (first canary traffic -> weight 0): "
                    f"{outcome.breach_to_rollback:.1f}s"
                )
    lines.append(
        f"stable Ready pods never below {result.min_warm} (lowest seen: {result.min_stable_ready})"
    )
    if result.load is not None:
        lines.append(f"client traffic: {result.load.summary()}")
    lines.append(f"wall time: {result.seconds:.0f}s")
    return lines
