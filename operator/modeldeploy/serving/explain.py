"""Per-row feature attributions (SHAP values) of a model's answer, named by its inputs.

An attribution says how much one input moved one row's answer away from the answer expected
over the training data. Attributions of a row sum to its answer minus `expected`, in the
model's margin (`space`): the log-odds of the positive class for logistic and boosted
classifiers, the probability for forests and single trees, the value for regressors.

- Linear models (sklearn.linear_model): exact interventional SHAP, `coef * (z - mean z)`,
  computed with numpy, against the *background*: training rows as the model consumed them,
  sampled into the profile at build time (`Profile.background`), so the reference is part
  of the image and never drifts from the model.
- Tree ensembles and trees: shap's path-dependent TreeSHAP (the `explain` extra), exact,
  against the training rows as each node counted them (`_tree` says why not the background).
- Pipelines: the preprocessing steps' output columns are traced back to the input each came
  from (a scaled column to its input, each one-hot column to its category's input) and their
  attributions summed per input. Only steps whose every output column depends on a single
  input are traced (`_sources`); anything else is refused, as multi-class models and models
  that are python callables are: never an approximation passed off as an answer.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.serving.model import Columns, Model, SklearnModel

Matrix = npt.NDArray[np.float64]
Attribute = Callable[[Matrix], Matrix]  # transformed rows -> their columns' attributions


class CannotExplain(Exception):
    """This model's answers cannot be attributed exactly; the message says why."""


@dataclass(frozen=True)
class Explainer:
    """Attributions of one model: `explain` maps model columns to rows x features."""

    features: tuple[str, ...]
    space: str  # what the attributions add up to, e.g. "log-odds of 'churn'"
    expected: float  # the mean answer over the training data, in `space`
    model: SklearnModel
    transform: Any  # the Pipeline's preprocessing steps, or None
    group: Matrix  # transformed columns x features: 1 where a column came from a feature
    attribute: Attribute

    def explain(self, columns: Columns) -> Matrix:
        attributions: Matrix = self.attribute(self._transformed(columns)) @ self.group
        return attributions

    def _transformed(self, columns: Columns) -> Matrix:
        x = self.model.matrix(columns)
        return _dense(x if self.transform is None else self.transform.transform(x))


def explainer_for(model: Model, background: Columns) -> Explainer:
    """The explainer of `model` against `background` (model columns); CannotExplain when its
    answers cannot be attributed exactly."""
    if not isinstance(model, SklearnModel):
        raise CannotExplain(
            "a python callable model cannot be explained: only scikit-learn estimators "
            "(linear models, tree ensembles) and their Pipelines can"
        )
    transform, final = _split(model.estimator)
    x = model.matrix(background)
    z = _dense(x if transform is None else transform.transform(x))
    sources = np.arange(x.shape[1]) if transform is None else _sources(transform, x.shape[1])
    if len(sources) != z.shape[1]:
        raise CannotExplain(
            f"the preprocessing makes {z.shape[1]} columns but {len(sources)} could be traced "
            "back to the model's inputs"
        )
    group = np.zeros((z.shape[1], x.shape[1]))
    group[np.arange(z.shape[1]), sources] = 1.0
    space, expected, attribute = _attribution(final, z)
    return Explainer(model.features, space, expected, model, transform, group, attribute)


def _dense(matrix: Any) -> Matrix:
    if hasattr(matrix, "toarray"):  # a sparse one-hot encoding
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=np.float64)


def _split(estimator: Any) -> tuple[Any, Any]:
    """(the preprocessing steps or None, the final estimator)."""
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline):
        return None, estimator
    steps = [s for _, s in estimator.steps[:-1] if s not in (None, "passthrough")]
    return (estimator[:-1] if steps else None), estimator.steps[-1][1]


def _positive_class(estimator: Any) -> Any | None:
    """The class whose margin is explained (binary classifiers); None for regressors."""
    from sklearn.base import is_classifier

    if not is_classifier(estimator):
        return None
    classes = np.asarray(getattr(estimator, "classes_", ())).tolist()  # plain str or int
    if len(classes) != 2:
        raise CannotExplain(
            f"{type(estimator).__name__} has {len(classes)} classes: only binary classifiers "
            "and regressors are explained (one margin per row)"
        )
    return classes[1]


# --- the final estimator --------------------------------------------------------------------


def _attribution(estimator: Any, background: Matrix) -> tuple[str, float, Attribute]:
    name = type(estimator).__name__
    if type(estimator).__module__.startswith("sklearn.linear_model") and hasattr(
        estimator, "coef_"
    ):
        return _linear(estimator, background)
    if _is_tree_model(estimator):
        return _tree(estimator)
    raise CannotExplain(
        f"{name} cannot be explained: supported are scikit-learn linear models and tree "
        "models (DecisionTree, RandomForest, ExtraTrees, GradientBoosting, "
        "HistGradientBoosting)"
    )


def _linear(estimator: Any, background: Matrix) -> tuple[str, float, Attribute]:
    from sklearn.linear_model import (
        GammaRegressor,
        LogisticRegression,
        PoissonRegressor,
        TweedieRegressor,
    )

    if isinstance(estimator, PoissonRegressor | GammaRegressor | TweedieRegressor):
        # Their value is the link's inverse of the linear part: not additive in the inputs.
        raise CannotExplain(
            f"{type(estimator).__name__} cannot be explained: a generalised linear model's "
            "value is not linear in its inputs"
        )
    positive = _positive_class(estimator)
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] != 1:
        raise CannotExplain(f"{type(estimator).__name__} has {coef.shape[0]} outputs, not one")
    weights = coef.ravel()
    intercept = float(np.asarray(estimator.intercept_, dtype=np.float64).ravel()[0])
    mean = background.mean(axis=0)
    expected = float(mean @ weights + intercept)
    if positive is None:
        space = "value"
    elif isinstance(estimator, LogisticRegression):
        space = f"log-odds of {positive!r}"
    else:
        space = f"decision margin of {positive!r}"

    def attribute(z: Matrix) -> Matrix:
        # Exact for a linear margin: each column's share is its weight times its distance
        # from the background's mean (interventional SHAP with independent features).
        shares: Matrix = (z - mean) * weights
        return shares

    return space, expected, attribute


_TREE_MODELS = (
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "ExtraTreeClassifier",
    "ExtraTreeRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
)
# Their raw output, which TreeExplainer attributes: boosting's is the log-odds.
_PROBABILITY_TREES = ("DecisionTree", "ExtraTree", "RandomForest", "ExtraTrees")


def _is_tree_model(estimator: Any) -> bool:
    kind = type(estimator)
    return kind.__name__ in _TREE_MODELS and kind.__module__.startswith(
        ("sklearn.tree", "sklearn.ensemble")
    )


def _tree(estimator: Any) -> tuple[str, float, Attribute]:
    name = type(estimator).__name__
    positive = _positive_class(estimator)
    try:
        import shap  # the explain extra
    except ImportError as err:
        raise CannotExplain(
            f"{name} is explained by shap, which is not installed "
            f"(pip install 'modeldeploy[explain]'): {err}"
        ) from err
    # Path-dependent TreeSHAP: relative to the training rows as the trees saw them (each
    # node's cover), not the background. Exact (additive to 1e-14) and 10-100x faster than
    # interventional SHAP against the background, which in shap 0.51 missed additivity by up
    # to 0.05 of probability on some rows of a 20-tree forest (measured on the unit tests'
    # data, which now check additivity to 1e-9).
    explainer = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent")
    # Binary forests and trees attribute both classes' probabilities: the positive one's.
    expectations = np.ravel(explainer.expected_value)
    column = 1 if len(expectations) == 2 else None
    expected = expectations[column or 0]
    if positive is None:
        space = "value"
    elif name.startswith(_PROBABILITY_TREES):
        space = f"probability of {positive!r}"
    else:
        space = f"log-odds of {positive!r}"

    def attribute(z: Matrix) -> Matrix:
        values = np.asarray(explainer.shap_values(z, check_additivity=False), dtype=np.float64)
        return values if column is None else np.asarray(values[..., column])

    return space, float(expected), attribute


# --- tracing preprocessing output columns back to inputs -----------------------------------


def _sources(step: Any, width: int) -> npt.NDArray[np.intp]:
    """For each output column of a fitted preprocessing `step` fed `width` columns, the
    index of the one input it was computed from; CannotExplain for a step that mixes inputs
    or is not known to keep them apart."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, KBinsDiscretizer, OneHotEncoder

    identity = np.arange(width)
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return identity
    if isinstance(step, FunctionTransformer) and step.func is None:
        return identity  # how a fitted ColumnTransformer holds a passthrough
    if isinstance(step, Pipeline):
        sources = identity
        for _, inner in step.steps:
            sources = sources[_sources(inner, len(sources))]
        return sources
    if isinstance(step, ColumnTransformer):
        return _column_transformer_sources(step, width)
    if isinstance(step, OneHotEncoder):
        counts = [len(c) for c in step.categories_]
        dropped = step.drop_idx_ if step.drop_idx_ is not None else [None] * width
        return np.repeat(
            identity, [n - (d is not None) for n, d in zip(counts, dropped, strict=True)]
        )
    if isinstance(step, KBinsDiscretizer):
        bins = np.asarray(step.n_bins_) if step.encode != "ordinal" else np.ones(width, int)
        return np.repeat(identity, bins)
    if isinstance(step, SimpleImputer):
        kept = identity
        if not step.keep_empty_features:  # all-missing columns in training are dropped
            kept = identity[[not _is_nan(v) for v in step.statistics_]]
        indicators = step.indicator_.features_ if step.add_indicator else []
        return np.concatenate([kept, np.asarray(indicators, dtype=np.intp)]).astype(np.intp)
    if type(step).__name__ in _ONE_TO_ONE and type(step).__module__.startswith("sklearn."):
        return identity
    raise CannotExplain(
        f"the preprocessing step {type(step).__name__} cannot be traced back to the model's "
        f"inputs (supported: ColumnTransformer, Pipeline, OneHotEncoder, KBinsDiscretizer, "
        f"SimpleImputer, {', '.join(_ONE_TO_ONE)})"
    )


# Steps whose every output column is one input column, transformed on its own.
_ONE_TO_ONE = (
    "StandardScaler",
    "MinMaxScaler",
    "MaxAbsScaler",
    "RobustScaler",
    "PowerTransformer",
    "QuantileTransformer",
    "OrdinalEncoder",
)


def _column_transformer_sources(step: Any, width: int) -> npt.NDArray[np.intp]:
    names = list(getattr(step, "feature_names_in_", ()))
    parts = []
    for _, transformer, columns in step.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        picked = _column_indices(columns, width, names)
        if len(picked) == 0:  # a selection of no columns makes no output
            continue
        parts.append(picked[_sources(transformer, len(picked))])
    return np.concatenate(parts).astype(np.intp) if parts else np.arange(0)


def _column_indices(columns: Any, width: int, names: Sequence[str]) -> npt.NDArray[np.intp]:
    if isinstance(columns, str) or (
        isinstance(columns, list | tuple) and columns and isinstance(columns[0], str)
    ):
        wanted = [columns] if isinstance(columns, str) else list(columns)
        return np.asarray([names.index(c) for c in wanted], dtype=np.intp)
    indices: npt.NDArray[np.intp] = np.arange(width)[columns].reshape(-1)
    return indices


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
