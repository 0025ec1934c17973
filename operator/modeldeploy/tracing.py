"""OpenTelemetry traces of the runtime and the operator, off unless configured.

    tracing.setup("churn")                     # once, at process start: True when on
    with tracing.span("reconcile", {...}):     # a span, current inside the block
        tracing.annotate({"modeldeploy.writes": 3})   # attributes on the current span
        with tracing.stage("predict"):         # a child of the current span, if one records
            ...
    tracing.record("analysis round", seconds, {...})  # a finished span for work timed already
    headers = tracing.outgoing()               # the current context for a request sent on

The standard variables configure it (the SDK's own names and meanings): on when
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the traces URL, used as is) or
`OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL; `/v1/traces` is appended) is set, unless
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Spans go over OTLP/HTTP with protobuf
bodies (`OTEL_EXPORTER_OTLP_PROTOCOL` may only say `http/protobuf`): the exporter rides on
requests, which the operator has already, where the gRPC one brings grpcio (a compiled
extension) into every image that traces. The SDK reads the rest itself:
`OTEL_SERVICE_NAME` (else the caller's default), `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` and its argument (default: parent-based, always on),
`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._CERTIFICATE`, `OTEL_BSP_*` (batching),
`OTEL_PROPAGATORS` (default W3C `traceparent` and baggage).

Off (the default), every call here is a check of one module global and a shared no-op: the
SDK is never imported. On without the `otel` extra installed, or with a setting it cannot
follow, it logs why and stays off: tracing never stops a model from serving or the operator
from reconciling.
"""

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import Tracer as OtelTracer

log = logging.getLogger("modeldeploy.tracing")

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int] | Sequence[float]
Attributes = Mapping[str, AttributeValue]

TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_PROTOCOL_ENV = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
PROTOCOL_ENV = "OTEL_EXPORTER_OTLP_PROTOCOL"
SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
SDK_DISABLED_ENV = "OTEL_SDK_DISABLED"
TRACES_EXPORTER_ENV = "OTEL_TRACES_EXPORTER"
PROTOCOL = "http/protobuf"
TRACES_PATH = "/v1/traces"
EXTRA_HINT = "pip install 'modeldeploy[otel]'"


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for something this exporter cannot do; the message says what."""


@dataclass(frozen=True)
class TracingConfig:
    endpoint: str
    """The OTLP/HTTP traces URL."""
    service_name: str


def tracing_config(env: Mapping[str, str], default_service: str) -> TracingConfig | None:
    """What the OTEL_* variables in `env` ask for; None: tracing off."""
    if env.get(SDK_DISABLED_ENV, "").strip().lower() == "true":
        return None
    exporters = {e.strip().lower() for e in env.get(TRACES_EXPORTER_ENV, "otlp").split(",")}
    exporters.discard("")
    if exporters == {"none"}:
        return None
    if exporters - {"otlp"}:
        raise TracingConfigError(
            f"{TRACES_EXPORTER_ENV}={env[TRACES_EXPORTER_ENV]!r}: only otlp (or none) is supported"
        )
    protocol = (env.get(TRACES_PROTOCOL_ENV) or env.get(PROTOCOL_ENV) or PROTOCOL).strip()
    if protocol != PROTOCOL:
        raise TracingConfigError(
            f"OTLP protocol {protocol!r}: only {PROTOCOL} is supported (a collector's OTLP "
            "receiver takes it next to grpc)"
        )
    endpoint = env.get(TRACES_ENDPOINT_ENV, "").strip()
    if not endpoint:
        base = env.get(ENDPOINT_ENV, "").strip()
        if not base:
            return None
        endpoint = base.rstrip("/") + TRACES_PATH
    if not endpoint.startswith(("http://", "https://")):
        raise TracingConfigError(f"OTLP endpoint {endpoint!r} is not an http(s) URL")
    service = env.get(SERVICE_NAME_ENV, "").strip() or default_service
    return TracingConfig(endpoint=endpoint, service_name=service)


class Span(Protocol):
    def set(self, attributes: Attributes) -> None: ...

    def fail(self, error: BaseException | str) -> None:
        """Mark the span failed (status ERROR), with the exception recorded as an event."""


class _Off:
    """The span of tracing off, or of no current span: does nothing."""

    def set(self, attributes: Attributes) -> None:
        pass

    def fail(self, error: BaseException | str) -> None:
        pass

    def __enter__(self) -> "_Off":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


OFF = _Off()


class _Recording:
    def __init__(self, span: "OtelSpan") -> None:
        self._span = span

    def set(self, attributes: Attributes) -> None:
        self._span.set_attributes(attributes)

    def fail(self, error: BaseException | str) -> None:
        from opentelemetry.trace import Status, StatusCode

        if isinstance(error, BaseException):
            self._span.record_exception(error)
            error = f"{type(error).__name__}: {error}"
        self._span.set_status(Status(StatusCode.ERROR, error))


class _Tracer:
    def __init__(self, tracer: "OtelTracer") -> None:
        self._tracer = tracer

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Attributes | None, headers: Mapping[str, str] | None
    ) -> Iterator[Span]:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        context = None if headers is None else propagate.extract(headers)
        kind = SpanKind.INTERNAL if headers is None else SpanKind.SERVER
        with self._tracer.start_as_current_span(
            name, context=context, kind=kind, attributes=attributes
        ) as current:
            yield _Recording(current)

    def stage(self, name: str) -> contextlib.AbstractContextManager[Span]:
        from opentelemetry import trace

        if not trace.get_current_span().is_recording():
            return OFF
        return self.span(name, None, None)

    def annotate(self, attributes: Attributes) -> None:
        from opentelemetry import trace

        trace.get_current_span().set_attributes(attributes)

    def outgoing(self) -> dict[str, str]:
        from opentelemetry import propagate

        headers: dict[str, str] = {}
        propagate.inject(headers)
        return headers

    def record(self, name: str, seconds: float, attributes: Attributes) -> None:
        end = time.time_ns()
        done = self._tracer.start_span(
            name, start_time=end - int(seconds * 1e9), attributes=attributes
        )
        done.end(end_time=end)


_tracer: _Tracer | None = None


def setup(
    default_service: str, version: str | None = None, env: Mapping[str, str] = os.environ
) -> bool:
    """Install the tracer the OTEL_* variables of `env` ask for (`version`: the resource's
    service.version, default modeldeploy's); False (logged) when off. Also the global tracer
    provider: spans a model's own code makes nest under ours."""
    # The one tracer of this process, set once at its start.
    global _tracer  # noqa: PLW0603
    try:
        config = tracing_config(env, default_service)
    except TracingConfigError as err:
        log.error("tracing off: %s", err)
        return False
    if config is None:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as err:
        log.error("tracing off: an OTLP endpoint is set but %s (%s)", err, EXTRA_HINT)
        return False
    from modeldeploy import __version__

    resource = Resource.create(
        {SERVICE_NAME: config.service_name, SERVICE_VERSION: version or __version__}
    )
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER; flushed at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint)))
    trace.set_tracer_provider(provider)
    _tracer = _Tracer(provider.get_tracer("modeldeploy", __version__))
    log.info("traces to %s as service %s", config.endpoint, config.service_name)
    return True


def span(
    name: str, attributes: Attributes | None = None, *, headers: Mapping[str, str] | None = None
) -> contextlib.AbstractContextManager[Span]:
    """A span, current inside the block; an exception leaving it is recorded and marks it
    failed. With `headers` (a request's), a server span continuing the caller's trace."""
    if _tracer is None:
        return OFF
    return _tracer.span(name, attributes, headers)


def stage(name: str) -> contextlib.AbstractContextManager[Span]:
    """A child of the current span, none without a recording one: a stage of a request is
    traced inside its request only (warm-up and `modeldeploy profile` run the same code)."""
    if _tracer is None:
        return OFF
    return _tracer.stage(name)


def annotate(attributes: Attributes) -> None:
    """Attributes on the current span (nothing without one)."""
    if _tracer is not None:
        _tracer.annotate(attributes)


def record(name: str, seconds: float, attributes: Attributes) -> None:
    """A child of the current span that ended now after `seconds`: work timed already and
    known only once it was concluded (an analysis round: measured, then concluded purely)."""
    if _tracer is not None:
        _tracer.record(name, seconds, attributes)


def outgoing() -> dict[str, str]:
    """The current context as headers (W3C `traceparent`) for a request made on its behalf
    (a mirrored request); none when off."""
    if _tracer is None:
        return {}
    return _tracer.outgoing()
