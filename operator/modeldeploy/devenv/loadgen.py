"""The load generator: steady V2 infer requests from real rows, spread uniformly over the
Ready pods behind a ModelDeployment's client Service as kube-proxy would, and sent to the
pod runner's local processes of those pods.

    rows = read_rows(holdout_csv, profile.features)
    report = run_load(
        LoadSpec(rate=50, count=3000, duration=60),
        rows, profile.features, EndpointSource(runner.endpoints_path, "ml", "churn"),
        drift=Drift(shift={"monthly_charges": 1.5}),
    )
    report.by_revision  # {"5d1c...": Counter({"200": 2990, "400": 10})}

Open loop: request i is due at start + i/rate whatever the answers; when 4 requests per
worker are already waiting, a due one is counted as `dropped` instead of queued (the servers
or this machine cannot keep the rate). It ends after `count` requests or
`duration` seconds, whichever comes first (both bounded). Only 127.0.0.1 is ever dialled.

A cohort (`CohortLoad`, for a rollout's cohort phase, `rollout.canary.cohort`): a share of the
requests carries the cohort's headers and is routed by a router of its own (`RouteSource.
choose_cohort`: the rule a gateway picks for them); the report counts them apart
(`cohort_by_revision`).

Ground truth (`labels`, the rows' true labels, with `LoadSpec.label_delay`): `label_delay`
seconds after a request was answered (200), its rows' labels are posted to the pod that
answered it (`POST .../labels`, by the request id), from a thread of their own; at most
`traffic.MAX_PENDING_LABELS` rows wait, more are dropped (counted). At the end the labels
still waiting are sent once due, unless `stop` is set.
"""

import contextlib
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from modeldeploy.devenv.endpoints import Endpoint, read_published
from modeldeploy.devenv.prometheus import is_loopback_address
from modeldeploy.devenv.traffic import (
    Drift,
    DriftInjector,
    LabelQueue,
    Router,
    Row,
    choose_backend,
    choose_uniform,
    infer_body,
    malformed,
    sample_indices,
)
from modeldeploy.profile_schema import FeatureProfile

MAX_RATE = 1000.0  # requests per second
MAX_COUNT = 1_000_000
MAX_DURATION = 3600.0  # seconds
MAX_BATCH = 64
MAX_WORKERS = 32
MAX_LABEL_DELAY = 600.0  # seconds
MAX_COHORT_HEADERS = 16  # as a Gateway API match's headers
NO_ENDPOINT = "no_endpoint"  # no Ready pod: what a client of an empty Service sees
DROPPED = "dropped"  # too many requests in flight: the rate could not be kept
ERROR = "error"  # connection refused, reset or timed out
NONE_REVISION = "-"
Via = Literal["service", "pods"]


@dataclass(frozen=True)
class LoadSpec:
    rate: float
    count: int
    duration: float
    batch: int = 1  # rows per request
    seed: int = 0
    timeout: float = 2.0  # per request
    workers: int = 8  # threads sending; up to 4 requests each wait for one
    label_delay: float | None = None  # seconds until labels are posted back; None: never

    def __post_init__(self) -> None:
        if not 0 < self.rate <= MAX_RATE:
            raise ValueError(f"rate must be in (0, {MAX_RATE:g}] requests/s")
        if not 0 < self.count <= MAX_COUNT:
            raise ValueError(f"count must be in 1..{MAX_COUNT}")
        if not 0 < self.duration <= MAX_DURATION:
            raise ValueError(f"duration must be in (0, {MAX_DURATION:g}] s")
        if not 1 <= self.batch <= MAX_BATCH:
            raise ValueError(f"batch must be in 1..{MAX_BATCH}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be in 1..{MAX_WORKERS}")
        if not 0 < self.timeout <= 30:
            raise ValueError("timeout must be in (0, 30] s")
        if self.label_delay is not None and not 0 <= self.label_delay <= MAX_LABEL_DELAY:
            raise ValueError(f"label_delay must be in [0, {MAX_LABEL_DELAY:g}] s")


@dataclass(frozen=True)
class CohortLoad:
    """`share` (0-1) of the requests carry `headers` and go where `router` sends them."""

    headers: Mapping[str, str]
    share: float
    router: Router

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValueError("the cohort's share must be in [0, 1]")
        if not 1 <= len(self.headers) <= MAX_COHORT_HEADERS:
            raise ValueError(f"a cohort has 1 to {MAX_COHORT_HEADERS} headers")


@dataclass
class LoadReport:
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0
    by_revision: dict[str, Counter[str]] = field(default_factory=dict)  # revision -> code -> n
    by_pod: dict[str, Counter[str]] = field(default_factory=dict)  # namespace/pod -> code -> n
    latencies_ms: list[float] = field(default_factory=list)
    # Label rows posted back: matched | unknown | out_of_range | duplicate (the runtime's
    # answer), dropped (too many waiting), error (refused or not answered).
    labels: Counter[str] = field(default_factory=Counter)
    cohort_by_revision: dict[str, Counter[str]] = field(default_factory=dict)
    """The requests that carried the cohort's headers (counted in `by_revision` too)."""

    @property
    def sent(self) -> int:
        return sum(self.by_code.values())

    @property
    def by_code(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for codes in self.by_revision.values():
            total.update(codes)
        return total

    def record(
        self,
        endpoint: Endpoint | None,
        code: str,
        latency_ms: float | None,
        *,
        cohort: bool = False,
    ) -> None:
        revision = endpoint.revision if endpoint else NONE_REVISION
        self.by_revision.setdefault(revision, Counter())[code] += 1
        if cohort:
            self.cohort_by_revision.setdefault(revision, Counter())[code] += 1
        if endpoint is not None:
            self.by_pod.setdefault(f"{endpoint.namespace}/{endpoint.pod}", Counter())[code] += 1
        if latency_ms is not None:
            self.latencies_ms.append(latency_ms)

    def latency_quantiles(self) -> dict[str, float]:
        if len(self.latencies_ms) < 2:
            return {}
        cuts = statistics.quantiles(self.latencies_ms, n=100, method="inclusive")
        return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "elapsed_s": round(self.elapsed, 3),
            "rate": round(self.sent / self.elapsed, 2) if self.elapsed else 0.0,
            "by_code": dict(sorted(self.by_code.items())),
            "by_revision": _sorted_counts(self.by_revision),
            "by_pod": _sorted_counts(self.by_pod),
            "latency_ms": {k: round(v, 2) for k, v in self.latency_quantiles().items()},
            "labels": dict(sorted(self.labels.items())),
            "cohort_by_revision": _sorted_counts(self.cohort_by_revision),
        }

    def summary(self) -> str:
        def codes(counter: Counter[str]) -> str:
            return " ".join(f"{code}:{n}" for code, n in sorted(counter.items()))

        rate = self.sent / self.elapsed if self.elapsed else 0.0
        lines = [f"{self.sent} requests in {self.elapsed:.1f}s ({rate:.1f}/s): "
                 f"{codes(self.by_code)}"]  # fmt: skip
        lines += [f"  revision {r}: {codes(c)}" for r, c in sorted(self.by_revision.items())]
        lines += [
            f"  cohort on {r}: {codes(c)}" for r, c in sorted(self.cohort_by_revision.items())
        ]
        if self.labels:
            lines.append(f"  labels: {codes(self.labels)}")
        latency = self.latency_quantiles()
        if latency:
            lines.append("  latency ms: " + " ".join(f"{k} {v:.1f}" for k, v in latency.items()))
        return "\n".join(lines)


def _sorted_counts(counts: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {key: dict(sorted(c.items())) for key, c in sorted(counts.items())}


class EndpointSource:
    """The Ready endpoints traffic for one ModelDeployment goes to, from the pod runner's
    file, re-read at most every `refresh` seconds so that traffic follows rollouts.

    `via="service"`: the pods the client Service `<name>` selects (the operator's routing:
    stable only, both tracks during a canary, the fallback under the kill switch), as
    kube-proxy balances them. `via="pods"`: every pod of the ModelDeployment (no operator,
    no Service). Through a Gateway (traffic.mode gatewayAPI): `RouteSource`.
    """

    def __init__(
        self,
        path: Path,
        namespace: str | None,
        name: str,
        *,
        via: Via = "service",
        refresh: float = 1.0,
    ) -> None:
        self._path = path
        self._namespace = namespace
        self._name = name
        self._via = via
        self._refresh = refresh
        self._read_at = -float("inf")
        self._endpoints: list[Endpoint] = []

    def __call__(self) -> list[Endpoint]:
        now = time.monotonic()
        if now - self._read_at >= self._refresh:
            self._read_at = now
            # A broken read keeps the last good set until the next refresh.
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                published = read_published(self._path)
                self._endpoints = (
                    published.ready_behind(self._namespace, self._name)
                    if self._via == "service"
                    else published.ready_pods(self._namespace, self._name)
                )
        return self._endpoints


Weights = Callable[[Mapping[str, str]], Sequence[tuple[str, int]]]
"""The `(Service, weight)` pairs of the route's rule a gateway picks for a request with these
headers (e.g. `routing.gateway_api.backend_weights` of the route as read)."""


class RouteSource:
    """The Ready endpoints behind an HTTPRoute's weighted backends, as a Gateway sends a
    ModelDeployment's traffic (traffic.mode gatewayAPI): `weights(headers)` gives the pairs
    of the rule for a request with those headers, the pod runner's file the Ready pods each
    Service selects; both re-read at most every `refresh` seconds. Call it for the
    endpoints, and route with `choose`: a backend by weight, then a pod; the requests with
    the `cohort` headers with `choose_cohort` (the rule their headers match)."""

    def __init__(
        self,
        path: Path,
        namespace: str | None,
        weights: Weights,
        *,
        cohort: Mapping[str, str] | None = None,
        refresh: float = 1.0,
    ) -> None:
        self._path = path
        self._namespace = namespace
        self._weights = weights
        self._cohort = cohort
        self._refresh = refresh
        self._read_at = -float("inf")
        self._backends: list[tuple[int, list[Endpoint]]] = []
        self._cohort_backends: list[tuple[int, list[Endpoint]]] = []

    def __call__(self) -> list[Endpoint]:
        now = time.monotonic()
        if now - self._read_at >= self._refresh:
            self._read_at = now
            # A broken read keeps the last good split until the next refresh.
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                published = read_published(self._path)

                def behind(headers: Mapping[str, str]) -> list[tuple[int, list[Endpoint]]]:
                    return [
                        (weight, published.ready_behind(self._namespace, service))
                        for service, weight in self._weights(headers)
                    ]

                self._backends = behind({})
                self._cohort_backends = behind(self._cohort) if self._cohort else []
        everyone = self._backends + self._cohort_backends
        return list(dict.fromkeys(e for _, endpoints in everyone for e in endpoints))

    def choose(self, endpoints: Sequence[Endpoint], rng: random.Random) -> Endpoint | None:
        """A `Router` over the backends as last read (`endpoints` is their union)."""
        return choose_backend(self._backends, rng)

    def choose_cohort(self, endpoints: Sequence[Endpoint], rng: random.Random) -> Endpoint | None:
        """A `Router` for the requests with the cohort's headers."""
        return choose_backend(self._cohort_backends, rng)


def _send(
    client: httpx.Client, endpoint: Endpoint, body: Row, headers: Mapping[str, str]
) -> tuple[str, float | None]:
    if not is_loopback_address(endpoint.address):  # the hard network rule, checked again
        raise ValueError(f"refusing non-loopback endpoint {endpoint.address}")
    started = time.perf_counter()
    url = f"{endpoint.url}/v2/models/{endpoint.model}/infer"
    try:
        response = client.post(url, json=body, headers=dict(headers))
    except httpx.HTTPError:
        return ERROR, None
    return str(response.status_code), (time.perf_counter() - started) * 1000


def _send_labels(client: httpx.Client, endpoint: Endpoint, body: Row) -> Counter[str]:
    """Posts one label request; what became of its rows."""
    if not is_loopback_address(endpoint.address):
        raise ValueError(f"refusing non-loopback endpoint {endpoint.address}")
    rows = len(body["labels"])
    try:
        response = client.post(f"{endpoint.url}/v2/models/{endpoint.model}/labels", json=body)
        receipt = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        receipt = None
    if not isinstance(receipt, dict):
        return Counter({ERROR: rows})
    outcome = Counter({"matched": int(receipt.get("matched", 0))})
    outcome.update({str(k): int(v) for k, v in dict(receipt.get("unmatched", {})).items()})
    return +outcome


class _LabelSender:
    """Posts due labels from a thread of its own (see the module doc)."""

    def __init__(self, client: httpx.Client, queue: LabelQueue, report: LoadReport,
                 lock: threading.Lock) -> None:  # fmt: skip
        self._client, self._queue, self._report, self._lock = client, queue, report, lock
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="load-labels")

    @classmethod
    def started(
        cls,
        client: httpx.Client,
        spec: LoadSpec,
        labels: Sequence[Any] | None,
        report: LoadReport,
        lock: threading.Lock,
    ) -> "_LabelSender | None":
        """A running sender when labels are to be posted back, else None."""
        if labels is None or spec.label_delay is None:
            return None
        sender = cls(client, LabelQueue(spec.label_delay), report, lock)
        sender._thread.start()
        return sender

    def offer(self, endpoint: Endpoint, request_id: str, labels: Sequence[Any]) -> None:
        with self._lock:
            if not self._queue.add(time.monotonic(), endpoint, request_id, labels):
                self._report.labels[DROPPED] += len(labels)

    def finish(self, stop: threading.Event, timeout: float) -> None:
        """Waits until every waiting label was sent (or `stop`, or `timeout`), then ends."""
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if not self._queue:
                    break
            stop.wait(0.05)
        self._done.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            finished = self._done.wait(0.05)
            with self._lock:
                due = self._queue.due(time.monotonic())
            for endpoint, body in due:
                outcome = _send_labels(self._client, endpoint, body)
                with self._lock:
                    self._report.labels.update(outcome)
            if finished:
                return


def _request(
    request_id: str,
    spec: LoadSpec,
    *,
    rows: Sequence[Row],
    features: Sequence[FeatureProfile],
    labels: Sequence[Any] | None,
    injector: DriftInjector,
    rng: random.Random,
) -> tuple[Row, list[Any] | None]:
    """One request's body (drifted, maybe malformed) and its rows' labels."""
    picked = sample_indices(len(rows), spec.batch, rng)
    batch = [injector.apply(dict(rows[j]), rng) for j in picked]
    body = infer_body(batch, features, request_id)
    truth = [labels[j] for j in picked] if labels is not None else None
    return (malformed(body) if injector.malformed(rng) else body), truth


def run_load(
    spec: LoadSpec,
    rows: Sequence[Row],
    features: Sequence[FeatureProfile],
    endpoints: Callable[[], Sequence[Endpoint]],
    *,
    drift: Drift | None = None,
    labels: Sequence[Any] | None = None,
    router: Router = choose_uniform,
    cohort: CohortLoad | None = None,
    progress: Callable[[LoadReport], None] | None = None,
    progress_every: float = 5.0,
    stop: threading.Event | None = None,
) -> LoadReport:
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    rng = random.Random(spec.seed)
    injector = DriftInjector(drift or Drift(), features, rows)
    report = LoadReport()
    lock = threading.Lock()
    in_flight = threading.BoundedSemaphore(spec.workers * 4)
    stop = stop or threading.Event()

    def deliver(endpoint: Endpoint, body: Row, truth: list[Any] | None, in_cohort: bool) -> None:
        try:
            headers = cohort.headers if cohort is not None and in_cohort else {}
            code, latency = _send(client, endpoint, body, headers)
            with lock:
                report.record(endpoint, code, latency, cohort=in_cohort)
            if sender is not None and truth is not None and code == "200":
                sender.offer(endpoint, body["id"], truth)
        finally:
            in_flight.release()

    start = report.started
    deadline = start + spec.duration
    next_progress = start + progress_every
    with (
        httpx.Client(timeout=spec.timeout, trust_env=False) as client,
        ThreadPoolExecutor(spec.workers, thread_name_prefix="load") as pool,
    ):
        sender = _LabelSender.started(client, spec, labels, report, lock)
        for i in range(spec.count):
            due = start + i / spec.rate
            if due >= deadline or stop.wait(max(0.0, due - time.monotonic())):
                break
            in_cohort = cohort is not None and rng.random() < cohort.share
            endpoint = (cohort.router if cohort is not None and in_cohort else router)(
                endpoints(), rng
            )
            if endpoint is None:
                with lock:
                    report.record(None, NO_ENDPOINT, None, cohort=in_cohort)
            elif not in_flight.acquire(blocking=False):
                with lock:
                    report.record(endpoint, DROPPED, None, cohort=in_cohort)
            else:
                body, truth = _request(
                    f"load-{i}", spec, rows=rows, features=features, labels=labels,
                    injector=injector, rng=rng,
                )  # fmt: skip
                pool.submit(deliver, endpoint, body, truth, in_cohort)
            if progress is not None and time.monotonic() >= next_progress:
                next_progress += progress_every
                with lock:
                    report.elapsed = time.monotonic() - start
                    progress(report)
        pool.shutdown(wait=True)  # every answer in, so every label is queued
        report.elapsed = time.monotonic() - start
        if sender is not None:
            sender.finish(stop, (spec.label_delay or 0.0) + 2 * spec.timeout)
    return report


def default_profile(data: Path) -> Path:
    """The profile next to an example build's data: OUT/data/x.csv -> OUT/model/profile.json."""
    return data.resolve().parent.parent / "model" / "profile.json"
