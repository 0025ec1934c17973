"""ONNX models run by onnxruntime (CPU): `framework: onnx`, `artifact` an .onnx file.

The graph's inputs say how it takes the features: one input per feature, named as in the
profile (each a [rows] or [rows, 1] tensor of its own type: float, double, int64 or string,
so a converted pipeline can take categories as strings; a missing string is ""), or a single
[rows, N] float tensor whose N features are the profile's, in its order. A classifier has
two outputs, labels and a [rows, classes] probability tensor (skl2onnx and onnxmltools with
zipmap=False); a graph with one output is a regressor, one value per row.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.serving.config import ModelDirError
from modeldeploy.serving.formats import (
    Label,
    class_labels,
    classified,
    feature_order,
    float_matrix,
    require,
)
from modeldeploy.serving.model import Columns, Prediction

TENSOR_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(string)": np.str_,
}


class OnnxModel:
    def __init__(
        self,
        session: Any,
        feeds: dict[str, tuple[Any, int]] | None,
        matrix: tuple[str, tuple[str, ...], Any] | None,
        classes: tuple[Label, ...] | None,
    ) -> None:
        self._session = session
        self._feeds = feeds  # per-feature inputs: name -> (numpy type, rank)
        self._matrix = matrix  # a single input: (its name, the features in order, its type)
        self._classes = classes

    def _inputs(self, columns: Columns) -> dict[str, npt.NDArray[Any]]:
        if self._matrix is not None:
            name, order, dtype = self._matrix
            return {name: float_matrix(columns, order, dtype)}
        assert self._feeds is not None
        return {
            name: _tensor(columns[name], dtype, rank) for name, (dtype, rank) in self._feeds.items()
        }

    def predict(self, columns: Columns) -> Prediction:
        outputs = self._session.run(None, self._inputs(columns))
        if self._classes is None:
            return Prediction(np.asarray(outputs[0], dtype=np.float64).reshape(-1))
        return classified(outputs[1], self._classes)


def _tensor(values: npt.NDArray[Any], dtype: Any, rank: int) -> npt.NDArray[Any]:
    if dtype is np.str_:
        column = np.array(["" if v is None else str(v) for v in values], dtype=object)
    else:
        column = np.asarray(values, dtype=dtype)
    return column.reshape(-1, 1) if rank == 2 else column


def _input_type(node: Any, path: Path) -> Any:
    dtype = TENSOR_TYPES.get(node.type)
    if dtype is None or len(node.shape) not in (1, 2):
        raise ModelDirError(
            f"{path}: input {node.name} is a {node.type} of shape {node.shape}; inputs must be "
            f"[rows] or [rows, n] tensors of {', '.join(TENSOR_TYPES)}"
        )
    return dtype


def _classifier_width(outputs: Sequence[Any], path: Path) -> int | None:
    """The number of classes of a classifier's probabilities, None for a regressor."""
    kinds = [o.type for o in outputs]
    if any(kind.startswith(("seq(", "map(")) for kind in kinds):
        raise ModelDirError(
            f"{path}: outputs {kinds} include maps: convert the classifier with zipmap=False "
            "so that its probabilities are a tensor"
        )
    if len(outputs) == 1:
        return None
    probabilities = outputs[1]
    width = probabilities.shape[-1] if len(probabilities.shape) == 2 else None
    if len(outputs) != 2 or probabilities.type not in TENSOR_TYPES or not isinstance(width, int):
        raise ModelDirError(
            f"{path}: a classifier needs two outputs, labels and [rows, classes] probabilities "
            f"with a fixed number of classes; it has {[(o.name, o.type, o.shape) for o in outputs]}"
        )
    return width


def load(path: Path, feature_names: Sequence[str], classes: Sequence[Label] | None) -> OnnxModel:
    ort = require("onnxruntime", "onnx")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelDirError(f"cannot load {path}: {err}") from err
    inputs = session.get_inputs()
    width = _classifier_width(session.get_outputs(), path)
    labels = None if width is None else class_labels(classes, width, path)
    if width is None and classes is not None:
        raise ModelDirError(f"model.yaml names classes but {path} is a regressor (one output)")
    single = inputs[0] if len(inputs) == 1 and inputs[0].name not in feature_names else None
    if single is not None:
        dtype = _input_type(single, path)
        columns = single.shape[-1] if len(single.shape) == 2 else None
        if not isinstance(columns, int) or dtype not in (np.float32, np.float64):
            raise ModelDirError(
                f"{path}: its one input {single.name} must be a [rows, N] float tensor with a "
                f"fixed N, or the graph must take one input per feature; it is {single.type} "
                f"{single.shape}"
            )
        order = feature_order(None, columns, feature_names, path)
        return OnnxModel(session, None, (single.name, order, dtype), labels)
    feature_order([node.name for node in inputs], len(inputs), feature_names, path)
    feeds = {node.name: (_input_type(node, path), len(node.shape)) for node in inputs}
    return OnnxModel(session, feeds, None, labels)
