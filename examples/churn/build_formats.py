"""Trains the churn example as an XGBoost, LightGBM, ONNX or MLflow model and writes a
servable model directory, like build.py (same data, split, preprocessing module and profile):

    python examples/churn/build_formats.py OUT --format xgboost|lightgbm|onnx|mlflow
        [--variant healthy|skewed] [--version V]

writes
    OUT/model/   model.yaml (framework: FORMAT, classes), the model file (model.json,
                 model.txt, model.onnx) or MLflow model directory (mlflow-model/),
                 profile.json (with golden requests), churn_features.py
    OUT/data/    train.csv, holdout.csv

Every format consumes the columns as the sklearn model does, categories as strings: XGBoost
and LightGBM are trained from a DataFrame whose category columns they save with the model,
the ONNX graph (a scikit-learn pipeline converted by skl2onnx) takes one input per
feature, strings included, and the MLflow model (the same pipeline, logged with
`pyfunc_predict_fn="predict_proba"`) takes a DataFrame by its signature's names.
`skewed` is build.py's: monthly charges scaled 100x at serving time
(churn_features.preprocess_skewed), which drift must roll back. Needs the format's extra
(dev has them all) and, for onnx, skl2onnx; mlflow also scikit-learn.
"""

import argparse
import importlib.util
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import churn_features  # noqa: E402  (the module the image will run)

from modeldeploy.profiling.io import profile_model_dir  # noqa: E402
from modeldeploy.profiling.leakage import LeakageCheck  # noqa: E402

# build.py by path: `import build` could find the `build` package (PyPA's) instead.
_spec = importlib.util.spec_from_file_location("churn_build", HERE / "build.py")
assert _spec is not None
assert _spec.loader is not None
churn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(churn)

VARIANTS = ("healthy", "skewed")
CLASSES = ["stay", "churn"]  # the boosters' class 0 and 1
MLFLOW_ARTIFACT = "mlflow-model"  # an MLflow model directory
Columns = dict[str, npt.NDArray[Any]]
# (columns as consumed, labels, model dir, seed) -> (artifact file name, classes)
Trainer = Callable[[Columns, npt.NDArray[Any], Path, int], tuple[str, list[str]]]


def _frame(columns: Columns) -> Any:
    """A DataFrame whose category columns the boosters take as categorical features."""
    return pd.DataFrame(
        {
            name: pd.Categorical(values) if name in churn.CATEGORICAL else values
            for name, values in columns.items()
        }
    )


def train_xgboost(columns: Columns, labels: npt.NDArray[Any], out: Path, seed: int) -> Any:
    import xgboost as xgb

    model = xgb.XGBClassifier(
        n_estimators=80, max_depth=3, learning_rate=0.1, enable_categorical=True,
        tree_method="hist", n_jobs=1, random_state=seed,
    )  # fmt: skip
    model.fit(_frame(columns), labels == CLASSES[1])
    model.get_booster().save_model(out / "model.json")
    return "model.json", CLASSES


def train_lightgbm(columns: Columns, labels: npt.NDArray[Any], out: Path, seed: int) -> Any:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(
        n_estimators=80, num_leaves=15, learning_rate=0.1, n_jobs=1, random_state=seed,
        verbose=-1,
    )  # fmt: skip
    model.fit(_frame(columns), (labels == CLASSES[1]).astype(int))
    model.booster_.save_model(out / "model.txt")
    return "model.txt", CLASSES


def _named_pipeline(
    columns: Columns, labels: npt.NDArray[Any], seed: int, numeric_type: Any
) -> tuple[Any, Any, Any]:
    """build.py's model over a DataFrame whose columns it selects by name (what an ONNX
    graph's named inputs and an MLflow signature need): (pipeline, its classifier, frame)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [name for name in columns if name not in churn.CATEGORICAL]
    features = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(churn.CATEGORICAL)),
        ]
    )
    classifier = LogisticRegression(max_iter=1000, random_state=seed)
    frame = pd.DataFrame({n: v.astype(object if n in churn.CATEGORICAL else numeric_type)
                          for n, v in columns.items()})  # fmt: skip
    return make_pipeline(features, classifier).fit(frame, labels), classifier, frame


def train_onnx(columns: Columns, labels: npt.NDArray[Any], out: Path, seed: int) -> Any:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    pipeline, classifier, _ = _named_pipeline(columns, labels, seed, np.float32)
    inputs = [
        (
            name,
            StringTensorType([None, 1])
            if name in churn.CATEGORICAL
            else FloatTensorType([None, 1]),
        )
        for name in columns
    ]
    graph = to_onnx(pipeline, initial_types=inputs, options={id(classifier): {"zipmap": False}})
    (out / "model.onnx").write_bytes(graph.SerializeToString())
    return "model.onnx", [str(c) for c in classifier.classes_]


def train_mlflow(columns: Columns, labels: npt.NDArray[Any], out: Path, seed: int) -> Any:
    """The pipeline as an MLflow model, logged to answer probabilities; cloudpickle, as
    mlflow-skinny cannot read MLflow's default for scikit-learn (skops)."""
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature

    pipeline, classifier, frame = _named_pipeline(columns, labels, seed, np.float64)
    mlflow.sklearn.save_model(
        pipeline,
        out / MLFLOW_ARTIFACT,
        serialization_format="cloudpickle",
        signature=infer_signature(frame),
        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],  # else inferred (seconds)
        pyfunc_predict_fn="predict_proba",
    )
    return MLFLOW_ARTIFACT, [str(c) for c in classifier.classes_]


TRAINERS: dict[str, Trainer] = {
    "xgboost": train_xgboost,
    "lightgbm": train_lightgbm,
    "onnx": train_onnx,
    "mlflow": train_mlflow,
}


def build(
    out: Path, fmt: str, variant: str = "healthy", version: str = "1", *, rows: int = 6000,
    seed: int = 7,
) -> Path:  # fmt: skip
    """Writes OUT/model and OUT/data; returns the model directory."""
    columns, labels = churn.make_dataset(rows, seed)
    split = int(rows * 0.8)
    train_cols = {k: v[:split] for k, v in columns.items()}
    hold_cols = {k: v[split:] for k, v in columns.items()}
    model_dir, data_dir = out / "model", out / "data"
    model_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    consumed = churn_features.preprocess(train_cols)
    artifact, classes = TRAINERS[fmt](consumed, labels[:split], model_dir, seed)
    shutil.copy(HERE / "churn_features.py", model_dir / "churn_features.py")
    config = {
        "name": churn.MODEL_NAME,
        "version": version,
        "framework": fmt,
        "artifact": artifact,
        "classes": classes,
        "preprocess": f"churn_features:{churn.PREPROCESS[variant]}",
        "profile": "profile.json",
        "warmup": {"max_latency_ms": 200},
    }
    (model_dir / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    profile_model_dir(
        model_dir, consumed, seed=seed, leakage=LeakageCheck(labels[:split], churn.TARGET)
    )
    churn.write_csv(data_dir / "train.csv", train_cols, labels[:split])
    churn.write_csv(data_dir / "holdout.csv", hold_cols, labels[split:])
    return model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--format", choices=sorted(TRAINERS), required=True)
    parser.add_argument("--variant", choices=VARIANTS, default="healthy")
    parser.add_argument("--version", default="1")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    model_dir = build(
        args.out, args.format, args.variant, args.version, rows=args.rows, seed=args.seed
    )
    print(f"model directory: {model_dir}")


if __name__ == "__main__":
    main()
