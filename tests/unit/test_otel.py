"""OpenTelemetry's pure parts: what the OTEL_* variables ask for, the spans' attributes, and
tracing off costing nothing (tests/integration/test_tracing.py exports to a real collector)."""

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from modeldeploy import tracing
from modeldeploy.api import CheckResult, ModelDeploymentStatus
from modeldeploy.rollout import AnalysisSignal, Event, Plan
from modeldeploy.serving.app import outcome, request_attributes, response_attributes
from modeldeploy.serving.monitor import Identity
from modeldeploy.telemetry import plan_attributes, reconcile_attributes, round_attributes
from modeldeploy.tracing import TracingConfig, TracingConfigError, tracing_config

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 20, tzinfo=UTC)
BASE = "http://collector:4318"


def test_off_without_an_endpoint() -> None:
    assert tracing_config({}, "svc") is None
    assert (
        tracing_config({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, "s") is None
    )


def test_the_base_endpoint_gets_the_traces_path() -> None:
    assert tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": BASE + "/"}, "svc") == TracingConfig(
        endpoint=BASE + "/v1/traces", service_name="svc"
    )


def test_the_traces_endpoint_is_used_as_is_and_wins() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": BASE,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/otlp",
        "OTEL_SERVICE_NAME": "churn-eu",
    }
    assert tracing_config(env, "svc") == TracingConfig("https://traces.example/otlp", "churn-eu")


@pytest.mark.parametrize(
    "switch", [{"OTEL_SDK_DISABLED": "TRUE"}, {"OTEL_TRACES_EXPORTER": "none"}]
)
def test_switched_off_with_an_endpoint(switch: dict[str, str]) -> None:
    assert tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, **switch}, "svc") is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "only http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "only http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "only otlp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "not an http\\(s\\) URL"),
    ],
)
def test_what_it_cannot_follow_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(TracingConfigError, match=message):
        tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, **env}, "svc")


def test_the_protocol_it_speaks_is_accepted() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    assert tracing_config(env, "svc") is not None


def test_a_setting_it_cannot_follow_leaves_tracing_off(caplog: pytest.LogCaptureFixture) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert not tracing.setup("svc", env=env)
    assert "tracing off" in caplog.text
    assert tracing.span("x") is tracing.OFF


def test_off_every_call_is_the_shared_no_op() -> None:
    assert not tracing.setup("svc", env={})
    with tracing.span("request", {"a": 1}, headers={"traceparent": "00-x"}) as span:
        span.set({"b": 2})
        span.fail(ValueError("no"))
        assert tracing.stage("predict") is tracing.OFF
        tracing.annotate({"c": 3})
        tracing.record("round", 1.0, {})
    assert span is tracing.OFF


def test_off_no_context_goes_out() -> None:
    assert tracing.outgoing() == {}


def test_off_the_sdk_is_never_imported() -> None:
    code = (
        "import sys; from modeldeploy import tracing; from modeldeploy.serving import app;"
        "tracing.setup('svc', env={});"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_inference_span_attributes() -> None:
    attributes = request_attributes(Identity("churn", "2", "abc"), "/v2/models/{model}/infer")
    assert attributes == {
        "http.request.method": "POST",
        "http.route": "/v2/models/{model}/infer",
        "modeldeploy.model": "churn",
        "modeldeploy.version": "2",
        "modeldeploy.revision": "abc",
    }
    assert response_attributes(200, None) == {
        "http.response.status_code": 200,
        "modeldeploy.outcome": "ok",
    }
    assert response_attributes(400, "wrong_type") == {
        "http.response.status_code": 400,
        "modeldeploy.outcome": "invalid",
        "modeldeploy.reason": "wrong_type",
    }
    assert response_attributes(500, None)["error.type"] == "500"


@pytest.mark.parametrize(
    ("status", "word"),
    [(200, "ok"), (400, "invalid"), (413, "invalid"), (499, "disconnected"),
     (503, "not_ready"), (500, "error")],
)  # fmt: skip
def test_outcome(status: int, word: str) -> None:
    assert outcome(status) == word


def test_reconcile_span_attributes() -> None:
    body = {"status": {"phase": "Progressing"}}
    assert reconcile_attributes(("ml", "churn"), body) == {
        "k8s.namespace.name": "ml",
        "modeldeploy.name": "churn",
        "modeldeploy.phase.before": "Progressing",
    }
    assert reconcile_attributes(("ml", "new"), {})["modeldeploy.phase.before"] == ""
    events = (Event("Warning", "RolledBack", "m"), Event("Normal", "BakeEnded", "m"))
    decided = Plan(status=ModelDeploymentStatus(phase="RolledBack"), events=events)
    assert plan_attributes(decided) == {
        "modeldeploy.phase.after": "RolledBack",
        "modeldeploy.events": 2,
        "modeldeploy.event_reasons": ["RolledBack", "BakeEnded"],
    }


def test_round_span_attributes_name_every_check() -> None:
    psi = CheckResult(name="feature-psi/age", value=0.4, threshold=0.1, samples=500, verdict="fail")
    signal = AnalysisSignal(
        "abc", "fail", T0, rollback=True, reason="feature-psi/age 0.4 > 0.1", checks=(psi,),
        samples=500,
    )  # fmt: skip
    assert round_attributes(("ml", "churn"), "canary", signal) == {
        "k8s.namespace.name": "ml",
        "modeldeploy.name": "churn",
        "modeldeploy.track": "canary",
        "modeldeploy.revision": "abc",
        "modeldeploy.verdict": "fail",
        "modeldeploy.outcome": "fail",
        "modeldeploy.rollback": True,
        "modeldeploy.samples": 500,
        "modeldeploy.reason": "feature-psi/age 0.4 > 0.1",
        "modeldeploy.checks": ["feature-psi/age fail value=0.4 threshold=0.1 samples=500"],
    }
    no_data = AnalysisSignal("abc", "inconclusive", T0, waiting="no-data")
    assert round_attributes(("ml", "churn"), "canary", no_data)["modeldeploy.outcome"] == "no_data"


# --- on: the same calls over the SDK, spans kept in memory ---------------------------------


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Tracing on for one test, over a provider of its own (not the global one)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", tracing._Tracer(provider.get_tracer("test")))
    return exporter


CALLER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"


def test_a_request_span_continues_the_callers_trace(exported: Any) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    with tracing.span("request", {"a": 1}, headers={"traceparent": TRACEPARENT}) as span:
        with tracing.stage("predict") as stage:
            stage.set({"rows": 2})
        tracing.annotate({"b": "x"})
        span.fail(ValueError("no"))
    predict, request = exported.get_finished_spans()
    assert request.kind == SpanKind.SERVER
    assert request.context.trace_id == CALLER_TRACE
    assert request.parent.span_id == CALLER_SPAN
    assert dict(request.attributes) == {"a": 1, "b": "x"}
    assert request.status.status_code == StatusCode.ERROR
    assert request.status.description == "ValueError: no"
    assert [e.name for e in request.events] == ["exception"]
    assert predict.parent.span_id == request.context.span_id
    assert predict.kind == SpanKind.INTERNAL
    assert dict(predict.attributes) == {"rows": 2}


def test_requests_made_on_behalf_of_a_span_carry_its_context(exported: Any) -> None:
    with tracing.span("request", headers={"traceparent": TRACEPARENT}):
        headers = tracing.outgoing()
    [request] = exported.get_finished_spans()
    assert headers["traceparent"] == f"00-{CALLER_TRACE:032x}-{request.context.span_id:016x}-01"


def test_stages_outside_a_span_are_not_traced(exported: Any) -> None:
    assert tracing.stage("predict") is tracing.OFF  # warm-up, `modeldeploy profile`
    with tracing.span("reconcile"):
        tracing.record("analysis round", 0.5, {"verdict": "pass"})
    analysed, reconcile = exported.get_finished_spans()
    assert analysed.parent.span_id == reconcile.context.span_id
    assert analysed.end_time - analysed.start_time == 500_000_000
    assert reconcile.parent is None


def test_an_exception_leaving_a_span_marks_it_failed(exported: Any) -> None:
    from opentelemetry.trace import StatusCode

    with pytest.raises(KeyError), tracing.span("reconcile"):
        raise KeyError("gone")
    [failed] = exported.get_finished_spans()
    assert failed.status.status_code == StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]
