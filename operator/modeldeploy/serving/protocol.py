"""Open Inference Protocol (V2) requests: decoding and validation against the profile.

One input tensor per feature, named as in the profile, shape [batch] or [batch, 1]:

    {"id": "42", "inputs": [
        {"name": "tenure_months", "shape": [2], "datatype": "INT64", "data": [3, 40]},
        {"name": "contract", "shape": [2, 1], "datatype": "BYTES", "data": [["one-year"], [null]]}]}

`null` is a missing value, allowed for nullable features (an absent nullable feature is
missing in every row). Every rejection is an InvalidRequest whose reason is a label of
`invalid_requests_total` and whose message names the input and the problem. Every field is
checked by type before it is used, and messages quote client values only as short scalars
(never exception text): a malformed request is the client's fault, a 4xx, never a 500.
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.profile_schema import FeatureProfile


class Reason(StrEnum):
    BAD_JSON = "bad_json"
    BODY_TOO_LARGE = "body_too_large"
    NOT_AN_OBJECT = "not_an_object"
    BAD_ID = "bad_id"
    BAD_PARAMETERS = "bad_parameters"
    NO_INPUTS = "no_inputs"
    BAD_INPUT = "bad_input"
    DUPLICATE_INPUT = "duplicate_input"
    UNKNOWN_INPUT = "unknown_input"
    MISSING_INPUT = "missing_input"
    BAD_DATATYPE = "bad_datatype"
    BAD_SHAPE = "bad_shape"
    SHAPE_MISMATCH = "shape_mismatch"
    BATCH_MISMATCH = "batch_mismatch"
    BATCH_TOO_LARGE = "batch_too_large"
    BAD_VALUE = "bad_value"
    NON_FINITE = "non_finite"
    NULL_VALUE = "null_value"
    BAD_OUTPUTS = "bad_outputs"
    UNKNOWN_OUTPUT = "unknown_output"
    UNKNOWN_MODEL = "unknown_model"
    # parameters.explain on a model that cannot be explained (serving/explain.py says why).
    CANNOT_EXPLAIN = "cannot_explain"
    BODY_TIMEOUT = "body_timeout"  # 408: the body did not arrive within the read timeout
    # The binary tensor data extension (binary.py): Inference-Header-Content-Length not a
    # length within the body; binary bytes not what the inputs' binary_data_size say.
    BAD_BINARY_HEADER = "bad_binary_header"
    BINARY_SIZE_MISMATCH = "binary_size_mismatch"
    # Label requests (labels.py): no 'labels' list, an entry not {id, index, label}, a row
    # index not a non-negative integer, a label not a class / finite number, too many.
    NO_LABELS = "no_labels"
    BAD_LABEL = "bad_label"
    BAD_LABEL_INDEX = "bad_label_index"
    BAD_LABEL_VALUE = "bad_label_value"
    TOO_MANY_LABELS = "too_many_labels"


class InvalidRequest(Exception):
    def __init__(self, reason: Reason, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


INTEGER_DATATYPES = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
NUMERIC_DATATYPES = INTEGER_DATATYPES | {"FP16", "FP32", "FP64"}
DATATYPES = {
    "float": NUMERIC_DATATYPES,
    "int": NUMERIC_DATATYPES,
    "bool": frozenset({"BOOL"}),
    "string": frozenset({"BYTES"}),
}
ALL_DATATYPES = NUMERIC_DATATYPES | {"BOOL", "BYTES"}
# The datatype a request should use per feature type (model metadata, golden requests).
PREFERRED_DATATYPE = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}
_SCALAR_TYPES = {"float": (int, float), "int": (int, float), "bool": (bool,), "string": (str,)}
_TYPE_WORDS = {"float": "a number", "int": "a number", "bool": "true/false", "string": "a string"}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    rows: int
    columns: dict[str, npt.NDArray[Any]]  # per feature: float64 (NaN missing) or object
    inputs: dict[str, list[Any]]  # the values as sent, for the prediction log
    outputs: tuple[str, ...] | None  # requested output names; None = all
    explain: bool = False  # parameters.explain: attributions asked for (serving/explain.py)


def decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidRequest(Reason.BAD_JSON, "request body is not valid JSON") from err


def encode_json(payload: Any) -> bytes:
    """Compact JSON; ValueError for NaN or infinite numbers (JSON has none)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def short_value(value: Any, limit: int = 40) -> str:
    """A client value for a message, truncated: scalars and flat lists quoted, objects and
    nested lists only named, so a message never serialises whatever nesting was sent."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list) and any(isinstance(v, list | dict) for v in value):
        return "a nested list"
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# The request parameter asking for the outputs' feature attributions.
EXPLAIN_PARAMETER = "explain"
# V2 parameters: an object of string, number or boolean values.
_PARAMETER_TYPES = (str, int, float, bool)


def _check_parameters(parameters: Any, where: str) -> None:
    if parameters is None:
        return
    if not isinstance(parameters, dict) or not all(
        type(v) in _PARAMETER_TYPES for v in parameters.values()
    ):
        raise InvalidRequest(
            Reason.BAD_PARAMETERS,
            f"{where}'parameters' must be an object of string, number or boolean values",
        )


def _names(names: Iterable[str], limit: int = 12) -> str:
    listed = list(names)
    shown = ", ".join(listed[:limit])
    return shown + (f" (+{len(listed) - limit} more)" if len(listed) > limit else "")


class RequestParser:
    """Validates V2 request bodies against a profile's features (pure; no I/O)."""

    def __init__(self, features: Sequence[FeatureProfile], max_batch: int) -> None:
        self._features = {f.name: f for f in features}
        self._max_batch = max_batch

    def parse(self, body: Any) -> InferRequest:
        if not isinstance(body, dict):
            raise InvalidRequest(
                Reason.NOT_AN_OBJECT,
                "request body must be a JSON object with an 'inputs' list",
            )
        request_id = body.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise InvalidRequest(Reason.BAD_ID, "'id' must be a string")
        parameters = body.get("parameters")
        _check_parameters(parameters, "")
        explain = (parameters or {}).get(EXPLAIN_PARAMETER, False)
        if type(explain) is not bool:
            raise InvalidRequest(
                Reason.BAD_PARAMETERS, f"parameters.{EXPLAIN_PARAMETER} must be true or false"
            )
        entries = body.get("inputs")
        if not isinstance(entries, list) or not entries:
            raise InvalidRequest(
                Reason.NO_INPUTS,
                f"'inputs' must be a non-empty list of tensors, one per feature: "
                f"{_names(self._features)}",
            )
        outputs = self._requested_outputs(body.get("outputs"))
        columns: dict[str, npt.NDArray[Any]] = {}
        inputs: dict[str, list[Any]] = {}
        rows_by_input: dict[str, int] = {}
        for index, entry in enumerate(entries):
            name, rows, data = self._tensor(index, entry)
            if name in columns:
                raise InvalidRequest(Reason.DUPLICATE_INPUT, f"input {name!r} appears twice")
            rows_by_input[name] = rows
            columns[name] = self._column(self._features[name], data)
            inputs[name] = data
        rows = self._batch_size(rows_by_input)
        for feature in self._features.values():
            if feature.name in columns:
                continue
            if not feature.nullable:
                missing = [n for n in self._features if n not in columns]
                raise InvalidRequest(Reason.MISSING_INPUT, f"missing input(s): {_names(missing)}")
            columns[feature.name] = _missing_column(feature, rows)
        ordered = {name: columns[name] for name in self._features}
        return InferRequest(request_id, rows, ordered, inputs, outputs, explain)

    def _batch_size(self, rows_by_input: dict[str, int]) -> int:
        sizes = set(rows_by_input.values())
        if len(sizes) > 1:
            detail = ", ".join(f"{n}={r}" for n, r in rows_by_input.items())
            raise InvalidRequest(
                Reason.BATCH_MISMATCH, f"inputs disagree on the batch size: {detail}"
            )
        rows = sizes.pop()
        if rows > self._max_batch:
            raise InvalidRequest(
                Reason.BATCH_TOO_LARGE, f"batch of {rows} rows exceeds the limit {self._max_batch}"
            )
        return rows

    @staticmethod
    def _requested_outputs(outputs: Any) -> tuple[str, ...] | None:
        if outputs is None:
            return None
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise InvalidRequest(
                Reason.BAD_OUTPUTS, "'outputs' must be a list of objects with a 'name'"
            )
        for index, output in enumerate(outputs):
            _check_parameters(output.get("parameters"), f"outputs[{index}]: ")
        return tuple(o["name"] for o in outputs)

    def _tensor(self, index: int, entry: Any) -> tuple[str, int, list[Any]]:
        where = f"inputs[{index}]"
        if not isinstance(entry, dict):
            raise InvalidRequest(
                Reason.BAD_INPUT, f"{where} must be an object with name, shape, datatype, data"
            )
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(Reason.BAD_INPUT, f"{where} has no 'name'")
        feature = self._features.get(name)
        if feature is None:
            raise InvalidRequest(
                Reason.UNKNOWN_INPUT,
                f"unknown input {short_value(name)}; the model takes: {_names(self._features)}",
            )
        _check_parameters(entry.get("parameters"), f"input {name!r}: ")
        datatype = entry.get("datatype")
        if not isinstance(datatype, str) or datatype not in ALL_DATATYPES:
            raise InvalidRequest(
                Reason.BAD_DATATYPE,
                f"input {name!r}: datatype {short_value(datatype)} is not a V2 datatype",
            )
        if datatype not in DATATYPES[feature.type]:
            raise InvalidRequest(
                Reason.BAD_DATATYPE,
                f"input {name!r} is a {feature.type} feature; datatype {datatype} does not "
                f"fit (use {PREFERRED_DATATYPE[feature.type]})",
            )
        shape = entry.get("shape")
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(type(d) is int and d >= 0 for d in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise InvalidRequest(
                Reason.BAD_SHAPE,
                f"input {name!r}: shape {short_value(shape)} must be [batch] or [batch, 1]",
            )
        rows = shape[0]
        if rows == 0:
            raise InvalidRequest(Reason.BAD_SHAPE, f"input {name!r}: empty batch (shape {shape})")
        data = entry.get("data")
        if not isinstance(data, list):
            raise InvalidRequest(Reason.BAD_INPUT, f"input {name!r}: 'data' must be a list")
        if len(shape) == 2 and data and all(type(v) is list and len(v) == 1 for v in data):
            data = [v[0] for v in data]  # nested rows, as some clients send [batch, 1]
        if len(data) != rows:
            raise InvalidRequest(
                Reason.SHAPE_MISMATCH,
                f"input {name!r}: shape {short_value(shape)} holds {short_value(rows)} value(s) "
                f"but data has {len(data)}",
            )
        if datatype in INTEGER_DATATYPES:
            for i, value in enumerate(data):
                if type(value) is float:
                    raise InvalidRequest(
                        Reason.BAD_VALUE,
                        f"input {name!r}: data[{i}] = {short_value(value)} is not an integer "
                        f"({datatype})",
                    )
        return name, rows, data

    @staticmethod
    def _column(feature: FeatureProfile, data: list[Any]) -> npt.NDArray[Any]:
        name = feature.name
        allowed = _SCALAR_TYPES[feature.type]
        nulls = 0
        for i, value in enumerate(data):
            if value is None:
                if not feature.nullable:
                    raise InvalidRequest(
                        Reason.NULL_VALUE,
                        f"input {name!r}: data[{i}] is null but the feature is not nullable",
                    )
                nulls += 1
            elif type(value) not in allowed:
                raise InvalidRequest(
                    Reason.BAD_VALUE,
                    f"input {name!r}: data[{i}] = {short_value(value)} is not "
                    f"{_TYPE_WORDS[feature.type]}",
                )
        if not feature.numeric:
            column = np.empty(len(data), dtype=object)
            column[:] = data
            return column
        try:
            numbers = np.array(data, dtype=np.float64)  # None -> NaN
        except OverflowError as err:
            raise InvalidRequest(
                Reason.NON_FINITE, f"input {name!r}: a value is too large for a float"
            ) from err
        if np.count_nonzero(~np.isfinite(numbers)) != nulls:
            raise InvalidRequest(
                Reason.NON_FINITE, f"input {name!r}: NaN and infinite values are not allowed"
            )
        return numbers


def _missing_column(feature: FeatureProfile, rows: int) -> npt.NDArray[Any]:
    if feature.numeric:
        return np.full(rows, np.nan)
    return np.full(rows, None, dtype=object)


def input_tensor(feature: FeatureProfile, values: Sequence[Any]) -> dict[str, Any]:
    """A V2 input tensor for one feature's values (missing -> null)."""
    convert = _JSON_SCALAR[feature.type]
    data = [None if _is_missing(v) else convert(v) for v in values]
    return {
        "name": feature.name,
        "shape": [len(data)],
        "datatype": PREFERRED_DATATYPE[feature.type],
        "data": data,
    }


_JSON_SCALAR: dict[str, Any] = {"float": float, "int": int, "bool": bool, "string": str}


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
