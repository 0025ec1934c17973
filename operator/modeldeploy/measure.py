"""The analysis' I/O: ask Prometheus what this reconcile's round needs (the `measure` seam
of `modeldeploy.handlers`). No verdict, no Event and no memory of earlier rounds here:
`analysis.rounds` says what a round needs and concludes from the answers, in the pure plan.

    measure = Measure(kube, AnalysisSettings(prometheus_url="http://prometheus:9090"))
    measured = measure(subject, world, now)   # -> analysis.rounds.Measured; never raises

- Prometheus: one of the operator's endpoints (see `analysis.endpoints`):
  `spec.prometheus.endpoint` with the credentials of `spec.prometheus.auth.secretRef` (a
  Secret in the ModelDeployment's namespace that an admin labelled for that endpoint:
  `token`, or `username` and `password`), else the operator's default URL with its own
  credentials (files `token` or `username` and `password` in a mounted directory, as the
  chart mounts them). The operator's credentials go to its default Prometheus only. An
  endpoint or Secret the spec may not use makes every query of the round unanswerable for
  that reason (`Measured.refused` says why). Without any URL the analysis is off for that
  resource (`Measured.disabled`): steps advance on time.
- Queries run in parallel on a thread pool shared fairly among ModelDeployments (one holds at
  most a quarter of it) and a round waits at most `round_timeout` seconds for them: an
  unanswered query counts as Prometheus unreachable. So a blackholed Prometheus costs its
  own ModelDeployments' reconciles a few seconds, never a hang, and its neighbours nothing.
- Credentials that cannot be read (Secret missing, key missing, forbidden) make every query
  of the round unanswerable, for that reason: no data, never a pass.
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

from modeldeploy.analysis.config import Observations, QueryPlan, QueryProvider, collect
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
from modeldeploy.analysis.rounds import Measured, measurements_needed
from modeldeploy.api import PrometheusAuth as PrometheusAuthSpec
from modeldeploy.kube import Kube, KubeError
from modeldeploy.rollout import Subject, World

log = logging.getLogger("modeldeploy.measure")

AuthType = Literal["none", "bearer", "basic"]
AUTH_TYPES: tuple[AuthType, ...] = ("none", "bearer", "basic")


def auth_type(text: str) -> AuthType:
    """The `--prometheus-auth-type` flag's value; ValueError for another."""
    found = next((t for t in AUTH_TYPES if t == text), None)
    if found is None:
        raise ValueError(f"--prometheus-auth-type must be one of {', '.join(AUTH_TYPES)}")
    return found


NO_PROMETHEUS = (
    "no Prometheus to analyse with (spec.prometheus, or the operator's --prometheus-url): "
    "rollout steps advance on time only"
)
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

    def default_auth(self) -> "PrometheusAuth | None":
        """The default Prometheus' credentials, read now (a rotated Secret applies)."""
        if self.auth_type == "none" or self.auth_dir is None:
            return None
        return read_auth_dir(self.auth_type, self.auth_dir)


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


@dataclass(frozen=True)
class SecretValues:
    where: str
    """"Secret <namespace>/<name>", for messages."""
    labels: Mapping[str, str]
    values: dict[str, str]
    """Its data, decoded."""


def read_secret(kube: Kube | None, namespace: str, name: str) -> SecretValues:
    """A Secret's labels and decoded data, read now (a rotated Secret applies); a
    CredentialsError naming it when it cannot be read."""
    where = f"Secret {namespace}/{name}"
    if kube is None:
        raise CredentialsError(f"{where}: no Kubernetes client")
    try:
        secret = kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}") or {}
    except KubeError as err:
        raise CredentialsError(f"cannot read {where}: {err}") from err
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return SecretValues(where, labels, decode_secret_data(secret.get("data") or {}, where))


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
    """A provider for a round that cannot ask Prometheus: every query fails for `why`.
    `refusal`: the spec named a Prometheus or Secret it may not use, and why."""

    why: str
    refusal: str = ""

    @classmethod
    def refused(cls, why: str) -> "Unanswerable":
        return cls(f"Prometheus refused: {why}", refusal=why)

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


class Measure:
    """The operator's `measure` seam: for the round due, if any, Prometheus' answers (with
    a cache of providers per URL and credentials, and the fair query pool)."""

    def __init__(
        self, kube: Kube | None, settings: AnalysisSettings, connect: Connect | None = None
    ) -> None:
        self.kube = kube
        self.settings = settings
        self._connect = connect or prometheus_connector(settings)
        self._endpoints = endpoint_table(settings.prometheus_url, settings.endpoints)
        self._pool = FairPool(settings.workers, max(1, settings.workers // 4), "analysis")
        self._providers: dict[tuple[str, PrometheusAuth | None], Provider] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.close()
        with self._lock:
            for provider in self._providers.values():
                provider.close()
            self._providers.clear()

    def __call__(self, subject: Subject, world: World, now: datetime) -> Measured:
        try:
            return self.measure(subject, world, now)
        except Exception:  # never into Kopf; and never a pass: hold the canary
            log.exception("analysis of %s/%s failed", subject.namespace, subject.name)
            return Measured(gated=True)

    def measure(self, subject: Subject, world: World, now: datetime) -> Measured:
        # A round is asked at the whole second status records it at (`time`), so that the
        # report's replay of it asks Prometheus the very same questions at the same instant.
        now = now.replace(microsecond=0)
        needed = measurements_needed(
            subject, world, now, namespace_label=self.settings.namespace_label
        )
        if not needed.gated:
            return Measured()
        provider: QueryProvider
        try:
            endpoint = choose_endpoint(subject.spec.prometheus, self._endpoints)
        except EndpointRefused as err:
            endpoint, provider = None, Unanswerable.refused(str(err))
        else:
            if endpoint is None:
                return Measured(disabled=NO_PROMETHEUS)
        request = needed.request
        if request is None:
            return Measured(gated=True)
        started = time.monotonic()
        if endpoint is not None:
            provider = self.provider_for(subject, endpoint)
        if isinstance(provider, Unanswerable):
            observations = collect(provider, request.plan, now.timestamp())
        else:
            key = (subject.namespace, subject.name)
            observations = self.collect(key, provider, request.plan, now.timestamp())
        seconds = time.monotonic() - started
        log.debug(
            "%s/%s: measured %s %s in %.2fs",
            subject.namespace, subject.name, request.target.track.value,
            request.target.revision, seconds,
        )  # fmt: skip
        refused = provider.refusal if isinstance(provider, Unanswerable) else ""
        return Measured(True, request, observations, refused=refused, seconds=seconds)

    # --- Prometheus -------------------------------------------------------------------

    def provider_for(self, subject: Subject, endpoint: Endpoint) -> QueryProvider:
        try:
            auth = self.credentials(subject, endpoint)
        except EndpointRefused as err:
            return Unanswerable.refused(str(err))
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
        return None if spec is not None else self.settings.default_auth()

    def secret_auth(
        self, namespace: str, auth: PrometheusAuthSpec, endpoint: Endpoint
    ) -> PrometheusAuth:
        secret = read_secret(self.kube, namespace, auth.secret_ref.name)
        secret_allowed(secret.labels, endpoint, secret.where)
        return auth_from_values(auth.type, secret.values, secret.where)

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
