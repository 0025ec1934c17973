"""The binary tensor data extension's pure decoding and encoding (serving/binary.py): round
trips for every datatype, what a binary body stands for, and each malformed body's reason."""

import json
from typing import Any

import numpy as np
import pytest

from modeldeploy.serving.binary import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    OutputEncoding,
    decode_request,
    encode_response,
    framing_headers,
    output_encoding,
    tensor_bytes,
)
from modeldeploy.serving.protocol import InvalidRequest, Reason, encode_json

pytestmark = pytest.mark.unit


def _binary_input(name: str, datatype: str, values: list[Any]) -> tuple[dict[str, Any], bytes]:
    data = tensor_bytes(datatype, values)
    entry = {
        "name": name,
        "shape": [len(values)],
        "datatype": datatype,
        "parameters": {"binary_data_size": len(data)},
    }
    return entry, data


def _body(header: dict[str, Any], *tails: bytes) -> tuple[bytes, str]:
    """(body, Inference-Header-Content-Length) as a client sends them."""
    json_part = json.dumps(header).encode()
    return json_part + b"".join(tails), str(len(json_part))


ROUND_TRIPS = [
    ("BOOL", [True, False, True]),
    ("INT8", [-128, 0, 127]),
    ("INT16", [-32768, 1, 32767]),
    ("INT32", [-(2**31), 7, 2**31 - 1]),
    ("INT64", [-(2**63), 40, 2**63 - 1]),
    ("UINT8", [0, 255]),
    ("UINT16", [0, 65535]),
    ("UINT32", [0, 2**32 - 1]),
    ("UINT64", [0, 2**64 - 1]),
    ("FP16", [0.5, -2.0, 65504.0]),
    ("FP32", [0.25, -1.5]),
    ("FP64", [0.1, -1e300, 3.0]),
    ("BYTES", ["one-year", "", "zwei Jahre ü", "€"]),
]


@pytest.mark.parametrize(("datatype", "values"), ROUND_TRIPS)
def test_a_binary_input_stands_for_its_json_values(datatype: str, values: list[Any]) -> None:
    entry, data = _binary_input("x", datatype, values)
    raw, length = _body({"id": "7", "inputs": [entry]}, data)
    decoded = decode_request(raw, length)
    assert decoded["id"] == "7"
    assert decoded["inputs"] == [{**entry, "data": values}]
    assert [type(v) for v in decoded["inputs"][0]["data"]] == [type(v) for v in values]


def test_nan_is_a_missing_value_and_infinity_is_left_to_the_parser() -> None:
    entry, data = _binary_input("x", "FP32", [1.5, float("nan"), float("inf")])
    raw, length = _body({"inputs": [entry]}, data)
    assert decode_request(raw, length)["inputs"][0]["data"] == [1.5, None, float("inf")]


def test_the_layout_is_little_endian_with_length_prefixed_bytes() -> None:
    assert tensor_bytes("INT32", [1, 256]) == b"\x01\x00\x00\x00\x00\x01\x00\x00"
    assert tensor_bytes("BOOL", [True, False]) == b"\x01\x00"
    assert tensor_bytes("BYTES", ["ab", b"\xff"]) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00\xff"


def test_binary_and_json_inputs_mix_in_input_order() -> None:
    tenure, tenure_data = _binary_input("tenure", "INT64", [3, 40])
    contract = {"name": "contract", "shape": [2, 1], "datatype": "BYTES", "data": ["a", None]}
    plan, plan_data = _binary_input("plan", "BYTES", ["gold", "basic"])
    raw, length = _body({"inputs": [tenure, contract, plan]}, tenure_data, plan_data)
    decoded = decode_request(raw, length)["inputs"]
    assert [e.get("data") for e in decoded] == [[3, 40], ["a", None], ["gold", "basic"]]


def test_a_body_without_the_header_is_json_as_before() -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.5]}]}
    raw = json.dumps(body).encode()
    assert decode_request(raw, None) == body
    assert decode_request(raw, str(len(raw))) == body  # the header may cover the whole body


def test_a_shape_of_rows_times_one_is_flat_in_binary() -> None:
    entry, data = _binary_input("x", "FP64", [1.0, 2.0])
    entry["shape"] = [2, 1]
    raw, length = _body({"inputs": [entry]}, data)
    assert decode_request(raw, length)["inputs"][0]["data"] == [1.0, 2.0]


def _refusal(raw: bytes, length: str | None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(raw, length)
    return caught.value


def _header_of(entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"inputs": [{**entry, **changes}]}


FP64_ENTRY, FP64_DATA = _binary_input("x", "FP64", [1.0, 2.0])
BYTES_ENTRY, BYTES_DATA = _binary_input("s", "BYTES", ["ab", "c"])
ONE = {"binary_data_size": 8}

MALFORMED: list[tuple[str, bytes, str | None, Reason, str]] = [
    ("header not a number", b"{}", "twelve", Reason.BAD_BINARY_HEADER, "number of bytes"),
    ("header negative", b"{}", "-1", Reason.BAD_BINARY_HEADER, "number of bytes"),
    ("header not ASCII digits", b"{}", "\u00b2", Reason.BAD_BINARY_HEADER, "number of bytes"),
    ("header past the body", b"{}", "3", Reason.BAD_BINARY_HEADER, "exceeds the body's 2"),
    ("header of 5000 digits", b"{}", "9" * 5000, Reason.BAD_BINARY_HEADER, "exceeds the body"),
    ("header with leading zeros", b"{}", "0003", Reason.BAD_BINARY_HEADER, "exceeds the body"),
    ("header splits the JSON", *_body({"inputs": []})[:1], "5", Reason.BAD_JSON, "not valid"),
    (
        "size past the end",
        *_body(_header_of(FP64_ENTRY), FP64_DATA[:12]),
        Reason.BINARY_SIZE_MISMATCH,
        "runs past the end",
    ),
    (
        "bytes left over",
        *_body(_header_of(FP64_ENTRY), FP64_DATA, b"\x00"),
        Reason.BINARY_SIZE_MISMATCH,
        "add up to 16",
    ),
    (
        "binary bytes but no binary input",
        *_body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}, b"!"),
        Reason.BINARY_SIZE_MISMATCH,
        "add up to 0",
    ),
    (
        "binary bytes after no inputs at all",
        *_body({"id": "1"}, b"!"),
        Reason.BINARY_SIZE_MISMATCH,
        "add up to 0",
    ),
    (
        "binary_data_size without the header",
        json.dumps(_header_of(FP64_ENTRY)).encode(),
        None,
        Reason.BINARY_SIZE_MISMATCH,
        "runs past the end",
    ),
    (
        "size does not fit the shape",
        *_body(_header_of(FP64_ENTRY, shape=[3]), FP64_DATA),
        Reason.BINARY_SIZE_MISMATCH,
        "takes 24 bytes but binary_data_size is 16",
    ),
    (
        "size not an integer",
        *_body(_header_of(FP64_ENTRY, parameters={"binary_data_size": "16"}), FP64_DATA),
        Reason.BAD_PARAMETERS,
        "non-negative integer",
    ),
    (
        "size negative",
        *_body(_header_of(FP64_ENTRY, parameters={"binary_data_size": -1}), FP64_DATA),
        Reason.BAD_PARAMETERS,
        "non-negative integer",
    ),
    (
        "size a boolean",
        *_body(_header_of(FP64_ENTRY, parameters={"binary_data_size": True}), FP64_DATA),
        Reason.BAD_PARAMETERS,
        "non-negative integer",
    ),
    (
        "binary and JSON data at once",
        *_body(_header_of(FP64_ENTRY, data=[1.0, 2.0]), FP64_DATA),
        Reason.BAD_INPUT,
        "both binary data and 'data'",
    ),
    (
        "unknown datatype",
        *_body(_header_of(FP64_ENTRY, datatype="BF16"), FP64_DATA),
        Reason.BAD_DATATYPE,
        "not a V2 datatype",
    ),
    (
        "shape not a list",
        *_body(_header_of(FP64_ENTRY, shape="2"), FP64_DATA),
        Reason.BAD_SHAPE,
        "non-negative integers",
    ),
    (
        "shape negative",
        *_body(_header_of(FP64_ENTRY, shape=[-2]), FP64_DATA),
        Reason.BAD_SHAPE,
        "non-negative integers",
    ),
    (
        "BOOL byte neither 0 nor 1",
        *_body(_header_of(_binary_input("b", "BOOL", [True])[0]), b"\x02"),
        Reason.BAD_VALUE,
        "neither 0 nor 1",
    ),
    (
        "BYTES element not UTF-8",
        *_body(_header_of(_binary_input("s", "BYTES", [b"\xff"])[0]), b"\x01\0\0\0\xff"),
        Reason.BAD_VALUE,
        "element 0 is not UTF-8",
    ),
    (
        "BYTES fewer elements than the shape",
        *_body(_header_of(BYTES_ENTRY, shape=[3]), BYTES_DATA),
        Reason.BINARY_SIZE_MISMATCH,
        "exactly 3 length-prefixed",
    ),
    (
        "BYTES more elements than the shape",
        *_body(_header_of(BYTES_ENTRY, shape=[1]), BYTES_DATA),
        Reason.BINARY_SIZE_MISMATCH,
        "exactly 1 length-prefixed",
    ),
    (
        "BYTES length past its tensor",
        *_body(_header_of(BYTES_ENTRY, parameters={"binary_data_size": 8}), b"\x09\0\0\0abcd"),
        Reason.BINARY_SIZE_MISMATCH,
        "exactly 2 length-prefixed",
    ),
    (
        "BYTES length prefix cut short",
        *_body(_header_of(BYTES_ENTRY, parameters={"binary_data_size": 9}), b"\x02\0\0\0ab\0\0\0"),
        Reason.BINARY_SIZE_MISMATCH,
        "exactly 2 length-prefixed",
    ),
    (
        "BYTES a shape too large for the size",
        *_body(_header_of(BYTES_ENTRY, shape=[10**12]), BYTES_DATA),
        Reason.BINARY_SIZE_MISMATCH,
        "exactly 1000000000000",
    ),
]


@pytest.mark.parametrize(
    ("title", "raw", "length", "reason", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_binary_bodies_are_refused_with_a_reason(
    title: str, raw: bytes, length: str | None, reason: Reason, message: str
) -> None:
    refusal = _refusal(raw, length)
    assert (refusal.reason, refusal.status) == (reason, 400), refusal.message
    assert message in refusal.message


def test_inputs_the_parser_refuses_are_left_to_it() -> None:
    """Not an object, no inputs list, an input that is no object: the request parser's
    reasons, not the extension's."""
    for header in ([1], {"inputs": "x"}, {"inputs": [3]}):
        raw, length = _body(header)  # type: ignore[arg-type]
        assert decode_request(raw, length) == header


# --- outputs ---------------------------------------------------------------------------------

PAYLOAD = {
    "model_name": "m",
    "model_version": "1",
    "id": "7",
    "outputs": [
        {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["no", "yes"]},
        {"name": "confidence", "shape": [2], "datatype": "FP64", "data": [0.75, 0.5]},
        {
            "name": "probabilities",
            "shape": [2, 2],
            "datatype": "FP64",
            "data": [0.75, 0.25, 0.5, 0.5],
            "parameters": {"classes": ["no", "yes"]},
        },
    ],
}


def test_json_outputs_are_the_json_response() -> None:
    encoded = encode_response(PAYLOAD, OutputEncoding())
    assert encoded.body == encode_json(PAYLOAD)
    assert (encoded.header_length, encoded.content_type, encoded.headers) == (
        None,
        JSON_CONTENT_TYPE,
        {},
    )


def _read(encoded_body: bytes, header_length: int) -> dict[str, Any]:
    """What a client makes of a binary response (as tritonclient's InferResult does)."""
    header = json.loads(encoded_body[:header_length])
    offset = header_length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        chunk = encoded_body[offset : offset + size]
        offset += size
        if output["datatype"] == "BYTES":
            values, at = [], 0
            while at < len(chunk):
                n = int.from_bytes(chunk[at : at + 4], "little")
                values.append(chunk[at + 4 : at + 4 + n].decode())
                at += 4 + n
            output["data"] = values
        else:
            output["data"] = np.frombuffer(chunk, dtype="<f8").tolist()
        del output["parameters"]["binary_data_size"]
        if not output["parameters"]:
            del output["parameters"]
    assert offset == len(encoded_body)
    return header  # type: ignore[no-any-return]


def test_all_outputs_binary_round_trip() -> None:
    encoded = encode_response(PAYLOAD, OutputEncoding(default_binary=True))
    assert encoded.header_length is not None
    assert encoded.content_type == BINARY_CONTENT_TYPE
    assert encoded.headers == {HEADER_LENGTH: str(encoded.header_length)}
    header = json.loads(encoded.body[: encoded.header_length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [4 + 2 + 4 + 3, 16, 32]
    assert all("data" not in o for o in header["outputs"])
    assert header["outputs"][2]["parameters"]["classes"] == ["no", "yes"]
    assert _read(encoded.body, encoded.header_length) == PAYLOAD


def test_an_outputs_own_flag_overrides_the_requests() -> None:
    encoding = OutputEncoding(default_binary=True, binary={"label": False})
    encoded = encode_response(PAYLOAD, encoding)
    assert encoded.header_length is not None
    header = json.loads(encoded.body[: encoded.header_length])
    assert header["outputs"][0]["data"] == ["no", "yes"]
    assert _read(encoded.body, encoded.header_length) == PAYLOAD


def test_non_finite_numbers_fail_binary_or_not() -> None:
    payload = {"outputs": [{"name": "value", "shape": [1], "datatype": "FP64", "data": [np.nan]}]}
    for encoding in (OutputEncoding(), OutputEncoding(default_binary=True)):
        with pytest.raises(ValueError, match=r"NaN|not JSON compliant"):
            encode_response(payload, encoding)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"inputs": []}, OutputEncoding()),
        ({"parameters": {"binary_data_output": True}}, OutputEncoding(default_binary=True)),
        (
            {"outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "v"}]},
            OutputEncoding(binary={"label": True}),
        ),
        (
            {
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
            },
            OutputEncoding(default_binary=True, binary={"label": False}),
        ),
        ([], OutputEncoding()),  # the parser refuses these
        ({"outputs": "label", "parameters": []}, OutputEncoding()),
    ],
)
def test_output_encoding_is_what_the_request_asks(body: Any, expected: OutputEncoding) -> None:
    assert output_encoding(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        {"parameters": {"binary_data_output": 1}},
        {"outputs": [{"name": "label", "parameters": {"binary_data": "true"}}]},
    ],
)
def test_a_binary_flag_must_be_a_boolean(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        output_encoding(body)
    assert caught.value.reason == Reason.BAD_PARAMETERS


def test_a_mirrored_binary_body_keeps_its_framing() -> None:
    assert framing_headers(None) == {}
    assert framing_headers("12") == {HEADER_LENGTH: "12", "content-type": BINARY_CONTENT_TYPE}


def test_leading_zeros_are_a_length_still() -> None:
    raw = b'{"id": "1"}'
    assert decode_request(raw, "000" + str(len(raw))) == {"id": "1"}


def test_mangled_binary_bodies_are_decoded_or_refused_never_crash() -> None:
    """A seeded fuzz: a byte changed (JSON or binary part), the body cut, the header length
    moved. What comes out goes to protocol.RequestParser; here only InvalidRequest (a 400)
    may escape."""
    parts = [
        _binary_input("n", "FP64", [1.0, 2.5]),
        _binary_input("i", "INT64", [3, 4]),
        _binary_input("b", "BOOL", [True, False]),
        _binary_input("s", "BYTES", ["one-year", "ü"]),
    ]
    raw, length = _body({"inputs": [e for e, _ in parts]}, *(d for _, d in parts))
    rng = np.random.default_rng(20)
    decoded, statuses = 0, set()
    for _ in range(2000):
        mangled, header = bytearray(raw), int(length)
        how = rng.integers(4)
        if how == 0:  # a byte of the binary part
            mangled[rng.integers(header, len(raw))] = int(rng.integers(256))
        elif how == 1:  # a byte of the JSON part
            mangled[rng.integers(header)] = int(rng.integers(256))
        elif how == 2:
            del mangled[rng.integers(len(raw)) :]
        else:
            header += int(rng.choice([-2, -1, 1, 2]))
        try:
            decode_request(bytes(mangled), str(header))
            decoded += 1
        except InvalidRequest as refusal:
            statuses.add(refusal.status)
    assert statuses == {400}
    assert decoded > 100  # the binary part decoded, other values
