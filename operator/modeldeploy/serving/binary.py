"""The binary tensor data extension of V2 REST (Triton's and KServe's), over bytes and plain
data: no I/O, so that app.py only reads a header and builds a Response.

A request whose `Inference-Header-Content-Length` header says how long its JSON part is
carries, after it, the bytes of every input whose `parameters.binary_data_size` is set, in
input order: little-endian, row-major, no padding; BOOL one byte (0 or 1); BYTES each element
a 4-byte little-endian length and then its bytes. `decode_request` turns such a body into the
JSON request it stands for (each binary input's values as a `data` list), so that it takes the
JSON requests' path from there on: the same validation, reasons, metrics and drift bins. A
NaN in a binary FP tensor is a missing value, JSON's null (so refused unless the feature is
nullable); binary BYTES tensors have no missing value.

Outputs are binary when the request's `parameters.binary_data_output` is true, unless an
output's `parameters.binary_data` says otherwise (and then as that says). A response with a
binary output is the JSON header (each binary output without `data`, with
`parameters.binary_data_size`) followed by the outputs' bytes in output order, its header's
length in `Inference-Header-Content-Length`.
"""

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modeldeploy.serving.protocol import (
    ALL_DATATYPES,
    InvalidRequest,
    Reason,
    decode_json,
    encode_json,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
BINARY_CONTENT_TYPE = "application/octet-stream"
JSON_CONTENT_TYPE = "application/json"

# Every fixed-size V2 datatype as little-endian numpy (BOOL is read as bytes, then checked).
_FIXED_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "u1",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
_FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})
_LENGTH = struct.Struct("<I")  # before each BYTES element
_LENGTH_PREFIX = _LENGTH.size


def decode_request(raw: bytes, header_length: str | None) -> Any:
    """The JSON request a body stands for; `header_length` is the request's
    `Inference-Header-Content-Length` (None: the whole body is JSON)."""
    split = len(raw) if header_length is None else _split(header_length, len(raw))
    body = decode_json(raw[:split])
    tail = memoryview(raw)[split:]
    entries = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        if tail:
            raise _leftover(len(tail), 0)
        return body  # the parser refuses it for what it is
    offset = 0
    decoded = []
    for index, entry in enumerate(entries):
        size = _binary_size(index, entry)
        if size is None:
            decoded.append(entry)
            continue
        if offset + size > len(tail):
            raise InvalidRequest(
                Reason.BINARY_SIZE_MISMATCH,
                f"inputs[{index}]: binary_data_size {size} runs past the end of the body "
                f"({len(tail) - offset} binary byte(s) left)",
            )
        values = _values(index, entry, tail[offset : offset + size])
        decoded.append({**entry, "data": values})
        offset += size
    if offset != len(tail):
        raise _leftover(len(tail), offset)
    return {**body, "inputs": decoded}


def framing_headers(header_length: str | None) -> dict[str, str]:
    """The headers a copy of a request's body needs to be read as that request (mirroring)."""
    if header_length is None:
        return {}
    return {HEADER_LENGTH: header_length, "content-type": BINARY_CONTENT_TYPE}


def _split(header_length: str, body_length: int) -> int:
    if not (header_length.isascii() and header_length.isdigit()):
        raise InvalidRequest(
            Reason.BAD_BINARY_HEADER,
            f"{HEADER_LENGTH} must be a number of bytes",
        )
    digits = header_length.lstrip("0") or "0"
    # Compared as text first: int() refuses numbers of over 4300 digits (a 500, not a 400).
    if len(digits) > len(str(body_length)) or int(digits) > body_length:
        raise InvalidRequest(
            Reason.BAD_BINARY_HEADER,
            f"{HEADER_LENGTH} exceeds the body's {body_length} bytes",
        )
    return int(digits)


def _leftover(binary_bytes: int, used: int) -> InvalidRequest:
    return InvalidRequest(
        Reason.BINARY_SIZE_MISMATCH,
        f"the body has {binary_bytes} binary byte(s) but the inputs' binary_data_size add up "
        f"to {used}",
    )


def _binary_size(index: int, entry: Any) -> int | None:
    """An input's binary_data_size, None for a JSON input (or one the parser refuses)."""
    if not isinstance(entry, dict):
        return None
    parameters = entry.get("parameters")
    if not isinstance(parameters, dict) or BINARY_DATA_SIZE not in parameters:
        return None
    size = parameters[BINARY_DATA_SIZE]
    if type(size) is not int or size < 0:
        raise InvalidRequest(
            Reason.BAD_PARAMETERS,
            f"inputs[{index}]: binary_data_size must be a non-negative integer",
        )
    if "data" in entry:
        raise InvalidRequest(Reason.BAD_INPUT, f"inputs[{index}] has both binary data and 'data'")
    return size


def _values(index: int, entry: dict[str, Any], data: memoryview) -> list[Any]:
    """A binary input's values as a flat list of Python scalars, as JSON would give them."""
    where = f"inputs[{index}]"
    datatype = entry.get("datatype")
    if not isinstance(datatype, str) or datatype not in ALL_DATATYPES:
        raise InvalidRequest(Reason.BAD_DATATYPE, f"{where}: datatype is not a V2 datatype")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidRequest(
            Reason.BAD_SHAPE, f"{where}: shape must be a list of non-negative integers"
        )
    count = math.prod(shape)
    if datatype == "BYTES":
        return _strings(where, count, data)
    dtype = _FIXED_DTYPES[datatype]
    if count * dtype.itemsize != len(data):
        raise InvalidRequest(
            Reason.BINARY_SIZE_MISMATCH,
            f"{where}: shape {shape} of {datatype} takes {count * dtype.itemsize} bytes but "
            f"binary_data_size is {len(data)}",
        )
    array = np.frombuffer(data, dtype=dtype)
    if datatype == "BOOL":
        if np.any(array > 1):
            raise InvalidRequest(Reason.BAD_VALUE, f"{where}: a BOOL byte is neither 0 nor 1")
        return array.astype(bool).tolist()  # type: ignore[no-any-return]
    values: list[Any] = array.tolist()
    if array.dtype.kind == "f":  # NaN is how a binary tensor says missing (JSON's null)
        return [None if math.isnan(v) else v for v in values]
    return values


def _strings(where: str, count: int, data: memoryview) -> list[Any]:
    size = len(data)
    if count * _LENGTH_PREFIX > size:  # before looping over a shape of any size
        raise _bytes_mismatch(where, count, size)
    buffer = data.tobytes()  # bytes slice and decode several times faster than a memoryview
    elements = []
    offset = 0
    for _ in range(count):
        start = offset + _LENGTH_PREFIX
        if start > size:
            raise _bytes_mismatch(where, count, size)
        offset = start + _LENGTH.unpack_from(buffer, offset)[0]
        if offset > size:
            raise _bytes_mismatch(where, count, size)
        elements.append(buffer[start:offset])
    if offset != size:
        raise _bytes_mismatch(where, count, size)
    try:
        return [element.decode() for element in elements]
    except UnicodeDecodeError as err:
        bad = next(i for i, e in enumerate(elements) if not _is_utf8(e))
        raise InvalidRequest(Reason.BAD_VALUE, f"{where}: element {bad} is not UTF-8") from err


def _is_utf8(element: bytes) -> bool:
    try:
        element.decode()
    except UnicodeDecodeError:
        return False
    return True


def _bytes_mismatch(where: str, count: int, size: int) -> InvalidRequest:
    return InvalidRequest(
        Reason.BINARY_SIZE_MISMATCH,
        f"{where}: binary_data_size {size} does not hold exactly {count} length-prefixed "
        f"BYTES element(s)",
    )


@dataclass(frozen=True)
class OutputEncoding:
    """Which outputs a request wants as binary data."""

    default_binary: bool = False  # the request's binary_data_output
    binary: Mapping[str, bool] = field(default_factory=dict)  # outputs' own binary_data

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.default_binary)


def output_encoding(body: Any) -> OutputEncoding:
    """What a (decoded) request asks for; a request the parser refuses asks for JSON."""
    if not isinstance(body, dict):
        return OutputEncoding()
    default = _flag(body.get("parameters"), BINARY_DATA_OUTPUT, "")
    outputs = body.get("outputs")
    binary = {}
    if isinstance(outputs, list):
        for index, output in enumerate(outputs):
            if isinstance(output, dict) and isinstance(output.get("name"), str):
                flag = _flag(output.get("parameters"), BINARY_DATA, f"outputs[{index}]: ")
                if flag is not None:
                    binary[output["name"]] = flag
    return OutputEncoding(default or False, binary)


def _flag(parameters: Any, key: str, where: str) -> bool | None:
    if not isinstance(parameters, dict) or key not in parameters:
        return None
    value = parameters[key]
    if type(value) is not bool:
        raise InvalidRequest(Reason.BAD_PARAMETERS, f"{where}{key} must be true or false")
    return value


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    header_length: int | None  # the JSON header's length when binary outputs follow it

    @property
    def content_type(self) -> str:
        return JSON_CONTENT_TYPE if self.header_length is None else BINARY_CONTENT_TYPE

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.header_length is None else {HEADER_LENGTH: str(self.header_length)}


def encode_response(payload: Mapping[str, Any], encoding: OutputEncoding) -> EncodedResponse:
    """A V2 response with its `outputs` (JSON tensors) binary as `encoding` says. Raises
    ValueError for NaN or infinite numbers, binary or not, as JSON encoding does."""
    tensors, chunks = [], []
    for tensor in payload["outputs"]:
        if not encoding.is_binary(tensor["name"]):
            tensors.append(tensor)
            continue
        if tensor["datatype"] in _FLOAT_DATATYPES and not np.all(np.isfinite(tensor["data"])):
            raise ValueError(f"output {tensor['name']!r} has NaN or infinite values")
        data = tensor_bytes(tensor["datatype"], tensor["data"])
        header = {key: value for key, value in tensor.items() if key != "data"}
        header["parameters"] = {**tensor.get("parameters", {}), BINARY_DATA_SIZE: len(data)}
        tensors.append(header)
        chunks.append(data)
    body = encode_json({**payload, "outputs": tensors})
    if not chunks:
        return EncodedResponse(body, None)
    return EncodedResponse(body + b"".join(chunks), len(body))


def tensor_bytes(datatype: str, values: list[Any]) -> bytes:
    """A tensor's flat values in the extension's layout (NaN as is: for requests it is a
    missing value)."""
    if datatype == "BYTES":
        encoded = [v if isinstance(v, bytes) else str(v).encode() for v in values]
        return b"".join(len(v).to_bytes(_LENGTH_PREFIX, "little") + v for v in encoded)
    return np.asarray(values, dtype=_FIXED_DTYPES[datatype]).tobytes()
