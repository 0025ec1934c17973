"""MLflow models (`framework: mlflow`): `artifact` an MLflow model directory (its `MLmodel`
file and the flavor's files), loaded through its `python_function` flavor by mlflow-skinny.

The pyfunc model takes a DataFrame of the features, named as its signature's inputs (which
must be the profile's) or, without a signature, as the profile's. It answers probabilities
only when it was logged with `pyfunc_predict_fn="predict_proba"`; the classes are
model.yaml's `classes`, else the underlying estimator's `classes_`, else 0..k-1. Logged
with plain `predict`, a classifier answers labels only (no confidence, probabilities,
confidence metrics or low-confidence fallback; the model metadata says so)
and anything else is a regressor. The flavor's own library (scikit-learn for an sklearn
model) must be installed beside it. A scikit-learn model serialized with skops, which
mlflow-skinny does not bring, is refused unless skops is installed.
"""

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modeldeploy.serving.config import ModelDirError
from modeldeploy.serving.formats import Label, class_labels, classified, feature_order, require
from modeldeploy.serving.model import Columns, Prediction

MLMODEL_FILE = "MLmodel"
PROBABILITY_FN = "predict_proba"
# MLflow's own switch: the runtime never reports usage anywhere (it may only talk to clients).
TELEMETRY_ENV = "MLFLOW_DISABLE_TELEMETRY"


def read_mlmodel(directory: Path) -> dict[str, Any]:
    """The directory's MLmodel document; refuses one without a python_function flavor."""
    path = directory / MLMODEL_FILE
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ModelDirError(f"cannot load {directory}: no readable {MLMODEL_FILE} ({err})") from err
    flavors = document.get("flavors") if isinstance(document, dict) else None
    if not isinstance(flavors, dict) or not isinstance(flavors.get("python_function"), dict):
        raise ModelDirError(f"{path} has no python_function flavor: it cannot be served as pyfunc")
    read: dict[str, Any] = document
    return read


def _refuse_skops(document: dict[str, Any], directory: Path) -> None:
    sklearn = document["flavors"].get("sklearn") or {}
    if sklearn.get("serialization_format") == "skops" and not importlib.util.find_spec("skops"):
        raise ModelDirError(
            f"{directory} is a scikit-learn model serialized with skops, which mlflow-skinny "
            "cannot load without the skops library: log it with "
            'serialization_format="cloudpickle" (or install skops into the image)'
        )


def _signature_names(pyfunc: Any) -> list[str] | None:
    schema = pyfunc.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return None
    return [str(name) for name in schema.input_names()]


def _raw_model(pyfunc: Any) -> Any | None:
    """The flavor's own model (the scikit-learn estimator), when the flavor exposes it."""
    try:
        return pyfunc.get_raw_model()
    except (NotImplementedError, AttributeError):
        return None


class MlflowModel:
    def __init__(
        self,
        pyfunc: Any,
        order: tuple[str, ...],
        classes: tuple[Label, ...] | None,
        probabilities: bool,
        renamed: dict[Any, Label] | None = None,
    ) -> None:
        self._pyfunc = pyfunc
        self._order = order
        self._classes = classes
        self.probabilities = probabilities
        self._renamed = renamed  # labels-only: the estimator's class -> model.yaml's

    def predict(self, columns: Columns) -> Prediction:
        pd = require("pandas", "mlflow")
        frame = pd.DataFrame({name: columns[name] for name in self._order})
        output = np.asarray(self._pyfunc.predict(frame))
        if self.probabilities:
            width = output.shape[-1] if output.ndim == 2 else 2
            classes = self._classes or tuple(range(width))
            if len(classes) != width:
                raise ValueError(f"{width} class probabilities for {len(classes)} classes")
            return classified(output, classes)
        values = output.reshape(-1)
        if self._classes is None:
            if values.dtype.kind not in "biuf":
                raise ValueError(
                    f"the model answers {values.dtype} values, not numbers: a classifier "
                    "without an estimator's classes_ needs model.yaml's classes"
                )
            return Prediction(np.asarray(values, dtype=np.float64))
        if self._renamed is not None:
            values = np.array([self._renamed[v] for v in values.tolist()], dtype=object)
        return Prediction(values, None, self._classes)


def load(path: Path, feature_names: Sequence[str], classes: Sequence[Label] | None) -> MlflowModel:
    document = read_mlmodel(path)
    _refuse_skops(document, path)
    os.environ.setdefault(TELEMETRY_ENV, "true")  # before mlflow is imported
    require("mlflow", "mlflow")
    import mlflow.pyfunc

    try:
        pyfunc = mlflow.pyfunc.load_model(str(path))
    except ImportError as err:
        raise ModelDirError(
            f"cannot load {path}: its flavor needs a library that is not installed ({err}); "
            "an sklearn model needs modeldeploy[mlflow,sklearn]"
        ) from err
    except Exception as err:  # MLflow raises its own and its flavors' errors
        raise ModelDirError(f"cannot load {path}: {err}") from err
    names = _signature_names(pyfunc)
    order = feature_order(names, len(names or feature_names), feature_names, path)
    probabilities = document["flavors"]["python_function"].get("predict_fn") == PROBABILITY_FN
    raw = _raw_model(pyfunc)
    own = getattr(raw, "classes_", None)
    estimator = None if own is None else tuple(np.asarray(own).tolist())
    if classes is None:
        return MlflowModel(pyfunc, order, estimator, probabilities)
    if raw is not None and estimator is None:
        raise ModelDirError(f"model.yaml names classes but {path} is a regressor (no classes_)")
    if estimator is None:
        return MlflowModel(pyfunc, order, tuple(classes), probabilities)
    labels = class_labels(classes, len(estimator), path)
    renamed = None if probabilities else dict(zip(estimator, labels, strict=True))
    return MlflowModel(pyfunc, order, labels, probabilities, renamed)
