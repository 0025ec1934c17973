"""Model formats other than scikit-learn's, one module each (xgboost.py, lightgbm.py,
onnx.py, mlflow.py), each behind an optional extra of the same name: a module is imported
only when a model.yaml names its framework, so the runtime never loads a library it does
not serve.

Each module's `load(path, feature_names, classes)` returns a `serving.model.Model`. The
model file says which features it takes and in what order; `feature_order` checks them
against the profile, so a model and a profile that disagree never serve.
"""

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.serving.config import FORMAT_FRAMEWORKS, ModelConfig, ModelDirError
from modeldeploy.serving.model import Model, Prediction

Label = str | int


def load_format_model(config: ModelConfig, model_dir: Path, feature_names: Sequence[str]) -> Model:
    assert config.framework in FORMAT_FRAMEWORKS  # the caller dispatches on it
    module = importlib.import_module(f"{__name__}.{config.framework}")
    model: Model = module.load(model_dir / config.artifact, feature_names, config.classes)
    return model


def require(library: str, framework: str) -> ModuleType:
    """Imports a format's library, or says which extra brings it in."""
    try:
        return importlib.import_module(library)
    except ImportError as err:
        raise ModelDirError(
            f"framework {framework} needs the {library} library, which is not installed: "
            f"install modeldeploy[{framework}] ({err})"
        ) from err


def feature_order(
    model_names: Sequence[str] | None, width: int, profile_names: Sequence[str], path: Path
) -> tuple[str, ...]:
    """The profile's features in the order the model takes them: by the names the model
    file keeps, else (a model without names) by position, when the counts agree."""
    profile = tuple(profile_names)
    if not model_names:
        if width != len(profile):
            raise ModelDirError(
                f"{path} takes {width} unnamed features but the profile has {len(profile)}: "
                f"{', '.join(profile)}"
            )
        return profile
    names = tuple(model_names)
    missing = [n for n in names if n not in profile]
    unused = [n for n in profile if n not in names]
    if missing or unused or len(set(names)) != len(names):
        raise ModelDirError(
            f"{path} and the profile disagree on the features: the model takes "
            f"{', '.join(names)}; not in the profile: {', '.join(missing) or '-'}; "
            f"in the profile only: {', '.join(unused) or '-'}"
        )
    return names


def class_labels(classes: Sequence[Label] | None, count: int, path: Path) -> tuple[Label, ...]:
    """model.yaml's `classes`, which must number the model's classes; else 0..count-1."""
    if classes is None:
        return tuple(range(count))
    if len(classes) != count:
        raise ModelDirError(
            f"model.yaml names {len(classes)} classes but {path} has {count}: "
            f"{', '.join(map(str, classes))}"
        )
    return tuple(classes)


def classified(probabilities: npt.ArrayLike, classes: tuple[Label, ...]) -> Prediction:
    """Class probabilities (rows x classes, or a binary model's P(class 1)) as a Prediction."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1 or p.shape[1] == 1:
        positive = p.reshape(-1)
        p = np.column_stack([1.0 - positive, positive])
    labels: npt.NDArray[Any] = np.asarray(classes, dtype=object)[p.argmax(axis=1)]
    if all(isinstance(c, int) for c in classes):
        labels = labels.astype(np.int64)
    return Prediction(labels, p, classes)


def float_matrix(columns: Any, order: Sequence[str], dtype: Any = np.float64) -> npt.NDArray[Any]:
    """Numeric columns stacked in the model's order."""
    return np.column_stack([np.asarray(columns[name], dtype=dtype) for name in order])
