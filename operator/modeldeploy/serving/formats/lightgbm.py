"""LightGBM boosters in their text model file: `framework: lightgbm`.

Feature names come from the booster (`feature_name()`). Categorical features trained from a
DataFrame's category columns keep their categories in the model file (`pandas_categorical`):
a string is coded as its index there, an unseen category or a missing value as NaN (missing),
as LightGBM itself does, so no pandas is needed to serve. Objectives `binary` and
`multiclass` answer class probabilities; `multiclassova` and ranking are refused; the rest
answer values.
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
    require,
)
from modeldeploy.serving.model import Columns, Prediction

PROBABILITY_OBJECTIVES = ("binary", "multiclass")
REFUSED_OBJECTIVES = ("multiclassova", "lambdarank", "rank_xendcg")


class LightGBMModel:
    def __init__(
        self,
        booster: Any,
        order: tuple[str, ...],
        categories: dict[str, dict[Any, float]],
        classes: tuple[Label, ...] | None,
    ) -> None:
        self._booster = booster
        self._order = order
        self._categories = categories  # feature -> {category: code}
        self._classes = classes

    def _column(self, name: str, values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        codes = self._categories.get(name)
        if codes is None:
            return np.asarray(values, dtype=np.float64)
        return np.array([codes.get(v, np.nan) for v in values], dtype=np.float64)

    def predict(self, columns: Columns) -> Prediction:
        matrix = np.column_stack([self._column(n, columns[n]) for n in self._order])
        output = self._booster.predict(matrix)
        if self._classes is None:
            return Prediction(np.asarray(output, dtype=np.float64).reshape(-1))
        return classified(output, self._classes)


def _categories(booster: Any, order: tuple[str, ...], path: Path) -> dict[str, dict[Any, float]]:
    indexes = booster.params.get("categorical_feature") or []
    if isinstance(indexes, int):
        indexes = [indexes]
    vocabularies = booster.pandas_categorical or []
    if indexes and len(vocabularies) != len(indexes):
        raise ModelDirError(
            f"{path} has categorical features without their categories (train it from a "
            "DataFrame with category columns, which LightGBM saves with the model)"
        )
    return {
        order[int(i)]: {category: float(code) for code, category in enumerate(vocabulary)}
        for i, vocabulary in zip(indexes, vocabularies, strict=True)
    }


def load(
    path: Path, feature_names: Sequence[str], classes: Sequence[Label] | None
) -> LightGBMModel:
    lgb = require("lightgbm", "lightgbm")
    try:
        booster = lgb.Booster(model_file=str(path))
    except (lgb.basic.LightGBMError, OSError) as err:
        raise ModelDirError(f"cannot load {path}: {err}") from err
    order = feature_order(booster.feature_name(), booster.num_feature(), feature_names, path)
    categories = _categories(booster, order, path)
    objective = str(booster.params.get("objective", "regression")).split()[0]
    if objective in PROBABILITY_OBJECTIVES:
        count = max(2, booster.num_model_per_iteration())
        return LightGBMModel(booster, order, categories, class_labels(classes, count, path))
    if objective in REFUSED_OBJECTIVES:
        raise ModelDirError(f"{path}: objective {objective} is not served (no probabilities)")
    if classes is not None:
        raise ModelDirError(f"model.yaml names classes but {path} is a regressor ({objective})")
    return LightGBMModel(booster, order, categories, None)
