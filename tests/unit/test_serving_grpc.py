"""The V2 gRPC service's pure parts: ModelInferRequest -> the plain request body that REST's
JSON decodes to (so one parser validates both), outputs -> ModelInferResponse, status codes."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from test_serving import FEATURES  # the REST parser's features: one request, two transports

from modeldeploy import contract as c
from modeldeploy.serving.pipeline import ModelError
from modeldeploy.serving.protocol import InvalidRequest, Reason, RequestParser
from modeldeploy.serving.v2grpc import convert
from modeldeploy.serving.v2grpc import grpc_predict_v2_pb2 as pb
from modeldeploy.serving.v2grpc.service import status_code, trace_headers

pytestmark = pytest.mark.unit


PARSER = RequestParser(FEATURES, max_batch=16)
# One tensor per feature, as (datatype, values); two rows.
TENSORS: dict[str, tuple[str, list[Any]]] = {
    "age": ("INT64", [30, 70]),
    "income": ("FP64", [12.5, 99.0]),
    "plan": ("BYTES", ["a", "zzz"]),
    "vip": ("BOOL", [True, False]),
}
JSON_BODY = {
    "id": "r1",
    "inputs": [
        {"name": n, "datatype": d, "shape": [len(v)], "data": v} for n, (d, v) in TENSORS.items()
    ],
}


def _raw_request(**edits: tuple[str, list[int], bytes]) -> pb.ModelInferRequest:
    """A request as tritonclient sends it (raw contents); `edits` replace a tensor's
    (datatype, shape, raw bytes)."""
    request = pb.ModelInferRequest(model_name="m", id="r1")
    for name, (sent_as, values) in TENSORS.items():
        datatype, shape, raw = edits.get(
            name, (sent_as, [len(values)], convert.raw_contents(sent_as, values))
        )
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


def _typed_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="r1")
    for name, (datatype, values) in TENSORS.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        data = [v.encode() for v in values] if datatype == "BYTES" else values
        getattr(tensor.contents, convert.CONTENTS_FIELD[datatype]).extend(data)
    return request


def _reason(request: pb.ModelInferRequest) -> Reason:
    with pytest.raises(InvalidRequest) as raised:
        PARSER.parse(convert.request_body(request))
    return raised.value.reason


def test_raw_and_typed_requests_are_the_json_body() -> None:
    assert convert.request_body(_raw_request()) == JSON_BODY
    assert convert.request_body(_typed_request()) == JSON_BODY
    parsed, expected = PARSER.parse(convert.request_body(_raw_request())), PARSER.parse(JSON_BODY)
    assert parsed.rows == expected.rows == 2
    for name, column in expected.columns.items():
        assert parsed.columns[name].tolist() == column.tolist()


def test_every_numeric_datatype_decodes_from_raw_and_from_contents() -> None:
    for datatype, dtype in convert.RAW_DTYPE.items():
        if datatype == "BOOL":
            continue
        raw = np.array([3, 4], dtype=dtype).tobytes()
        request = _raw_request(income=(datatype, [2], raw))
        assert convert.request_body(request)["inputs"][1]["data"] == [3, 4], datatype
        field = convert.CONTENTS_FIELD.get(datatype)
        if field is not None:
            typed = _typed_request()
            typed.inputs[1].datatype = datatype
            typed.inputs[1].contents.Clear()
            getattr(typed.inputs[1].contents, field).extend([3, 4])
            assert convert.request_body(typed)["inputs"][1]["data"] == [3, 4], datatype


def test_id_parameters_and_outputs_carry_over() -> None:
    request = _raw_request()
    request.id = ""
    request.parameters["trace"].bool_param = True
    request.inputs[0].parameters["unit"].string_param = "months"
    request.outputs.add(name="label")
    request.outputs.add(name="confidence").parameters["top"].int64_param = 1
    body = convert.request_body(request)
    assert "id" not in body
    assert body["parameters"] == {"trace": True}
    assert body["inputs"][0]["parameters"] == {"unit": "months"}
    assert body["outputs"] == [{"name": "label"}, {"name": "confidence", "parameters": {"top": 1}}]
    assert PARSER.parse(body).outputs == ("label", "confidence")


def _without_raw_entry() -> pb.ModelInferRequest:
    request = _raw_request()
    del request.raw_input_contents[-1]
    return request


def _raw_and_contents() -> pb.ModelInferRequest:
    request = _raw_request()
    request.inputs[0].contents.int64_contents.extend([30, 70])
    return request


def _stray_contents() -> pb.ModelInferRequest:
    request = _typed_request()
    request.inputs[1].contents.int64_contents.extend([1, 2])  # FP64 tensor
    return request


def _valueless_parameter() -> pb.ModelInferRequest:
    request = _raw_request()
    request.parameters["empty"].SetInParent()
    return request


def _length(n: int) -> bytes:
    return n.to_bytes(4, "little")


@pytest.mark.parametrize(
    ("request_of", "reason"),
    [
        # what only gRPC can get wrong
        (_without_raw_entry, Reason.BAD_INPUT),
        (_raw_and_contents, Reason.BAD_INPUT),
        (_stray_contents, Reason.BAD_INPUT),
        (lambda: _raw_request(income=("FP64", [2], b"\0" * 12)), Reason.BAD_INPUT),
        (lambda: _raw_request(plan=("BYTES", [2], _length(1) + b"a" + b"\0\0")), Reason.BAD_INPUT),
        (lambda: _raw_request(plan=("BYTES", [2], _length(9) + b"a")), Reason.BAD_INPUT),
        (
            lambda: _raw_request(plan=("BYTES", [2], _length(1) + b"\xff" + _length(0))),
            Reason.BAD_VALUE,
        ),
        (lambda: _raw_request(vip=("BOOL", [2], b"\x01\x02")), Reason.BAD_VALUE),
        # and what the shared parser refuses, with REST's reasons
        (_valueless_parameter, Reason.BAD_PARAMETERS),
        (lambda: _raw_request(income=("FP128", [2], b"\0" * 32)), Reason.BAD_DATATYPE),
        (lambda: _raw_request(vip=("INT64", [2], b"\0" * 16)), Reason.BAD_DATATYPE),
        (lambda: _raw_request(age=("INT64", [-2], b"\0" * 16)), Reason.BAD_SHAPE),
        (lambda: _raw_request(age=("INT64", [1, 2], b"\0" * 16)), Reason.BAD_SHAPE),
        (lambda: _raw_request(age=("INT64", [3], b"\0" * 16)), Reason.SHAPE_MISMATCH),
        (
            lambda: _raw_request(income=("FP64", [2], np.array([1.0, math.nan]).tobytes())),
            Reason.NON_FINITE,
        ),
        (lambda: pb.ModelInferRequest(model_name="m"), Reason.NO_INPUTS),
    ],
)
def test_malformed_requests_are_refused_with_their_reason(request_of: Any, reason: Reason) -> None:
    assert _reason(request_of()) is reason


def test_unknown_and_missing_inputs() -> None:
    request = _raw_request()
    request.inputs[0].name = "nope"
    assert _reason(request) is Reason.UNKNOWN_INPUT
    request = _raw_request()
    del request.inputs[0]
    del request.raw_input_contents[0]
    assert _reason(request) is Reason.MISSING_INPUT


def _decode(datatype: str, raw: bytes) -> list[Any]:
    request = pb.ModelInferRequest()
    request.inputs.add(name="x", datatype=datatype, shape=[1])
    request.raw_input_contents.append(raw)
    return list(convert.request_body(request)["inputs"][0]["data"])


def test_outputs_go_back_as_raw_contents_with_their_parameters() -> None:
    outputs = [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["no", "yes"]},
        {"name": "count", "datatype": "INT64", "shape": [2], "data": [1, 2]},
        {
            "name": "probabilities",
            "datatype": "FP64",
            "shape": [2, 2],
            "data": [0.25, 0.75, 0.5, 0.5],
            "parameters": {"classes": ["no", "yes"]},
        },
    ]
    response = convert.infer_response("m", "1", "r1", outputs)
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "r1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        (o["name"], o["datatype"], o["shape"]) for o in outputs
    ]
    for output, raw in zip(outputs, response.raw_output_contents, strict=True):
        assert _decode(output["datatype"], raw) == output["data"]
    classes = response.outputs[2].parameters["classes"].string_param
    assert json.loads(classes) == ["no", "yes"]
    assert convert.infer_response("m", "1", None, outputs[:1]).id == ""


def test_non_finite_outputs_are_the_models_error() -> None:
    outputs = [{"name": "value", "datatype": "FP64", "shape": [1], "data": [math.inf]}]
    with pytest.raises(ModelError):
        convert.infer_response("m", "1", None, outputs)


def test_model_metadata_converts_rests() -> None:
    metadata = {
        "name": "m",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "age", "datatype": "INT64", "shape": [-1]}],
        "outputs": [{"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]}],
        "parameters": {"revision": "r"},
    }
    response = convert.model_metadata(metadata)
    assert (response.name, list(response.versions), response.platform) == ("m", ["1"], "sklearn")
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
        ("probabilities", "FP64", [-1, 2])
    ]


def test_status_codes_and_trace_headers() -> None:
    assert status_code(200) is grpc.StatusCode.OK
    assert status_code(400) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_code(404) is grpc.StatusCode.NOT_FOUND
    assert status_code(503) is grpc.StatusCode.UNAVAILABLE
    assert status_code(500) is grpc.StatusCode.INTERNAL
    assert status_code(499) is grpc.StatusCode.CANCELLED
    metadata = [("traceparent", "00-ab-cd-01"), ("blob-bin", b"\0")]
    assert trace_headers(metadata) == {"traceparent": "00-ab-cd-01"}
    assert trace_headers(None) == {}


def test_serve_without_the_grpc_extra_refuses_the_grpc_port(tmp_path: Path) -> None:
    """An image with `serve` but not `grpc` (grpcio made unimportable here) exits 3 with the
    extra to install, before it loads anything."""
    blocked = "import sys; sys.modules['grpc'] = None; from modeldeploy.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", blocked, "serve", "--model-dir", str(tmp_path), "--grpc-port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, c.ENV_TERMINATION_LOG: str(tmp_path / "termination-log")},
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "--grpc-port 1 needs the grpc extra (pip install 'modeldeploy[serve,grpc]')" in (
        done.stderr
    )
    assert "needs the grpc extra" in (tmp_path / "termination-log").read_text()
