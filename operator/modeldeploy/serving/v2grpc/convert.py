"""V2 gRPC messages <-> the runtime's plain data (pure; no I/O).

A ModelInferRequest becomes the same request body REST's JSON decodes to, so that one parser
(`protocol.RequestParser`) validates both transports with the same reasons. Only what JSON
cannot get wrong is checked here: where a tensor's values are (typed `contents` in the field
of its datatype, or `raw_input_contents`, one entry per input, as tritonclient sends them) and
whether raw bytes hold whole elements. Outputs go back as `raw_output_contents`, which is what
Triton answers and the only form tritonclient's `as_numpy` reads for numeric tensors.

Typed tensors have no null: a missing value per row cannot be sent over gRPC (leave a
nullable input out to have it missing in every row).
"""

import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modeldeploy.serving.pipeline import ModelError
from modeldeploy.serving.protocol import InvalidRequest, Reason
from modeldeploy.serving.v2grpc import grpc_predict_v2_pb2 as pb

# The InferTensorContents field of each datatype (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# Raw elements: little-endian, no padding (BYTES: a 4-byte length before each element).
RAW_DTYPE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("u1"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_LENGTH = struct.Struct("<I")


def _parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any] | None:
    """A parameter map as JSON's; one without a value becomes None, which the parser
    refuses like JSON's null (bad_parameters)."""
    if not parameters:
        return None
    return {
        key: None
        if (kind := value.WhichOneof("parameter_choice")) is None
        else getattr(value, kind)
        for key, value in parameters.items()
    }


def _text(name: str, index: int, value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError as err:
        raise InvalidRequest(
            Reason.BAD_VALUE, f"input {name!r}: element {index} is not UTF-8 text"
        ) from err


def _raw_bytes_elements(name: str, raw: bytes) -> list[bytes]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidRequest(
                Reason.BAD_INPUT, f"input {name!r}: raw BYTES end inside an element's length"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidRequest(
                Reason.BAD_INPUT,
                f"input {name!r}: raw BYTES element {len(elements)} is longer than the data",
            )
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _raw_data(name: str, datatype: str, raw: bytes) -> list[Any]:
    if datatype == "BYTES":
        return [_text(name, i, v) for i, v in enumerate(_raw_bytes_elements(name, raw))]
    dtype = RAW_DTYPE.get(datatype)
    if dtype is None:
        return []  # not a V2 datatype: the parser says so (bad_datatype)
    if len(raw) % dtype.itemsize:
        raise InvalidRequest(
            Reason.BAD_INPUT,
            f"input {name!r}: {len(raw)} raw bytes are not whole {datatype} elements "
            f"({dtype.itemsize} bytes each)",
        )
    values = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL":
        if np.any(values > 1):
            raise InvalidRequest(Reason.BAD_VALUE, f"input {name!r}: raw BOOL bytes must be 0 or 1")
        return [bool(v) for v in values.tolist()]
    return list(values.tolist())


def _contents_data(tensor: pb.ModelInferRequest.InferInputTensor) -> list[Any]:
    name, datatype = tensor.name, tensor.datatype
    field = CONTENTS_FIELD.get(datatype)
    present = [f.name for f, _ in tensor.contents.ListFields()]
    stray = [f for f in present if f != field]
    if stray:
        where = f"the {field} field" if field else "raw_input_contents only"
        raise InvalidRequest(
            Reason.BAD_INPUT,
            f"input {name!r}: a {datatype or 'tensor without datatype'} tensor's values go in "
            f"{where}, not {', '.join(stray)}",
        )
    if field is None:
        return []  # FP16 without raw contents, or not a V2 datatype: the parser says which
    values = list(getattr(tensor.contents, field))
    if datatype == "BYTES":
        return [_text(name, i, v) for i, v in enumerate(values)]
    return values


def request_body(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The V2 request body a ModelInferRequest carries, as REST's JSON decodes to."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            Reason.BAD_INPUT,
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs "
            "(one per input, in order)",
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(
                    Reason.BAD_INPUT,
                    f"input {tensor.name!r}: contents and raw_input_contents are exclusive",
                )
            data = _raw_data(tensor.name, tensor.datatype, raw[index])
        else:
            data = _contents_data(tensor)
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
            "data": data,
        }
        if (parameters := _parameters(tensor.parameters)) is not None:
            entry["parameters"] = parameters
        inputs.append(entry)
    body: dict[str, Any] = {"inputs": inputs}
    if request.id:
        body["id"] = request.id
    if (parameters := _parameters(request.parameters)) is not None:
        body["parameters"] = parameters
    if request.outputs:
        body["outputs"] = [
            {"name": o.name, **({"parameters": p} if (p := _parameters(o.parameters)) else {})}
            for o in request.outputs
        ]
    return body


def _parameter(value: Any) -> pb.InferParameter:
    """A response parameter; lists (a classifier's classes) go as JSON text, since V2 gRPC
    parameters are only booleans, integers and strings."""
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    if isinstance(value, str):
        return pb.InferParameter(string_param=value)
    return pb.InferParameter(string_param=json.dumps(value, separators=(",", ":")))


def raw_contents(datatype: str, data: Sequence[Any]) -> bytes:
    """A tensor's values as raw contents (the inverse of what requests' raw inputs hold)."""
    if datatype == "BYTES":
        encoded = [str(v).encode() for v in data]
        return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
    return bytes(np.asarray(data, dtype=RAW_DTYPE[datatype]).tobytes())


def infer_response(
    model: str, version: str, request_id: str | None, outputs: Sequence[Mapping[str, Any]]
) -> pb.ModelInferResponse:
    """The ModelInferResponse of the pipeline's V2 output tensors (`Inference.outputs`)."""
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id or "")
    for output in outputs:
        data = output["data"]
        if output["datatype"].startswith("FP") and not all(math.isfinite(v) for v in data):
            # As REST, whose JSON cannot carry them: the model's fault, not the client's.
            raise ModelError("the model produced NaN or infinite outputs")
        tensor = response.outputs.add(
            name=output["name"], datatype=output["datatype"], shape=output["shape"]
        )
        for key, value in output.get("parameters", {}).items():
            tensor.parameters[key].CopyFrom(_parameter(value))
        response.raw_output_contents.append(raw_contents(output["datatype"], data))
    return response


def model_metadata(metadata: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """The ModelMetadataResponse of REST's model metadata (`app.model_metadata`)."""
    return pb.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["inputs"]],
        outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["outputs"]],
    )
