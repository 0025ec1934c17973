"""A real OpenTelemetry Collector on 127.0.0.1 (built by `hack/testenv.sh`): OTLP in over gRPC
and HTTP, every span out to a file as OTLP JSON (one export request per line), read back.

    with Collector(otelcol_binary(), workdir) as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_url}   # for the traced process
        spans = collector.wait_for(lambda spans: [s for s in spans if s.name == "reconcile"])
"""

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from modeldeploy.devenv.children import terminate
from modeldeploy.devenv.tools import free_port

LOOPBACK = "127.0.0.1"
STATUS_ERROR = 2  # OTLP's Status.code: 0 unset, 1 ok, 2 error
SPAN_KIND_SERVER = 2


@dataclass(frozen=True)
class ExportedSpan:
    """One span as the collector wrote it, its attributes as Python values."""

    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    name: str
    kind: int
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0
    status_message: str = ""
    events: tuple[str, ...] = ()


def _value(any_value: dict[str, Any]) -> Any:
    """An OTLP AnyValue in JSON (int64 is a string there) as a Python value."""
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "arrayValue" in any_value:
        return [_value(v) for v in any_value["arrayValue"].get("values", [])]
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in any_value:
            return any_value[key]
    return None


def _attributes(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {e["key"]: _value(e.get("value", {})) for e in entries}


def parse_spans(lines: Iterable[str]) -> list[ExportedSpan]:
    """The spans of the file exporter's OTLP JSON lines (a line being written is skipped)."""
    spans = []
    for line in lines:
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            continue
        for resource_spans in request.get("resourceSpans", []):
            resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    status = span.get("status", {})
                    spans.append(
                        ExportedSpan(
                            trace_id=span["traceId"],
                            span_id=span["spanId"],
                            parent_span_id=span.get("parentSpanId", ""),
                            name=span["name"],
                            kind=int(span.get("kind", 0)),
                            service=str(resource.get("service.name", "")),
                            attributes=_attributes(span.get("attributes", [])),
                            status_code=int(status.get("code", 0)),
                            status_message=status.get("message", ""),
                            events=tuple(e.get("name", "") for e in span.get("events", [])),
                        )
                    )
    return spans


def collector_config(grpc_port: int, http_port: int, output: Path) -> dict[str, Any]:
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{LOOPBACK}:{grpc_port}"},
                    "http": {"endpoint": f"{LOOPBACK}:{http_port}"},
                }
            }
        },
        "exporters": {"file": {"path": str(output), "flush_interval": "100ms"}},
        "service": {
            # No telemetry of its own: it would listen on a fixed port (8888).
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
        },
    }


T = TypeVar("T")


class Collector:
    """Runs `otelcol` with its configuration, log and output under `workdir`."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.output = workdir / "traces.jsonl"
        self.log = workdir / "otelcol.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        """For OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP; the SDK appends /v1/traces)."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> int:
        """Start and wait until both receivers listen (receivers start last, after the
        pipeline behind them); returns the process id."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "otelcol.yaml"
        config.write_text(
            yaml.safe_dump(collector_config(self.grpc_port, self.http_port, self.output))
        )
        self._process = subprocess.Popen(
            [str(self.binary), "--config", f"file:{config}"],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not all(self._listening(p) for p in (self.grpc_port, self.http_port)):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"otelcol exited with {self._process.returncode}:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"otelcol not listening after {timeout}s:\n{self.log_text()}")
            time.sleep(0.1)
        return self._process.pid

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return True
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def spans(self) -> list[ExportedSpan]:
        """Every span exported so far."""
        if not self.output.exists():
            return []
        return parse_spans(self.output.read_text().splitlines())

    def wait_for(
        self, found: Callable[[list[ExportedSpan]], Sequence[T]], timeout: float = 30.0
    ) -> Sequence[T]:
        """Polls the exported spans until `found` picks something from them (spans are
        batched by the exporting process, then flushed to the file every 100 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            picked = found(self.spans())
            if picked:
                return picked
            if time.monotonic() > deadline:
                names = sorted({s.name for s in self.spans()})
                raise TimeoutError(f"no such spans after {timeout}s; span names seen: {names}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process, timeout=15)

    def __enter__(self) -> "Collector":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
