"""Feature attributions (serving/explain.py): exact for linear models, shap's for trees,
pipelines' columns summed back to their inputs, refusals; the request parameter, the
metrics and their sample."""

import random
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shap
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, OrdinalEncoder, StandardScaler

from modeldeploy import contract as c
from modeldeploy.profile_schema import ClassificationOutput, Profile
from modeldeploy.profiling.build import background_request
from modeldeploy.profiling.stats import profile_feature
from modeldeploy.serving.attribution_sampler import AttributionSampler
from modeldeploy.serving.explain import CannotExplain, Explainer, explainer_for
from modeldeploy.serving.model import CallableModel, Columns, SklearnModel
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import ATTRIBUTIONS_OUTPUT, InferencePipeline
from modeldeploy.serving.protocol import InvalidRequest, Reason, RequestParser

pytestmark = pytest.mark.unit

ROWS = 400
NUMERIC = ("tenure", "charges", "calls")


def _data(seed: int = 3) -> tuple[Columns, np.ndarray]:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, ROWS).astype(np.float64)
    charges = rng.normal(65, 18, ROWS)
    calls = rng.poisson(2, ROWS).astype(np.float64)
    calls[rng.random(ROWS) < 0.05] = np.nan  # missing: the pipeline imputes
    contract = np.empty(ROWS, dtype=object)
    contract[:] = rng.choice(["monthly", "one-year", "two-year"], ROWS).tolist()
    score = -0.05 * tenure + 0.03 * charges + 0.4 * np.nan_to_num(calls, nan=2.0)
    score += np.where(contract == "monthly", 1.0, -0.5)
    labels = np.where(score + rng.normal(0, 1, ROWS) > 1.5, "churn", "stay")
    columns = {"tenure": tenure, "charges": charges, "calls": calls, "contract": contract}
    return columns, labels


def _numeric(columns: Columns) -> Columns:
    return {name: np.nan_to_num(columns[name], nan=2.0) for name in NUMERIC}


def _fit(estimator: Any, columns: Columns, target: np.ndarray) -> SklearnModel:
    estimator.fit(SklearnModel(estimator, list(columns)).matrix(columns), target)
    return SklearnModel(estimator, list(columns))  # fitted: it knows the classes


def _mixed_pipeline(final: Any) -> Any:
    """The churn example's shape: integer columns, imputed and scaled, one-hot encoded."""
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    encode = ColumnTransformer(
        [("numeric", numeric, [0, 1, 2]), ("categorical", OneHotEncoder(), [3])]
    )
    return make_pipeline(encode, final)


def _rows(columns: Columns, picked: slice) -> Columns:
    return {name: values[picked] for name, values in columns.items()}


def test_linear_attributions_are_exact_in_log_odds() -> None:
    columns, labels = _data()
    numeric = _numeric(columns)
    model = _fit(LogisticRegression(max_iter=1000), numeric, labels)
    background = _rows(numeric, slice(0, 100))
    explainer = explainer_for(model, background)
    asked = _rows(numeric, slice(100, 140))
    attributions = explainer.explain(asked)
    x = model.matrix(asked)
    margin = model.estimator.decision_function(x)
    assert attributions.shape == (40, 3)
    np.testing.assert_allclose(attributions.sum(axis=1) + explainer.expected, margin)
    assert explainer.space == "log-odds of 'stay'"
    # The same as shap's own, exact linear explainer against that background.
    reference = shap.LinearExplainer(model.estimator, model.matrix(background))
    np.testing.assert_allclose(attributions, reference.shap_values(x))


def test_a_regressors_attributions_sum_to_its_value_minus_the_expected_one() -> None:
    columns, _ = _data()
    numeric = _numeric(columns)
    target = 3.0 * numeric["tenure"] - numeric["calls"]
    model = _fit(Ridge(), numeric, target)
    explainer = explainer_for(model, _rows(numeric, slice(0, 50)))
    asked = _rows(numeric, slice(50, 60))
    predicted = model.estimator.predict(model.matrix(asked))
    np.testing.assert_allclose(explainer.explain(asked).sum(axis=1) + explainer.expected, predicted)
    assert explainer.space == "value"


def test_a_pipelines_columns_are_summed_back_to_the_input_they_came_from() -> None:
    columns, labels = _data()
    model = _fit(_mixed_pipeline(LogisticRegression()), columns, labels)
    explainer = explainer_for(model, _rows(columns, slice(0, 100)))
    asked = _rows(columns, slice(100, 120))
    attributions = explainer.explain(asked)
    assert explainer.features == ("tenure", "charges", "calls", "contract")
    assert attributions.shape == (20, 4)
    x = model.matrix(asked)
    margin = model.estimator.decision_function(x)
    np.testing.assert_allclose(attributions.sum(axis=1) + explainer.expected, margin)
    # contract's attribution is its three one-hot columns' (weight x distance from the mean).
    transform = model.estimator[:-1]
    z = transform.transform(x)
    background = transform.transform(model.matrix(_rows(columns, slice(0, 100))))
    weights = model.estimator[-1].coef_[0]
    one_hot = (z - background.mean(axis=0))[:, 3:] * weights[3:]
    np.testing.assert_allclose(attributions[:, 3], one_hot.sum(axis=1))


def _brute_force(model: SklearnModel, background: Columns, asked: Columns) -> np.ndarray:
    """Interventional SHAP of an additive model by its definition: input j's attribution is
    the mean, over background rows, of the answer with j set to the asked row's value less
    the answer on the background row."""
    x, b = model.matrix(asked), model.matrix(background)
    base = model.estimator.predict(b)
    attributions = np.empty(x.shape)
    for i in range(len(x)):
        for j in range(x.shape[1]):
            mixed = b.copy()
            mixed[:, j] = x[i, j]
            attributions[i, j] = (model.estimator.predict(mixed) - base).mean()
    return attributions


def test_traced_columns_give_the_attributions_of_the_definition() -> None:
    """Imputer indicators, one-hot bins, a nested pipeline and a passthrough remainder."""
    columns, _ = _data()
    target = columns["tenure"] * 0.3 - np.nan_to_num(columns["calls"]) + columns["charges"] / 9
    target = target + np.where(columns["contract"] == "monthly", 4.0, 0.0)
    encode = ColumnTransformer(
        [
            ("calls", SimpleImputer(strategy="median", add_indicator=True), [2]),
            ("tenure", KBinsDiscretizer(n_bins=4, encode="onehot"), [0]),
            ("contract", make_pipeline(OrdinalEncoder(), StandardScaler()), [3]),
        ],
        remainder="passthrough",  # charges
    )
    model = _fit(make_pipeline(encode, Ridge()), columns, target)
    background, asked = _rows(columns, slice(0, 60)), _rows(columns, slice(60, 72))
    explainer = explainer_for(model, background)
    np.testing.assert_allclose(
        explainer.explain(asked), _brute_force(model, background, asked), atol=1e-9
    )


@pytest.mark.parametrize(
    ("estimator", "space", "answer"),
    [
        (GradientBoostingClassifier(n_estimators=30), "log-odds of 'stay'", "margin"),
        (RandomForestClassifier(n_estimators=20, max_depth=5), "probability of 'stay'", "p"),
        (ExtraTreesClassifier(n_estimators=20, max_depth=5), "probability of 'stay'", "p"),
    ],
)
def test_tree_attributions_sum_to_the_models_raw_answer(
    estimator: Any, space: str, answer: str
) -> None:
    columns, labels = _data()
    model = _fit(_mixed_pipeline(estimator), columns, labels)
    explainer = explainer_for(model, _rows(columns, slice(0, 100)))
    asked = _rows(columns, slice(100, 110))
    x = model.matrix(asked)
    if answer == "p":
        expected_answer = model.estimator.predict_proba(x)[:, 1]
    else:
        expected_answer = model.estimator.decision_function(x)
    attributions = explainer.explain(asked)
    assert attributions.shape == (10, 4)
    assert explainer.space == space
    np.testing.assert_allclose(
        attributions.sum(axis=1) + explainer.expected, expected_answer, atol=1e-9
    )


def test_histogram_boosting_explains_missing_values_natively() -> None:
    columns, _ = _data()
    numeric = {name: columns[name] for name in NUMERIC}  # calls has NaN; HGB takes them
    target = 2.0 * numeric["tenure"] + np.nan_to_num(numeric["calls"])
    model = _fit(HistGradientBoostingRegressor(max_iter=30), numeric, target)
    explainer = explainer_for(model, _rows(numeric, slice(0, 100)))
    asked = _rows(numeric, slice(100, 120))
    predicted = model.estimator.predict(model.matrix(asked))
    attributions = explainer.explain(asked)
    np.testing.assert_allclose(attributions.sum(axis=1) + explainer.expected, predicted, atol=1e-9)


def _refusal(model: Any, background: Columns) -> str:
    with pytest.raises(CannotExplain) as refused:
        explainer_for(model, background)
    return str(refused.value)


def test_a_tree_model_without_shap_is_refused_with_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    columns, labels = _data()
    numeric = _numeric(columns)
    model = _fit(GradientBoostingClassifier(n_estimators=5), numeric, labels)
    monkeypatch.setitem(sys.modules, "shap", None)  # what an image without the extra has
    assert "pip install 'modeldeploy[explain]'" in _refusal(model, _rows(numeric, slice(0, 9)))


def test_models_that_cannot_be_attributed_exactly_are_refused() -> None:
    columns, labels = _data()
    numeric = _numeric(columns)
    background = _rows(numeric, slice(0, 50))
    callable_model = CallableModel(lambda cols: np.zeros(len(cols["tenure"])))
    assert "python callable" in _refusal(callable_model, background)
    knn = _fit(KNeighborsClassifier(), numeric, labels)
    assert "KNeighborsClassifier cannot be explained" in _refusal(knn, background)
    three = np.where(numeric["tenure"] > 40, "long", labels)
    multiclass = _fit(LogisticRegression(max_iter=1000), numeric, three)
    assert "3 classes" in _refusal(multiclass, background)
    poisson = _fit(PoissonRegressor(), numeric, numeric["calls"])
    assert "not linear in its inputs" in _refusal(poisson, background)
    mixing = _fit(make_pipeline(PCA(2), LogisticRegression()), numeric, labels)
    assert "PCA cannot be traced" in _refusal(mixing, background)


# --- the request parameter -------------------------------------------------------------------


def _features(columns: Columns) -> list[Any]:
    types = {"contract": "string"}
    return [
        profile_feature(name, values, types.get(name, "float"), nullable=name == "calls")
        for name, values in columns.items()
    ]


def _request(explain: Any = True, rows: int = 3) -> dict[str, Any]:
    columns, _ = _data()
    features = _features(columns)
    body = background_request(features, _rows(columns, slice(200, 200 + rows)), rows, seed=0)
    assert body is not None
    return {**body, "parameters": {"explain": explain}}


def test_parameters_explain_adds_the_attributions_as_an_output() -> None:
    columns, labels = _data()
    model = _fit(_mixed_pipeline(LogisticRegression()), columns, labels)
    explainer = explainer_for(model, _rows(columns, slice(0, 100)))
    pipeline = InferencePipeline(_features(columns), model, explainer=explainer)
    inference = pipeline.infer(_request())
    tensor = next(o for o in inference.outputs if o["name"] == ATTRIBUTIONS_OUTPUT)
    assert tensor["shape"] == [3, 4]
    assert tensor["datatype"] == "FP64"
    assert tensor["parameters"] == {
        "features": ["tenure", "charges", "calls", "contract"],
        "expected_value": explainer.expected,
        "space": "log-odds of 'stay'",
    }
    assert inference.attributions is not None
    assert tensor["data"] == inference.attributions.ravel().tolist()
    plain = pipeline.infer({k: v for k, v in _request().items() if k != "parameters"})
    assert plain.attributions is None
    assert ATTRIBUTIONS_OUTPUT not in [o["name"] for o in plain.outputs]
    with pytest.raises(InvalidRequest) as bad:
        pipeline.infer(_request(explain="yes"))
    assert bad.value.reason == Reason.BAD_PARAMETERS


def test_a_model_that_cannot_be_explained_refuses_the_request_before_it_runs() -> None:
    columns, _ = _data()
    calls: list[int] = []

    def predict(cols: Columns) -> np.ndarray:
        calls.append(1)
        return np.zeros(len(cols["tenure"]))

    refusal = CannotExplain("a python callable model cannot be explained")
    for explainer, why in ((refusal, "python callable"), (None, "no background rows")):
        pipeline = InferencePipeline(
            _features(columns), CallableModel(predict), explainer=explainer
        )
        with pytest.raises(InvalidRequest) as refused:
            pipeline.infer(_request())
        assert (refused.value.reason, refused.value.status) == (Reason.CANNOT_EXPLAIN, 400)
        assert why in refused.value.message
    assert calls == []


def test_the_background_request_is_a_seeded_sample_the_parser_takes() -> None:
    columns, _ = _data()
    features = _features(columns)
    body = background_request(features, columns, 100, seed=5)
    assert body == background_request(features, columns, 100, seed=5)
    parsed = RequestParser(features, max_batch=1000).parse(body)
    assert parsed.rows == 100
    assert background_request(features, columns, 0, seed=5) is None
    assert RequestParser(features, 1000).parse(background_request(features, columns, 10**6, 5))


# --- the metrics and their sample ------------------------------------------------------------


def _profile(columns: Columns) -> Profile:
    output = ClassificationOutput(classes=["churn", "stay"], baseline={"churn": 0.3})
    return Profile(rows=ROWS, features=_features(columns), output=output)


def _attribution_samples(monitor: Monitor) -> dict[tuple[str, str], float]:
    body, _ = monitor.exposition()
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if "attribution" in sample.name or "explained" in sample.name:
                samples[sample.name, sample.labels.get(c.LABEL_FEATURE, "")] = sample.value
    return samples


def test_attributions_are_counted_as_positive_and_negative_sums_per_feature() -> None:
    columns, _ = _data()
    monitor = Monitor(_profile(columns), Identity("m", "1", "r"), attributions=True)
    assert _attribution_samples(monitor)[c.ATTRIBUTION_POSITIVE_TOTAL, "contract"] == 0
    monitor.observe_attributions(np.array([[1.0, -2.0, 0.0, 0.5], [-0.5, -1.0, 0.25, 0.5]]))
    samples = _attribution_samples(monitor)
    assert samples[c.ATTRIBUTION_POSITIVE_TOTAL, "tenure"] == 1.0
    assert samples[c.ATTRIBUTION_NEGATIVE_TOTAL, "tenure"] == 0.5
    assert samples[c.ATTRIBUTION_NEGATIVE_TOTAL, "charges"] == 3.0
    assert samples[c.ATTRIBUTION_POSITIVE_TOTAL, "contract"] == 1.0
    assert samples[c.EXPLAINED_ROWS_TOTAL, ""] == 2
    quiet = Monitor(_profile(columns), Identity("m", "1", "r"))
    quiet.observe_attributions(np.ones((1, 4)))
    assert _attribution_samples(quiet) == {}


def test_the_sample_explains_drawn_requests_and_reuses_asked_for_attributions() -> None:
    columns, labels = _data()
    model = _fit(_mixed_pipeline(LogisticRegression()), columns, labels)
    explainer = explainer_for(model, _rows(columns, slice(0, 100)))
    assert isinstance(explainer, Explainer)
    pipeline = InferencePipeline(_features(columns), model, explainer=explainer)
    monitor = Monitor(_profile(columns), Identity("m", "1", "r"), attributions=True)
    sampler = AttributionSampler(pipeline, monitor, 1.0, random.Random(1))
    asked = pipeline.infer(_request(rows=2))
    sampler.offer(asked)  # counted at once, with the attributions the request asked for
    assert _attribution_samples(monitor)[c.EXPLAINED_ROWS_TOTAL, ""] == 2
    plain = pipeline.infer({k: v for k, v in _request(rows=3).items() if k != "parameters"})
    sampler.offer(plain)
    assert sampler._running is not None
    sampler._running.result(timeout=30)
    assert _attribution_samples(monitor)[c.EXPLAINED_ROWS_TOTAL, ""] == 5
    sampler.close()
    never = AttributionSampler(pipeline, monitor, 0.0)
    never.offer(asked)
    assert _attribution_samples(monitor)[c.EXPLAINED_ROWS_TOTAL, ""] == 5
    never.close()


# --- packaging -------------------------------------------------------------------------------


def _requirements(extras: dict[str, list[str]], extra: str) -> set[str]:
    """An extra's requirements, the extras it names expanded."""
    found = set()
    for requirement in extras[extra]:
        if requirement.startswith("modeldeploy["):
            for inner in requirement.removeprefix("modeldeploy[").rstrip("]").split(","):
                found |= _requirements(extras, inner)
        else:
            found.add(requirement)
    return found


def test_shap_comes_with_the_explain_extra_and_dev_only_not_the_model_images() -> None:
    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    with_shap = {e for e in extras if any(r.startswith("shap") for r in _requirements(extras, e))}
    assert with_shap == {"explain", "dev"}
    # The example model image installs these extras: no shap (its model is linear).
    assert (
        "sh images/venv.sh serve,sklearn\n" in (root / "examples/churn/Containerfile").read_text()
    )
