"""XGBoost boosters in their native model file (JSON or UBJSON): `framework: xgboost`.

Feature names and types come from the booster. Its categorical features (type `c`, trained
from a DataFrame's category columns) are handed over as pandas categoricals, which XGBoost
re-codes to the categories it saved with the model (3.1+); an unseen category counts as
missing. Classifiers (`binary:logistic`, `multi:softprob`) answer class probabilities;
other `binary:`/`multi:` objectives (margins, hinge, softmax indexes) are refused.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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

PROBABILITY_OBJECTIVES = ("binary:logistic", "multi:softprob")


class XGBoostModel:
    def __init__(
        self,
        booster: Any,
        order: tuple[str, ...],
        categorical: frozenset[str],
        classes: tuple[Label, ...] | None,
    ) -> None:
        self._booster = booster
        self._order = order
        self._categorical = categorical
        self._classes = classes

    def _data(self, columns: Columns) -> Any:
        if not self._categorical:
            return float_matrix(columns, self._order)
        pd = require("pandas", "xgboost")
        return pd.DataFrame(
            {
                name: pd.Categorical(columns[name])
                if name in self._categorical
                else np.asarray(columns[name], dtype=np.float64)
                for name in self._order
            }
        )

    def predict(self, columns: Columns) -> Prediction:
        output = self._booster.inplace_predict(self._data(columns))
        if self._classes is None:
            return Prediction(np.asarray(output, dtype=np.float64).reshape(-1))
        return classified(output, self._classes)


def load(path: Path, feature_names: Sequence[str], classes: Sequence[Label] | None) -> XGBoostModel:
    xgb = require("xgboost", "xgboost")
    try:
        booster = xgb.Booster(model_file=str(path))
    except (xgb.core.XGBoostError, OSError) as err:
        raise ModelDirError(f"cannot load {path}: {err}") from err
    learner = json.loads(booster.save_config())["learner"]
    objective = learner["objective"]["name"]
    order = feature_order(booster.feature_names, booster.num_features(), feature_names, path)
    types = booster.feature_types or ["float"] * len(order)
    categorical = frozenset(name for name, kind in zip(order, types, strict=True) if kind == "c")
    if objective in PROBABILITY_OBJECTIVES:
        count = max(2, int(learner["learner_model_param"]["num_class"]))
        return XGBoostModel(booster, order, categorical, class_labels(classes, count, path))
    if objective.startswith(("binary:", "multi:")):
        raise ModelDirError(
            f"{path}: objective {objective} gives no class probabilities; train with "
            f"{' or '.join(PROBABILITY_OBJECTIVES)}"
        )
    if classes is not None:
        raise ModelDirError(f"model.yaml names classes but {path} is a regressor ({objective})")
    return XGBoostModel(booster, order, categorical, None)
