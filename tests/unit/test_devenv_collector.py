"""Reading back what the OpenTelemetry Collector (devenv.collector) exported: OTLP JSON lines."""

import json

import pytest

from modeldeploy.devenv.collector import parse_spans

pytestmark = pytest.mark.unit


def test_collector_output_is_read_back() -> None:
    request = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "churn"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "8bdca50faa14f55a",
                                "parentSpanId": "b7ad6b7169203331",
                                "name": "POST /v2/models/{model}/infer",
                                "kind": 2,
                                "attributes": [
                                    {"key": "n", "value": {"intValue": "400"}},
                                    {"key": "ok", "value": {"boolValue": False}},
                                    {"key": "x", "value": {"doubleValue": 0.5}},
                                    {
                                        "key": "list",
                                        "value": {"arrayValue": {"values": [{"stringValue": "a"}]}},
                                    },
                                ],
                                "events": [{"name": "exception"}],
                                "status": {"code": 2, "message": "boom"},
                            },
                            {"traceId": "0af7", "spanId": "01", "name": "predict"},
                        ]
                    }
                ],
            }
        ]
    }
    spans = parse_spans([json.dumps(request), '{"resourceSpans": [{"scopeSp'])
    assert [s.name for s in spans] == ["POST /v2/models/{model}/infer", "predict"]
    server, child = spans
    assert server.service == "churn"
    assert server.kind == 2
    assert server.parent_span_id == "b7ad6b7169203331"
    assert server.attributes == {"n": 400, "ok": False, "x": 0.5, "list": ["a"]}
    assert (server.status_code, server.status_message, server.events) == (2, "boom", ("exception",))
    assert (child.parent_span_id, child.attributes, child.status_code) == ("", {}, 0)
