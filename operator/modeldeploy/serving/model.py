"""Loading a model from its directory and calling it on a batch of feature columns."""

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from modeldeploy.serving.config import FORMAT_FRAMEWORKS, ModelConfig, ModelDirError

Columns = Mapping[str, npt.NDArray[Any]]
Preprocess = Callable[[dict[str, npt.NDArray[Any]]], Mapping[str, npt.ArrayLike]]


@dataclass(frozen=True)
class Prediction:
    """A batch of predictions: class labels (with `classes`) or regression values."""

    values: npt.NDArray[Any]
    probabilities: npt.NDArray[np.float64] | None = None  # rows x classes
    classes: tuple[Any, ...] | None = None  # set for classifiers, in probability order

    @property
    def classification(self) -> bool:
        return self.classes is not None

    @property
    def confidence(self) -> npt.NDArray[np.float64] | None:
        if self.probabilities is None:
            return None
        return np.asarray(self.probabilities.max(axis=1), dtype=np.float64)


class Model(Protocol):
    def predict(self, columns: Columns) -> Prediction: ...


class SklearnModel:
    """A fitted scikit-learn estimator (or Pipeline) fed a 2-D array in profile order."""

    def __init__(self, estimator: Any, feature_names: Sequence[str]) -> None:
        self.estimator = estimator
        self.features = tuple(feature_names)
        expected = getattr(estimator, "n_features_in_", len(self.features))
        if expected != len(self.features):
            raise ModelDirError(
                f"the estimator takes {expected} features but the profile has "
                f"{len(self.features)}: {', '.join(self.features)}"
            )
        classes = getattr(estimator, "classes_", None)
        self._classes = None if classes is None else tuple(np.asarray(classes).tolist())
        self._class_array = None if classes is None else np.asarray(classes)
        self._proba = self._classes is not None and hasattr(estimator, "predict_proba")

    def matrix(self, columns: Columns) -> npt.NDArray[Any]:
        """The columns as the estimator takes them (its explanations too)."""
        cols = [columns[name] for name in self.features]
        if all(col.dtype.kind == "f" for col in cols):
            return np.column_stack(cols)
        matrix = np.empty((len(cols[0]), len(cols)), dtype=object)
        for j, col in enumerate(cols):
            matrix[:, j] = col
        return matrix

    def predict(self, columns: Columns) -> Prediction:
        x = self.matrix(columns)
        if self._proba and self._class_array is not None:
            probabilities = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
            values = self._class_array[probabilities.argmax(axis=1)]
            return Prediction(values, probabilities, self._classes)
        return Prediction(np.asarray(self.estimator.predict(x)), None, self._classes)


class CallableModel:
    """A `module:callable` taking the feature columns; it returns a Prediction, a mapping
    with Prediction's fields, or an array of labels/values."""

    def __init__(self, function: Callable[[Columns], Any]) -> None:
        self._function = function

    def predict(self, columns: Columns) -> Prediction:
        return as_prediction(self._function(columns))


def as_prediction(result: Any) -> Prediction:
    if isinstance(result, Prediction):
        return result
    if isinstance(result, Mapping):
        probabilities = result.get("probabilities")
        classes = result.get("classes")
        return Prediction(
            values=np.asarray(result["values"]),
            probabilities=None if probabilities is None else np.asarray(probabilities, float),
            classes=None if classes is None else tuple(classes),
        )
    return Prediction(np.asarray(result))


def resolve_callable(spec: str, model_dir: Path) -> Callable[..., Any]:
    """Imports `module:attr` with the model directory first on the import path."""
    module_name, _, attr_path = spec.partition(":")
    directory = str(model_dir.resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr_path.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ModelDirError(f"cannot load {spec!r} from {model_dir}: {err}") from err
    if not callable(target):
        raise ModelDirError(f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def load_model(config: ModelConfig, model_dir: Path, feature_names: Sequence[str]) -> Model:
    if config.framework == "python":
        assert config.entrypoint is not None  # guaranteed by ModelConfig
        return CallableModel(resolve_callable(config.entrypoint, model_dir))
    if config.framework in FORMAT_FRAMEWORKS:
        from modeldeploy.serving.formats import load_format_model  # imports its library

        return load_format_model(config, model_dir, feature_names)
    import joblib  # the sklearn extra; only images serving joblib models need it

    path = model_dir / config.artifact
    try:
        estimator = joblib.load(path)
    except (OSError, ValueError, EOFError, ImportError) as err:
        raise ModelDirError(f"cannot load {path}: {err}") from err
    return SklearnModel(estimator, feature_names)


def load_preprocess(config: ModelConfig, model_dir: Path) -> Preprocess | None:
    if config.preprocess is None:
        return None
    return resolve_callable(config.preprocess, model_dir)
