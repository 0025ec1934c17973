"""The analysis glue: per reconcile, run one round when one is due and hand the state
machine its signal (the `Reconciler.analysis` seam of `modeldeploy.handlers`).

    judge = Judge(kube, AnalysisSettings(prometheus_url="http://prometheus:9090"), metrics)
    analysis = judge(subject, world, now)      # -> rollout.AnalysisInput; never raises

What is pure lives in `rounds` (target, due-ness, mapping, signal); here is the I/O:

- Prometheus: one of the operator's endpoints (see `endpoints`): `spec.prometheus.endpoint`
  with the credentials of `spec.prometheus.auth.secretRef` (a Secret in the ModelDeployment's
  namespace that an admin labelled for that endpoint: `token`, or `username` and
  `password`), else the operator's default URL with its own credentials (files `token` or
  `username` and `password` in a mounted directory, as the chart mounts them). The
  operator's credentials go to its default Prometheus only. An endpoint or Secret the spec
  may not use makes every query of the round unanswerable for that reason, and a Warning
  Event says so once. Without any URL the analysis is off for that resource: steps advance
  on time, and a Warning Event says so once.
- Queries run in parallel on a thread pool shared fairly among ModelDeployments (one holds at
  most a quarter of it) and a round waits at most `round_timeout` seconds for them: an
  unanswered query counts as Prometheus unreachable. So a blackholed Prometheus costs its
  own ModelDeployments' reconciles a few seconds, never a hang, and its neighbours nothing.
- Credentials that cannot be read (Secret missing, key missing, forbidden) make every query
  of the round unanswerable, for that reason: no data, never a pass.
- Events: the state machine reports failures (every failing round) and passes (when the
  verdict turns to pass); this reports when a revision's rounds start giving no verdict
  (too few samples, no data, noDataTimeout passed), once per change.
- The checks' numbers (`checks`, with numpy and scipy) are imported with the first round:
  an operator none of whose ModelDeployments runs an analysis never loads them.
"""

import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from modeldeploy.analysis.config import (
    Observations,
    QueryPlan,
    QueryProvider,
    collect,
    plan_queries,
)
from modeldeploy.analysis.data import QueryResult, QueryStatus
from modeldeploy.analysis.endpoints import (
    Endpoint,
    EndpointRefused,
    choose_endpoint,
    endpoint_table,
    secret_allowed,
)
from modeldeploy.analysis.fairpool import FairPool
from modeldeploy.analysis.prometheus import PrometheusAuth, PrometheusProvider
from modeldeploy.analysis.rounds import (
    MappedAnalysis,
    RoundTarget,
    Waiting,
    choose_target,
    evidence_range,
    evidence_since,
    has_checks,
    map_spec,
    memory_of,
    revision_ref,
    round_due,
    signal_of,
    waiting_event,
    waiting_kind,
)
from modeldeploy.analysis.verdicts import aggregate, decide
from modeldeploy.api import API_VERSION, KIND
from modeldeploy.api import PrometheusAuth as PrometheusAuthSpec
from modeldeploy.kube import Kube, KubeError
from modeldeploy.rollout import NO_ANALYSIS, AnalysisInput, AnalysisSignal, Event, Subject, World
from modeldeploy.telemetry import OperatorMetrics

log = logging.getLogger("modeldeploy.analysis")

AuthType = Literal["none", "bearer", "basic"]
AUTH_TYPES: tuple[AuthType, ...] = ("none", "bearer", "basic")
HOLD = AnalysisInput(gated=True)
"""Analysis gates the rollout, but no round ran (not due, nothing Ready to measure)."""
MAX_PROVIDERS = 32
Key = tuple[str, str]


@dataclass(frozen=True)
class AnalysisSettings:
    """The operator's analysis options (`modeldeploy operator` flags and environment)."""

    prometheus_url: str | None = None
    """Default Prometheus for ModelDeployments without spec.prometheus (endpoint
    `default`)."""
    endpoints: Mapping[str, str] = field(default_factory=dict)
    """The other Prometheus a spec may name (spec.prometheus.endpoint), by name."""
    auth_type: AuthType = "none"
    auth_dir: Path | None = None
    """Directory with the default Prometheus' credentials: `token`, or `username` and
    `password` (a mounted Secret); read every round, so that a rotated Secret applies."""
    namespace_label: str = "namespace"
    """Label the scrape config puts the pod's namespace in ("" if none)."""
    ca_file: Path | None = None
    """PEM bundle that verifies the default Prometheus' certificate instead of the system
    CAs (a mounted ConfigMap or Secret)."""
    insecure_skip_verify: bool = False
    """Do not verify the default Prometheus' certificate at all."""
    round_timeout: float = 5.0
    """Seconds a round waits for all its queries."""
    query_timeout: float = 4.0
    workers: int = 8
    """Query threads, shared fairly: a ModelDeployment runs at most a quarter of them."""

    def __post_init__(self) -> None:
        endpoint_table(self.prometheus_url, self.endpoints)  # raises for a bad name or URL
        if self.workers < 1:
            raise ValueError("analysis needs at least one query worker")
        if self.auth_type not in AUTH_TYPES:
            raise ValueError(f"Prometheus auth type must be one of {AUTH_TYPES}")
        if self.auth_type != "none" and self.auth_dir is None:
            raise ValueError(f"Prometheus auth type {self.auth_type} needs a credentials directory")
        if self.ca_file is not None and self.insecure_skip_verify:
            raise ValueError("give the Prometheus a CA file or skip its verification, not both")


class CredentialsError(ValueError):
    """Credentials for Prometheus cannot be read; the message says which and why."""


def auth_from_values(kind: str, values: Mapping[str, str], where: str) -> PrometheusAuth:
    """bearer: key `token`; basic: keys `username` and `password` (`where` names the
    Secret or directory in messages)."""
    keys = ("token",) if kind == "bearer" else ("username", "password")
    missing = [k for k in keys if not values.get(k)]
    if missing:
        raise CredentialsError(f"{where} has no {' or '.join(missing)} (needed for {kind} auth)")
    if kind == "bearer":
        return PrometheusAuth(bearer_token=values["token"])
    return PrometheusAuth(username=values["username"], password=values["password"])


def decode_secret_data(data: Mapping[str, Any], where: str) -> dict[str, str]:
    """A Secret's `data` (base64) as text, surrounding whitespace removed (a trailing
    newline from `echo` is a classic)."""
    values = {}
    for key, raw in data.items():
        try:
            values[key] = base64.b64decode(str(raw), validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError) as err:
            raise CredentialsError(f"{where}: key {key} is not base64 text: {err}") from err
    return values


def read_auth_dir(kind: str, directory: Path) -> PrometheusAuth:
    keys = ("token",) if kind == "bearer" else ("username", "password")
    values = {}
    for key in keys:
        path = directory / key
        try:
            values[key] = path.read_text().strip()
        except OSError as err:
            raise CredentialsError(f"cannot read {path}: {err.strerror or err}") from err
    return auth_from_values(kind, values, str(directory))


@dataclass(frozen=True)
class Unanswerable:
    """A provider for a round that cannot ask Prometheus: every query fails for `why`."""

    why: str

    def query(self, promql: str, by: Sequence[str] = (), at: float | None = None) -> QueryResult:
        return QueryResult.failed(QueryStatus.UNREACHABLE, self.why)


class Provider(QueryProvider, Protocol):
    def close(self) -> None: ...


Connect = Callable[[str, PrometheusAuth | None], Provider]


def tls_verification(settings: AnalysisSettings, url: str) -> bool | str:
    """How to verify the certificate of `url` (requests' `verify`: a CA file, or a bool). The
    operator's TLS options are those of its default Prometheus, like its credentials; any
    other endpoint is verified against the system CAs."""
    if url != endpoint_table(settings.prometheus_url, {}).get("default"):
        return True
    if settings.insecure_skip_verify:
        return False
    return str(settings.ca_file) if settings.ca_file is not None else True


def prometheus_connector(settings: AnalysisSettings) -> Connect:
    def connect(url: str, auth: PrometheusAuth | None) -> Provider:
        return PrometheusProvider(
            url,
            auth=auth,
            timeout=settings.query_timeout,
            connect_timeout=min(2.0, settings.query_timeout),
            retries=1,
            verify_tls=tls_verification(settings, url),
        )

    return connect


class Judge:
    def __init__(
        self,
        kube: Kube | None,
        settings: AnalysisSettings,
        metrics: OperatorMetrics | None = None,
        connect: Connect | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self._connect = connect or prometheus_connector(settings)
        self._endpoints = endpoint_table(settings.prometheus_url, settings.endpoints)
        self._pool = FairPool(settings.workers, max(1, settings.workers // 4), "analysis")
        self._providers: dict[tuple[str, PrometheusAuth | None], Provider] = {}
        self._lock = threading.Lock()
        self._reported: set[tuple[Key, str]] = set()
        self._waiting: dict[Key, tuple[str, Waiting | None]] = {}

    def close(self) -> None:
        self._pool.close()
        with self._lock:
            for provider in self._providers.values():
                provider.close()
            self._providers.clear()

    def forget(self, key: Key) -> None:
        with self._lock:
            self._waiting.pop(key, None)
            self._reported = {r for r in self._reported if r[0] != key}

    def __call__(self, subject: Subject, world: World, now: datetime) -> AnalysisInput:
        try:
            return self.judge(subject, world, now)
        except Exception:  # never into Kopf; and never a pass: hold the canary
            log.exception("analysis of %s/%s failed", subject.namespace, subject.name)
            return HOLD

    def judge(self, subject: Subject, world: World, now: datetime) -> AnalysisInput:
        mapped = map_spec(subject.spec.analysis)
        if not has_checks(mapped.config, mapped.rejected):
            return NO_ANALYSIS
        endpoint: Endpoint | Unanswerable | None
        try:
            endpoint = choose_endpoint(subject.spec.prometheus, self._endpoints)
        except EndpointRefused as err:
            endpoint = self.refuse(subject, err, now)
        if endpoint is None:
            self.report_once(
                subject,
                Event(
                    "Warning",
                    "AnalysisDisabled",
                    "no Prometheus to analyse with (spec.prometheus, or the operator's "
                    "--prometheus-url): rollout steps advance on time only",
                ),
                now,
            )
            return NO_ANALYSIS
        target = choose_target(subject, world, mapped, now)
        if target is None or not round_due(subject.status, target.revision, mapped.interval, now):
            return HOLD
        provider = (
            endpoint
            if isinstance(endpoint, Unanswerable)
            else self.provider_for(subject, endpoint, now)
        )
        signal = self.run_round(
            subject, world, now, mapped=mapped, target=target, provider=provider
        )
        return AnalysisInput(gated=True, signal=signal)

    def refuse(self, subject: Subject, err: EndpointRefused, now: datetime) -> Unanswerable:
        """A Prometheus or Secret the spec may not use: a Warning Event once, and rounds
        whose every query fails for that reason (no data, never a pass)."""
        self.report_once(subject, Event("Warning", "PrometheusRefused", str(err)), now)
        return Unanswerable(f"Prometheus refused: {err}")

    # --- Prometheus -------------------------------------------------------------------

    def provider_for(self, subject: Subject, endpoint: Endpoint, now: datetime) -> QueryProvider:
        try:
            auth = self.credentials(subject, endpoint)
        except EndpointRefused as err:
            return self.refuse(subject, err, now)
        except CredentialsError as err:
            return Unanswerable(f"Prometheus credentials: {err}")
        url = endpoint.url
        with self._lock:
            provider = self._providers.get((url, auth))
            if provider is None:
                if len(self._providers) >= MAX_PROVIDERS:
                    oldest = next(iter(self._providers))
                    self._providers.pop(oldest).close()
                provider = self._connect(url, auth)
                self._providers[(url, auth)] = provider
            return provider

    def credentials(self, subject: Subject, endpoint: Endpoint) -> PrometheusAuth | None:
        spec = subject.spec.prometheus
        if spec is not None and spec.auth is not None:
            return self.secret_auth(subject.namespace, spec.auth, endpoint)
        if spec is not None or self.settings.auth_type == "none" or self.settings.auth_dir is None:
            return None
        return read_auth_dir(self.settings.auth_type, self.settings.auth_dir)

    def secret_auth(
        self, namespace: str, auth: PrometheusAuthSpec, endpoint: Endpoint
    ) -> PrometheusAuth:
        name = auth.secret_ref.name
        where = f"Secret {namespace}/{name}"
        if self.kube is None:
            raise CredentialsError(f"{where}: no Kubernetes client")
        try:
            secret = self.kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except KubeError as err:
            raise CredentialsError(f"cannot read {where}: {err}") from err
        secret_allowed(((secret or {}).get("metadata") or {}).get("labels") or {}, endpoint, where)
        values = decode_secret_data((secret or {}).get("data") or {}, where)
        return auth_from_values(auth.type, values, where)

    def collect(
        self, owner: Key, provider: QueryProvider, plan: QueryPlan, at: float
    ) -> Observations:
        """Every query of the plan at once, in `owner`'s share of the pool; those without an
        answer within round_timeout count as unreachable."""
        timeout = self.settings.round_timeout
        deadline = time.monotonic() + timeout

        def ask(promql: str, by: tuple[str, ...]) -> Future[QueryResult]:
            return self._pool.submit(owner, lambda: provider.query(promql, by, at))

        def answer(future: Future[QueryResult]) -> QueryResult:
            try:
                return future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                future.cancel()
                why = f"no answer within {timeout:g}s"
                return QueryResult.failed(QueryStatus.UNREACHABLE, why)

        queries = {key: ask(q.promql, q.by) for key, q in plan.queries.items()}
        custom = {name: ask(q.promql, q.by) for name, q in plan.custom.items()}
        return Observations(
            {key: answer(f) for key, f in queries.items()},
            {name: answer(f) for name, f in custom.items()},
        )

    # --- one round --------------------------------------------------------------------

    def run_round(
        self,
        subject: Subject,
        world: World,
        now: datetime,
        *,
        mapped: MappedAnalysis,
        target: RoundTarget,
        provider: QueryProvider,
    ) -> AnalysisSignal:
        started = time.monotonic()
        label = self.settings.namespace_label
        since = evidence_since(subject.status, target, now)
        plan = plan_queries(
            target.config,
            canary=revision_ref(subject, world, target.revision, label),
            stable=(
                revision_ref(subject, world, target.reference, label)
                if target.reference is not None
                else None
            ),
            window=evidence_range(since, mapped, now),
            custom_window=mapped.window,
        )
        key = (subject.namespace, subject.name)
        if isinstance(provider, Unanswerable):
            observations = collect(provider, plan, now.timestamp())
        else:
            observations = self.collect(key, provider, plan, now.timestamp())
        # Imported here: its numpy and scipy are most of the operator's memory (~70 MB).
        from modeldeploy.analysis.checks import evaluate

        checks = evaluate(target.config, observations)
        outcome = aggregate([*checks, *(r.as_check() for r in target.rejected)])
        decision = decide(
            outcome,
            memory_of(subject.status, target.revision),
            now=now,
            failure_limit=mapped.failure_limit,
            on_no_data=mapped.on_no_data,
            no_data_timeout=mapped.no_data_timeout,
        )
        signal = signal_of(target, outcome, decision, now, since)
        seconds = time.monotonic() - started
        if self.metrics is not None:
            self.metrics.observe_round(key, target.track.value, outcome, seconds)
        kind = waiting_kind(outcome, decision.memory, mapped.no_data_timeout, now)
        with self._lock:
            changed = self._waiting.get(key) != (target.revision, kind)
            self._waiting[key] = (target.revision, kind)
        if changed and kind is not None:
            self.post(subject, waiting_event(target.revision, kind, decision), now)
        level = logging.DEBUG if outcome.verdict.value == "pass" else logging.INFO
        log.log(
            level,
            "%s/%s analysis of %s %s (%.2fs): %s%s",
            subject.namespace,
            subject.name,
            target.track.value,
            target.revision,
            seconds,
            signal.reason,
            " -> rollback" if signal.rollback else "",
        )
        return signal

    # --- events -----------------------------------------------------------------------

    def report_once(self, subject: Subject, event: Event, now: datetime) -> None:
        key = (subject.namespace, subject.name)
        with self._lock:
            if (key, event.message) in self._reported:
                return
            self._reported.add((key, event.message))
        log.warning("%s/%s: %s", subject.namespace, subject.name, event.message)
        self.post(subject, event, now)

    def post(self, subject: Subject, event: Event, now: datetime) -> None:
        if self.kube is None:
            return
        involved = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": subject.name, "namespace": subject.namespace, "uid": subject.uid},
        }
        try:
            self.kube.post_event(involved, event, now)
        except KubeError as err:
            log.warning("cannot post event on %s/%s: %s", subject.namespace, subject.name, err)
