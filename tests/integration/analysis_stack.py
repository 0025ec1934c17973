"""The whole analysis loop for one namespace, for the `test_analysis_*` modules:

    real operator (`modeldeploy operator --prometheus-url ...`) -> Deployments -> kwok pods
    -> pod runner: one real `modeldeploy serve` per Ready pod, published to Prometheus
    -> load generator: V2 requests from the example's held-out rows through the `<name>`
       Service's Ready pods, as kube-proxy spreads them
    -> Prometheus scrapes every second -> the operator's analysis -> rollback or promotion.

    with AnalysisStack(kube, prometheus.url, prometheus.targets_dir, "ns", tmp) as stack:
        stack.deploy(V1)                                   # first revision: stable at once
        with stack.traffic(rate=36) as load, stack.timeline() as timeline:
            stack.deploy(SLOW, version="4")
            timeline.wait(lambda s: s.phase == "RolledBack", 120)

The timeline samples status every 0.2 s; the traffic notes when each revision got its first
request and its n-th one, so breach-to-rollback can be split into its parts. Only 127.0.0.1
is ever dialled.
"""

import hashlib
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import yaml
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    apply_object,
    ensure_crd,
    ensure_namespace,
    model_deployment,
    ready,
    wait_for,
)

from modeldeploy import contract
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.endpoints import Endpoint
from modeldeploy.devenv.imagemap import ImageMap
from modeldeploy.devenv.loadgen import EndpointSource, LoadReport, LoadSpec, run_load
from modeldeploy.devenv.podrunner import PodRunner, RunnerConfig
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.tools import free_port
from modeldeploy.devenv.traffic import Drift, Row, choose_uniform, read_labels, read_rows
from modeldeploy.devenv.traffic import wrong_labels as with_wrong_labels  # the option's name
from modeldeploy.profile_schema import FeatureProfile, Profile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "churn"
NAME = "churn"
MIN_WARM = 2
LABEL_COLUMN = "churned"  # the held-out rows' label (examples/churn/build.py TARGET)
Body = dict[str, Any]

# Test settings: honest statistics at a test's pace. The sequential tests need no sample
# floor; 200 keeps the tests' timelines like a user's (no verdict on the first few requests).
SCRAPE_INTERVAL = 1.0  # the session Prometheus
ANALYSIS: Body = {
    "interval": "2s",
    "window": "30s",
    "minSamples": 200,
    "failureLimit": 2,
    "onNoData": "hold",
    "noDataTimeout": "2m",
    "latency": {"p95Ms": 40},
    # Tolerances a test's few thousand requests can show a healthy canary within.
    "drift": {"features": {"psi": 0.15}, "predictions": {"psi": 0.3}},
}
# For tests about another check (accuracy, no data): on a loaded machine a healthy canary's
# p95 can pass 40 ms (the slow variant adds 60 ms) before that check decides.
LATENCY_OFF_THE_POINT: Body = {"p95Ms": 500}
ROLLOUT: Body = {"canary": {"steps": [25, 50]}, "stepInterval": "6s", "bakeTime": "5s"}


def _digest(tag: str) -> str:
    return f"registry.example/ml/churn@sha256:{hashlib.sha256(tag.encode()).hexdigest()}"


def _example_images() -> dict[tuple[str, str], str]:
    """(variant, version) -> image, as examples/churn/images.yaml names them (so that the
    builds are shared with the pod runner's and the demo's)."""
    document = yaml.safe_load((EXAMPLE / "images.yaml").read_text())
    found = {}
    for image, entry in document["images"].items():
        args = entry["build"]["args"]
        found[(args[args.index("--variant") + 1], args[args.index("--version") + 1])] = image
    return found


def _format_images() -> dict[tuple[str, str], tuple[str, list[str]]]:
    """(format, variant) -> (image, build_formats.py's args), as examples/churn/formats.yaml
    names them: the churn model as an XGBoost, LightGBM, ONNX or MLflow model."""
    document = yaml.safe_load((EXAMPLE / "formats.yaml").read_text())
    found = {}
    for image, entry in document["images"].items():
        args = entry["build"]["args"]
        found[(args[args.index("--format") + 1], args[args.index("--variant") + 1])] = (image, args)
    return found


_EXAMPLES = _example_images()
FORMAT_IMAGES = _format_images()
V1 = _EXAMPLES[("healthy", "1")]
SKEWED = _EXAMPLES[("skewed", "2")]
V3 = _EXAMPLES[("healthy", "3")]
MISLABELLED = _EXAMPLES[("mislabelled", "6")]
FLOORED = _EXAMPLES[("floored", "8")]
UNSURE = _EXAMPLES[("unsure", "9")]
SLOW = _digest("churn-slow-4")
WARMING = _digest("churn-warming-5")
TURNING = _digest("churn-turning-7")
ERRORING = _digest("churn-erroring-10")
BUILDS = {
    V1: ("healthy", "1"),
    SKEWED: ("skewed", "2"),
    V3: ("healthy", "3"),
    SLOW: ("slow", "4"),
    WARMING: ("warming", "5"),
    MISLABELLED: ("mislabelled", "6"),
    TURNING: ("turning", "7"),
    ERRORING: ("erroring", "10"),
    FLOORED: ("floored", "8"),
    UNSURE: ("unsure", "9"),
}


def write_image_map(directory: Path, formats: bool = False) -> ImageMap:
    """The churn images' map; with `formats`, the format ones too (formats.yaml)."""
    images = {
        image: {"build": {"script": str(EXAMPLE / "build.py"),
                          "args": ["--variant", variant, "--version", version]}}
        for image, (variant, version) in BUILDS.items()
    }  # fmt: skip
    for image, args in FORMAT_IMAGES.values() if formats else ():
        images[image] = {"build": {"script": str(EXAMPLE / "build_formats.py"), "args": args}}
    path = directory / "images.yaml"
    path.write_text(yaml.safe_dump({"images": images}))
    return ImageMap.load(path)


@contextmanager
def stable_stack(
    kube: KwokCluster,
    prometheus: PrometheusServer,
    workdir: Path,
    namespace: str,
    *,
    stable_image: str = V1,
    formats: bool = False,
    **spec: Any,
) -> Iterator["AnalysisStack"]:
    """An AnalysisStack in `namespace` on `prometheus`, with `stable_image` (version 1)
    deployed (`spec` over the test settings) and Ready; `formats`: the format images too."""
    with AnalysisStack(
        kube, prometheus.url, prometheus.targets_dir, namespace, workdir, formats=formats
    ) as s:
        s.deploy(stable_image, "1", **spec)
        s.wait_stable()
        yield s


def manifest(namespace: str, image: str, version: str, **spec: Any) -> Body:
    body = model_deployment(NAME, namespace, image)
    body["spec"].update(
        {
            "model": {"name": NAME, "version": version},
            "imagePolicy": "requireDigest",
            "replicas": {"minWarm": MIN_WARM, "max": 4},
            "rollout": ROLLOUT,
            "analysis": ANALYSIS,
            "warmup": {"timeout": "2m", "maxLatencyMs": 1000},
            **spec,
        }
    )
    return body


# --- status over time -------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic()
    status: Body

    @property
    def phase(self) -> str:
        return str(self.status.get("phase", ""))

    @property
    def weight(self) -> int:
        return int(self.status.get("canaryWeight") or 0)

    @property
    def step(self) -> int | None:
        step = self.status.get("step")
        return int(step) if step is not None else None

    @property
    def canary(self) -> str | None:
        return self.status.get("canaryRevision")

    @property
    def stable(self) -> str | None:
        return self.status.get("stableRevision")

    @property
    def analysis(self) -> Body:
        return dict(self.status.get("lastAnalysis") or {})

    def analysed(self, revision: str | None, verdict: str | None = None) -> bool:
        last = self.analysis
        return last.get("revision") == revision and verdict in (None, last.get("verdict"))

    def checks(self, verdict: str | None = None) -> dict[str, Body]:
        return {
            c["name"]: c
            for c in self.analysis.get("checks", [])
            if verdict in (None, c.get("verdict"))
        }

    def condition(self, kind: str) -> Body:
        return next((c for c in self.status.get("conditions", []) if c["type"] == kind), {})

    @property
    def last_history(self) -> Body:
        history = self.status.get("history") or [{}]
        return dict(history[-1])


class Timeline:
    """Samples the ModelDeployment's status every `period` seconds in a thread."""

    def __init__(self, reader: ClusterReader, namespace: str, period: float = 0.2) -> None:
        self.reader = reader
        self.namespace = namespace
        self.period = period
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="timeline")
        self._lock = threading.Lock()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                status = self.reader.status(self.namespace, NAME)
            except Exception:  # a transient read error: the next sample will do
                status = None
            if status is not None:
                with self._lock:
                    self.samples.append(Sample(time.monotonic(), status))
            self._stop.wait(self.period)

    def __enter__(self) -> "Timeline":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def first(self, predicate: Callable[[Sample], bool], after: float = 0.0) -> Sample | None:
        return next((s for s in self.snapshot() if s.t >= after and predicate(s)), None)

    def wait(
        self, predicate: Callable[[Sample], bool], timeout: float, what: str, after: float = 0.0
    ) -> Sample:
        found: Sample = wait_for(
            lambda: self.first(predicate, after), timeout=timeout, interval=0.2, what=what
        )
        return found

    def canary_promoted(self, timeout: float = 240) -> tuple[Sample, Sample]:
        """The samples where a canary appeared and where it became the stable. A pass needs
        evidence, so the timeout leaves room for a few thousand requests."""
        started = self.wait(lambda s: s.canary is not None, 30, "a canary")
        canary = started.canary
        promoted = self.wait(
            lambda s: s.stable == canary and s.phase == "Stable", timeout, "promotion",
            after=started.t,
        )  # fmt: skip
        return started, promoted

    def latest(self) -> Sample:
        samples = self.snapshot()
        assert samples, "no status sampled yet"
        return samples[-1]

    def seen(self, attribute: Callable[[Sample], Any], after: float = 0.0) -> list[Any]:
        """Distinct successive values of `attribute` over the samples (after `after`)."""
        values: list[Any] = []
        for sample in self.snapshot():
            value = attribute(sample)
            if sample.t >= after and (not values or values[-1] != value):
                values.append(value)
        return values


# --- client traffic --------------------------------------------------------------------------


@dataclass
class Traffic:
    """Bounded client load through the `<name>` Service in a thread. Notes the time of every
    request per revision (when a revision first got traffic, when it had had n requests)."""

    source: EndpointSource
    rows: Sequence[Row]
    features: Sequence[FeatureProfile]
    rate: float
    drift: Drift | None = None
    seed: int = 0
    duration: float = 900.0
    labels: Sequence[Any] | None = None  # the rows' labels, posted back after label_delay
    label_delay: float | None = None
    sent: dict[str, list[float]] = field(default_factory=dict)
    report: LoadReport | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _route(self, endpoints: Sequence[Endpoint], rng: Random) -> Endpoint | None:
        chosen = choose_uniform(endpoints, rng)
        if chosen is not None:
            with self._lock:
                self.sent.setdefault(chosen.revision, []).append(time.monotonic())
        return chosen

    def _run(self) -> None:
        spec = LoadSpec(
            self.rate, int(self.rate * self.duration), self.duration, seed=self.seed, workers=8,
            label_delay=self.label_delay,
        )  # fmt: skip
        self.report = run_load(
            spec,
            self.rows,
            self.features,
            self.source,
            drift=self.drift,
            labels=self.labels,
            router=self._route,
            stop=self._stop,
        )

    def __enter__(self) -> "Traffic":
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def first(self, revision: str) -> float | None:
        with self._lock:
            times = self.sent.get(revision)
            return times[0] if times else None

    def nth(self, revision: str, n: int) -> float | None:
        with self._lock:
            times = self.sent.get(revision, [])
            return times[n - 1] if len(times) >= n else None

    def count(self, revision: str) -> int:
        with self._lock:
            return len(self.sent.get(revision, []))

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter({revision: len(times) for revision, times in self.sent.items()})


# --- the stack -------------------------------------------------------------------------------


class AnalysisStack:
    def __init__(
        self,
        kube: KwokCluster,
        prometheus_url: str,
        targets_dir: Path,
        namespace: str,
        workdir: Path,
        *,
        operator_args: Sequence[str] = (),
        formats: bool = False,
        images: ImageMap | None = None,
        data_image: str = V1,
        profile: str = "model/profile.json",
    ) -> None:
        """`images`: another image map than the churn images' (`formats` then unused);
        the load's rows and their profile come from `data_image`'s build (`profile`:
        where in its output)."""
        self.kube = kube
        self.prometheus_url = prometheus_url
        self.namespace = namespace
        self.workdir = workdir
        self.reader = ClusterReader(kube)
        self.images = images or write_image_map(workdir, formats)
        self.runner = PodRunner(
            RunnerConfig(
                self.images,
                workdir / "pod-runner",
                namespace=namespace,
                targets_dir=targets_dir,
                job=f"analysis-{namespace}",
            ),
            str(kube.kubeconfig),
        )
        self.metrics_port = free_port()
        self.operator = OperatorProcess(
            kube,
            namespace,
            workdir,
            extra_args=[
                "--prometheus-url", prometheus_url,
                "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
                *operator_args,
            ],
        )  # fmt: skip
        launch = self.images.launch(data_image)
        assert launch.data_dir is not None
        self._profile = launch.cwd / profile
        self._holdout = launch.data_dir / "holdout.csv"

    def __enter__(self) -> "AnalysisStack":
        ensure_crd(self.kube)
        ensure_namespace(self.kube, self.namespace)
        self.runner.start()  # builds the images once (cached across runs)
        try:
            self.operator.start()
        except BaseException:
            self.runner.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.operator.stop()
        finally:
            self.runner.stop()

    def deploy(self, image: str, version: str, **spec: Any) -> None:
        apply_object(self.kube, manifest(self.namespace, image, version, **spec))

    def status(self) -> Body:
        return self.reader.status(self.namespace, NAME)

    def wait_stable(self, timeout: float = 120) -> Body:
        """Until the spec's revision is stable (Ready condition) and minWarm of its pods are
        Ready and answering in the runner's endpoints file (which the load reads)."""
        wait_for(
            lambda: self.reader.is_true(self.namespace, NAME, "Ready"),
            timeout=timeout,
            what=f"{NAME} Ready",
        )
        stable = self.status()["stableRevision"]

        def served() -> bool:
            answering = [e for e in self.runner.endpoints() if e.revision == stable and e.ready]
            deployment = self.reader.deployments(self.namespace, NAME).get(f"{NAME}-{stable}")
            return len(answering) >= MIN_WARM and ready(deployment or {}) >= MIN_WARM

        wait_for(served, timeout=timeout, what=f"{MIN_WARM} servers of {stable} Ready")
        return self.status()

    def timeline(self) -> Timeline:
        return Timeline(self.reader, self.namespace)

    def traffic(
        self,
        rate: float,
        drift: Drift | None = None,
        seed: int = 0,
        *,
        label_delay: float | None = None,
        wrong_labels: float = 0.0,
    ) -> Traffic:
        """Client load; with `label_delay`, each answered row's label (the held-out rows'
        `churned`) is posted back to the pod that answered, that many seconds later, a
        `wrong_labels` share of them as the other class."""
        profile = Profile.model_validate_json(self._profile.read_bytes())
        rows = read_rows(self._holdout, profile.features)
        source = EndpointSource(self.runner.endpoints_path, self.namespace, NAME, refresh=0.5)
        labels = None
        if label_delay is not None:
            labels = read_labels(self._holdout, LABEL_COLUMN, numeric=False)
            labels = with_wrong_labels(labels, wrong_labels, seed) if wrong_labels else labels
        return Traffic(
            source, rows, profile.features, rate, drift, seed, labels=labels,
            label_delay=label_delay,
        )  # fmt: skip

    def events(self, reason: str) -> list[Body]:
        listed = self.reader.api.get(
            f"/api/v1/namespaces/{self.namespace}/events",
            {"fieldSelector": f"reason={reason},involvedObject.name={NAME}"},
        )
        items: list[Body] = listed.get("items") or []
        return items

    def messages(self, reason: str, *parts: str, timeout: float = 30) -> list[str]:
        """The messages of the `reason` Events that contain every one of `parts`, waiting
        for one: the operator posts its Events after the status write a test saw."""

        def matching() -> list[str]:
            found = [e["message"] for e in self.events(reason)]
            return [m for m in found if all(part in m for part in parts)]

        found: list[str] = wait_for(matching, timeout=timeout, what=f"a {reason} Event {parts}")
        return found

    def operator_metrics(self) -> dict[str, float]:
        """The operator's own /metrics as series -> value (series with their labels)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                values[series] = float(value)
        return values


def metric(values: dict[str, float], metric_name: str, /, **labels: str) -> float:
    """Sum of the series of `metric_name` whose labels include `labels`."""
    total = 0.0
    for series, value in values.items():
        base, _, rest = series.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if base == metric_name and labels.items() <= found.items():
            total += value
    return total


# --- breach to rollback ----------------------------------------------------------------------


@dataclass(frozen=True)
class BreachTiming:
    """From the first request a bad canary served to its canary weight 0, in parts."""

    total: float  # first bad request -> weight 0 (status)
    accumulate: float  # first bad request -> minSamples requests sent to the canary
    detect: float  # -> first failing analysis seen in status (scrape + round wait)
    confirm: float  # -> weight 0: further failing rounds (a custom check's failureLimit), reconcile
    rounds: int  # failing rounds (AnalysisFailed Events of the canary)
    mean_reconcile: float  # mean reconcile duration (operator's own metric)
    mean_round: float  # mean analysis round duration (operator's own metric)

    def lines(self, what: str) -> list[str]:
        return [
            f"[breach-to-rollback] {what}: {self.total:.1f}s from the first bad request to "
            f"canary weight 0 (scrape {SCRAPE_INTERVAL:g}s, analysis interval "
            f"{ANALYSIS['interval']}, window {ANALYSIS['window']}, minSamples "
            f"{ANALYSIS['minSamples']}, failureLimit {ANALYSIS['failureLimit']})",
            f"  minSamples requests reach the canary:       {self.accumulate:5.1f}s",
            f"  -> first failing round in status:          {self.detect:5.1f}s "
            "(scrape delay + wait for the next round)",
            f"  -> weight 0 ({self.rounds} failing rounds, reconcile): {self.confirm:5.1f}s",
            f"  mean reconcile {self.mean_reconcile * 1000:.0f} ms, mean analysis round "
            f"{self.mean_round * 1000:.0f} ms (operator metrics)",
        ]


def rolled_back(sample: Sample) -> bool:
    return sample.phase == "RolledBack" and sample.canary is None and sample.weight == 0


def breach_timing(
    stack: AnalysisStack, traffic: Traffic, timeline: Timeline, canary: str, after: float
) -> BreachTiming:
    """`after`: when the canary first showed in status (older samples are of another
    rollout)."""
    first = traffic.first(canary)
    enough = traffic.nth(canary, int(ANALYSIS["minSamples"]))
    failed = timeline.first(lambda s: s.analysed(canary, "fail"), after)
    back = timeline.first(rolled_back, after)
    assert first is not None, "the canary never got a request"
    assert enough is not None, "the canary never got minSamples requests"
    assert failed is not None, "no failing analysis of the canary was seen"
    assert back is not None, "no rollback was seen"
    values = stack.operator_metrics()
    reconcile = contract.OPERATOR_RECONCILE_DURATION_SECONDS
    analysis = contract.OPERATOR_ANALYSIS_DURATION_SECONDS

    def mean(name: str) -> float:
        count = metric(values, name + "_count")
        return metric(values, name + "_sum") / count if count else 0.0

    # Counted from the Events (one per failing round): the round that rolls back is in
    # status only until the next reconcile analyses the stable, which can be at once.
    failing = stack.messages("AnalysisFailed", canary)
    return BreachTiming(
        total=back.t - first,
        accumulate=enough - first,
        detect=failed.t - enough,
        confirm=back.t - failed.t,
        rounds=len(failing),
        mean_reconcile=mean(reconcile),
        mean_round=mean(analysis),
    )


@contextmanager
def printed_section(title: str) -> Iterator[list[str]]:
    lines: list[str] = []
    started = time.monotonic()
    try:
        yield lines
    finally:
        print(f"\n=== {title} ({time.monotonic() - started:.1f}s) ===")
        for line in lines:
            print(line)
