"""The model formats (serving/formats/): each loads its own model file, answers class
probabilities (classifiers) or values (regressors), takes the features by the names the
model keeps, refuses a model and profile that disagree, and names its extra when its
library is missing. The models are trained here, in milliseconds, on a small table."""

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from modeldeploy.profile_schema import ClassificationOutput, ConfidenceProfile, Profile
from modeldeploy.profiling.stats import profile_feature
from modeldeploy.serving.app import missing_probabilities
from modeldeploy.serving.config import ModelConfig, ModelDirError
from modeldeploy.serving.model import load_model

pytestmark = pytest.mark.unit

ROWS = 300
NAMES = ("amount", "visits", "plan")  # the profile's order
TRAINED = ("plan", "amount", "visits")  # the models' own order
CLASSES = ["no", "yes"]


def _table() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(3)
    amount = rng.normal(0, 1, ROWS)
    visits = rng.normal(0, 1, ROWS)
    visits[::17] = np.nan
    plan = np.array(rng.choice(["basic", "plus", "pro"], ROWS), dtype=object)
    label = (amount + (plan == "pro") * 1.5 + 0.3 * np.nan_to_num(visits)) > 0.5
    return {"plan": plan, "amount": amount, "visits": visits}, label.astype(int)


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        {n: pd.Categorical(columns[n]) if n == "plan" else columns[n] for n in TRAINED}
    )


def train_xgboost(directory: Path, regression: bool = False) -> str:
    import xgboost as xgb

    columns, label = _table()
    kind = xgb.XGBRegressor if regression else xgb.XGBClassifier
    model = kind(n_estimators=10, max_depth=2, enable_categorical=True, n_jobs=1)
    model.fit(_frame(columns), columns["amount"] if regression else label)
    model.get_booster().save_model(directory / "model.json")
    return "model.json"


def train_lightgbm(directory: Path, regression: bool = False) -> str:
    import lightgbm as lgb

    columns, label = _table()
    kind = lgb.LGBMRegressor if regression else lgb.LGBMClassifier
    model = kind(n_estimators=10, num_leaves=4, n_jobs=1, verbose=-1)
    model.fit(_frame(columns), columns["amount"] if regression else label)
    model.booster_.save_model(directory / "model.txt")
    return "model.txt"


def train_onnx(directory: Path, regression: bool = False) -> str:
    """A classifier taking one input per feature (strings too); a regressor taking one
    [rows, 2] float matrix (the numeric features only, as its profile has)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    columns, label = _table()
    if regression:
        matrix = np.column_stack([columns["amount"], columns["visits"]])
        model = make_pipeline(SimpleImputer(), LinearRegression()).fit(matrix, columns["amount"])
        graph = to_onnx(model, initial_types=[("x", FloatTensorType([None, 2]))])
    else:
        features = ColumnTransformer(
            [
                ("numeric", SimpleImputer(), ["amount", "visits"]),
                ("categorical", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ]
        )
        classifier = LogisticRegression()
        frame = pd.DataFrame({n: columns[n] for n in TRAINED})
        model = make_pipeline(features, classifier).fit(frame, label)
        types = {"plan": StringTensorType([None, 1])}
        inputs = [(n, types.get(n, FloatTensorType([None, 1]))) for n in TRAINED]
        graph = to_onnx(model, initial_types=inputs, options={id(classifier): {"zipmap": False}})
    (directory / "model.onnx").write_bytes(graph.SerializeToString())
    return "model.onnx"


def save_mlflow(directory: Path, regression: bool = False, predict_fn: str | None = None) -> str:
    """A scikit-learn pipeline as an MLflow model (its signature names the features); a
    classifier answers probabilities unless `predict_fn` says otherwise."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    columns, label = _table()
    frame = pd.DataFrame({n: columns[n] for n in TRAINED})
    plan = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="-"), OneHotEncoder(handle_unknown="ignore")
    )
    features = ColumnTransformer(
        [("numeric", SimpleImputer(), ["amount", "visits"]), ("categorical", plan, ["plan"])]
    )
    final = LinearRegression() if regression else LogisticRegression()
    model = make_pipeline(features, final).fit(frame, columns["amount"] if regression else label)
    artifact = "mlflow-model"
    mlflow.sklearn.save_model(
        model,
        directory / artifact,
        serialization_format="cloudpickle",  # mlflow-skinny has no skops (the default)
        signature=infer_signature(frame),
        pip_requirements=["scikit-learn"],  # else MLflow infers them (seconds)
        pyfunc_predict_fn=predict_fn or ("predict" if regression else "predict_proba"),
    )
    return artifact


def train_mlflow(directory: Path, regression: bool = False) -> str:
    return save_mlflow(directory, regression)


TRAINERS: dict[str, Callable[..., str]] = {
    "xgboost": train_xgboost,
    "lightgbm": train_lightgbm,
    "onnx": train_onnx,
    "mlflow": train_mlflow,
}
LIBRARIES = {
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "onnx": "onnxruntime",
    "mlflow": "mlflow",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, bool], tuple[Path, str]]:
    """(framework, regression) -> (directory, artifact), each trained once for the module."""
    done: dict[tuple[str, bool], tuple[Path, str]] = {}

    def train(framework: str, regression: bool) -> tuple[Path, str]:
        if (framework, regression) not in done:
            directory = tmp_path_factory.mktemp(f"{framework}-{regression}")
            done[framework, regression] = directory, TRAINERS[framework](directory, regression)
        return done[framework, regression]

    return train


@pytest.fixture
def load(trained: Callable[[str, bool], tuple[Path, str]]) -> Callable[..., Any]:
    return lambda framework, **options: _load(trained, framework, **options)


def _load(
    trained: Callable[[str, bool], tuple[Path, str]],
    framework: str,
    *,
    regression: bool = False,
    names: tuple[str, ...] | None = None,
    **config: Any,
) -> Any:
    """Trains and loads a model; `names` the profile's features (default: the table's)."""
    directory, artifact = trained(framework, regression)
    if names is None:
        names = NAMES[:2] if regression and framework == "onnx" else NAMES
    settings: dict[str, Any] = {"classes": None if regression else CLASSES, **config}
    model_config = ModelConfig(
        name="m", version="1", framework=framework, artifact=artifact, **settings
    )
    return load_model(model_config, directory, names)


def _columns(rows: slice = slice(0, 50)) -> dict[str, np.ndarray]:
    columns, _ = _table()
    return {n: columns[n][rows] for n in NAMES}


@pytest.mark.parametrize("framework", sorted(TRAINERS))
def test_a_classifier_answers_class_probabilities(framework: str, load: Callable[..., Any]) -> None:
    model = load(framework)
    prediction = model.predict(_columns())
    assert prediction.classes == tuple(CLASSES)
    assert prediction.probabilities.shape == (50, 2)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    picked = np.array(CLASSES, dtype=object)[prediction.probabilities.argmax(axis=1)]
    assert list(prediction.values) == list(picked)
    assert prediction.confidence is not None
    assert (prediction.confidence >= 0.5).all()
    _, labels = _table()
    right = (prediction.values == np.array(CLASSES, dtype=object)[labels[:50]]).mean()
    assert right > 0.7, "the model learnt the table (its features reached it by name)"


@pytest.mark.parametrize("framework", sorted(TRAINERS))
def test_unseen_and_missing_categories_are_answered(
    framework: str, load: Callable[..., Any]
) -> None:
    model = load(framework)
    columns = _columns(slice(0, 3))
    columns["plan"] = np.array(["never-seen", None, "pro"], dtype=object)
    prediction = model.predict(columns)
    assert prediction.probabilities.shape == (3, 2)
    assert np.isfinite(prediction.probabilities).all()


@pytest.mark.parametrize("framework", sorted(TRAINERS))
def test_a_regressor_answers_one_value_a_row(framework: str, load: Callable[..., Any]) -> None:
    model = load(framework, regression=True)
    prediction = model.predict(_columns())
    assert prediction.classes is None
    assert prediction.probabilities is None
    assert prediction.values.shape == (50,)
    assert np.corrcoef(prediction.values, _columns()["amount"])[0, 1] > 0.8


@pytest.mark.parametrize("framework", sorted(TRAINERS))
def test_features_the_profile_does_not_have_are_refused(
    framework: str, load: Callable[..., Any]
) -> None:
    with pytest.raises(ModelDirError, match=r"disagree.*not in the profile: visits"):
        load(framework, names=("amount", "calls", "plan"))


def test_an_unnamed_matrix_input_must_be_as_wide_as_the_profile(load: Callable[..., Any]) -> None:
    with pytest.raises(ModelDirError, match="takes 2 unnamed features but the profile has 3"):
        load("onnx", regression=True, names=NAMES)


@pytest.mark.parametrize("framework", sorted(TRAINERS))
def test_classes_must_number_the_models(framework: str, load: Callable[..., Any]) -> None:
    with pytest.raises(ModelDirError, match="names 3 classes but"):
        load(framework, classes=["a", "b", "c"])
    with pytest.raises(ModelDirError, match="is a regressor"):
        load(framework, regression=True, classes=CLASSES)


@pytest.mark.parametrize("framework", sorted(TRAINERS))
def test_without_classes_a_classifier_answers_class_indexes(
    framework: str, load: Callable[..., Any]
) -> None:
    prediction = load(framework, classes=None).predict(_columns())
    assert prediction.classes == (0, 1)
    assert set(prediction.values.tolist()) <= {0, 1}


@pytest.mark.parametrize("framework", sorted(TRAINERS))
def test_a_missing_library_names_the_extra_to_install(
    framework: str,
    trained: Callable[[str, bool], tuple[Path, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory, artifact = trained(framework, False)
    monkeypatch.setitem(sys.modules, LIBRARIES[framework], None)  # import fails
    config = ModelConfig(name="m", version="1", framework=framework, artifact=artifact)
    with pytest.raises(ModelDirError, match=rf"install modeldeploy\[{framework}\]"):
        load_model(config, directory, NAMES)


@pytest.mark.parametrize("framework", sorted(TRAINERS))
def test_an_unreadable_model_file_is_a_model_dir_error(framework: str, tmp_path: Path) -> None:
    (tmp_path / "broken").write_text("not a model")
    config = ModelConfig(name="m", version="1", framework=framework, artifact="broken")
    with pytest.raises(ModelDirError, match="cannot load"):
        load_model(config, tmp_path, NAMES)


def test_an_mlflow_model_logged_without_predict_proba_answers_labels_only(
    tmp_path: Path,
) -> None:
    artifact = save_mlflow(tmp_path, predict_fn="predict")
    config = ModelConfig(name="m", version="1", framework="mlflow", artifact=artifact)
    prediction = load_model(config, tmp_path, NAMES).predict(_columns())
    assert prediction.classes == (0, 1)  # the estimator's own classes_
    assert prediction.probabilities is None
    assert prediction.confidence is None
    named = config.model_copy(update={"classes": CLASSES})
    renamed = load_model(named, tmp_path, NAMES).predict(_columns())
    assert renamed.classes == tuple(CLASSES)
    picked = np.array(CLASSES, dtype=object)[prediction.values.astype(int)]
    assert list(renamed.values) == list(picked)


def test_a_classifier_without_probabilities_says_what_it_cannot_do() -> None:
    """In its model metadata and at start: nothing that needs probabilities will work."""
    labels_only = ClassificationOutput(classes=CLASSES, baseline={})
    confident = labels_only.model_copy(
        update={"confidence": ConfidenceProfile(buckets=[0.5, 1.0], baseline=[0.0, 1.0])}
    )
    feature = profile_feature("amount", np.array([1.0, 2.0]), "float")
    profile = Profile(rows=2, features=[feature], output=labels_only, golden=[])
    mlflow = ModelConfig(name="m", version="1", framework="mlflow", artifact="m")
    missing = missing_probabilities(mlflow, profile)
    assert missing is not None
    assert "no low-confidence fallback" in missing
    assert 'pyfunc_predict_fn="predict_proba"' in missing
    sklearn = ModelConfig(name="m", version="1")
    assert "pyfunc" not in (missing_probabilities(sklearn, profile) or "")
    answered = profile.model_copy(update={"output": confident})
    assert missing_probabilities(mlflow, answered) is None


def test_an_mlflow_model_serialized_with_skops_is_refused(tmp_path: Path) -> None:
    """mlflow-skinny brings no skops (MLflow's default for scikit-learn models)."""
    model = tmp_path / "mlflow-model"
    model.mkdir()
    flavors = {
        "python_function": {"loader_module": "mlflow.sklearn", "model_path": "model.skops"},
        "sklearn": {"serialization_format": "skops", "pickled_model": "model.skops"},
    }
    (model / "MLmodel").write_text(yaml.safe_dump({"flavors": flavors}))
    config = ModelConfig(name="m", version="1", framework="mlflow", artifact="mlflow-model")
    with pytest.raises(ModelDirError, match=r'serialized with skops.*serialization_format="cloudp'):
        load_model(config, tmp_path, NAMES)


def test_an_mlflow_directory_needs_a_pyfunc_flavor(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(yaml.safe_dump({"flavors": {"keras": {}}}))
    config = ModelConfig(name="m", version="1", framework="mlflow", artifact=".")
    with pytest.raises(ModelDirError, match="no python_function flavor"):
        load_model(config, tmp_path, NAMES)


def test_classes_are_refused_where_the_model_has_its_own() -> None:
    with pytest.raises(
        ValueError, match="classes is for frameworks xgboost, lightgbm, onnx, mlflow"
    ):
        ModelConfig(name="m", version="1", framework="sklearn", classes=CLASSES)


def test_the_runtime_imports_no_format_library_unless_asked() -> None:
    code = (
        "import sys, modeldeploy.cli, modeldeploy.serving.server, modeldeploy.serving.model;"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'xgboost', 'lightgbm', 'onnxruntime', 'onnx', 'skl2onnx', 'mlflow'}"
        " | {m for m in sys.modules if m.startswith('modeldeploy.serving.formats')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
