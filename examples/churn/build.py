"""Trains the churn example model and writes a servable model directory.

    python examples/churn/build.py OUT
        [--variant healthy|skewed|slow|warming|turning|leaky|mislabelled|floored|unsure|erroring]
        [--version V]

writes
    OUT/model/   model.yaml, model.joblib, profile.json (with golden requests and the
                 holdout accuracy),
                 churn_features.py            <- what the image bundles (`modeldeploy serve`)
    OUT/data/    train.csv, holdout.csv       <- held-out rows for traffic and accuracy

The data are synthetic but honest: `make_classification` draws the latent signal, which is
mapped to churn-like columns (tenure, charges, support calls, data usage, contract type,
payment method); `contract` is cut from an informative latent, so categories carry signal,
and data usage is unrecorded for some customers (missing values). Same seed, same bytes.

Variants differ only in the preprocessing the image runs (the model is trained the same
way): `healthy` (v1, v3), `skewed` (v2: monthly charges scaled 100x at serving time) and
`slow` (right answers, 60 ms late: a latency regression) and `warming` (healthy, 8 s slow to
start: the traffic tests' slowly warming canary) and `turning` (healthy, then skewed from
`CHURN_TURN_SECONDS`, default 30, after warm-up: what the golden replays catch; its
model.yaml replays them every 3 s rather than 30, and turns unready after 5 replays that do
not match rather than 3).

`leaky` differs in its training table instead: it has one more column, `last_change_hour`,
the hour of the account's last change. Customers change their accounts during the day, but
cancellations are processed by a nightly job, so every churner's last change is at midnight:
a feature known only after the churn, which the model learns to lean on. The profile builder
flags it (the build prints the warnings). In the held-out rows, as at serving time, it is not
known yet (empty): the runtime refuses those requests (training never lacked the feature).

`mislabelled` differs in its training labels only: a broken labelling job shuffled 60% of
them among the rows (`MISLABELLED_SHARE`). Same columns, same preprocessing, so its inputs
look exactly like the healthy model's (no feature drift), but it answers worse: about 77%
right on the held-out rows against 86.5%, which only ground truth shows (the accuracy check,
with labels posted back). Unsure, it also predicts `churn` less often.

`floored` is `healthy` with a low-confidence fallback (model.yaml `fallback`): rows whose
predicted class' probability is below `FALLBACK_FLOOR` are answered by
`churn_features:rules`, a few percent of the held-out rows. `unsure` declares the same
fallback, but its model is the healthy one tempered (`UNSURE_TEMPERATURE`: its logistic
regression's weights divided by it, the same answers at lower probabilities), so it falls
back on far more rows: what the fallback-rate check, against a `floored` stable, rolls back.
"""

import argparse
import csv
import shutil
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import churn_features  # noqa: E402  (the module the image will run)

from modeldeploy.profiling.holdout import Holdout  # noqa: E402
from modeldeploy.profiling.io import profile_model_dir  # noqa: E402
from modeldeploy.profiling.leakage import LeakageCheck  # noqa: E402

MODEL_NAME = "churn"
TARGET = "churned"
CATEGORICAL = churn_features.CATEGORICAL
PREPROCESS = {
    "healthy": "preprocess",
    "skewed": "preprocess_skewed",
    "slow": "preprocess_slow",
    "warming": "preprocess_warming",
    "turning": "preprocess_turning",
    "leaky": "preprocess",
    "mislabelled": "preprocess",
    "erroring": "preprocess_erroring",
    "floored": "preprocess",
    "unsure": "preprocess",
}
MISLABELLED_SHARE = 0.6
LEAKY_FEATURE = "last_change_hour"
# Replays often enough for a test to see the turn (default every 30 s), and 5 mismatching
# replays in a row (default 3) before readiness turns: the operator's rounds see it first.
TURNING_GOLDEN = {"interval_s": 3.0, "mismatch_limit": 5}
FALLBACK_FLOOR = 0.6
FALLBACK = {"confidence_floor": FALLBACK_FLOOR, "rules": "churn_features:rules"}
FALLBACK_VARIANTS = ("floored", "unsure")
UNSURE_TEMPERATURE = 4.0
Columns = dict[str, npt.NDArray[Any]]


def _cut(values: npt.NDArray[np.float64], shares: list[float], names: list[str]) -> Any:
    edges = np.quantile(values, np.cumsum(shares)[:-1])
    column = np.empty(len(values), dtype=object)
    column[:] = [names[i] for i in np.searchsorted(edges, values)]
    return column


def make_dataset(rows: int, seed: int, leaky: bool = False) -> tuple[Columns, npt.NDArray[Any]]:
    """Churn-like columns and labels ("churn"/"stay"), deterministic for a seed; `leaky`
    adds `LEAKY_FEATURE` (see the module docstring)."""
    latent, label = make_classification(
        n_samples=rows,
        n_features=6,
        n_informative=4,
        n_redundant=0,
        n_repeated=0,
        weights=[0.7],
        class_sep=1.0,
        flip_y=0.02,
        shuffle=False,  # keeps the informative latents in the columns mapped below
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    # Unshuffled, make_classification lists the samples class by class: without this, the
    # held-out tail would be mostly churners, drifted against the training profile.
    order = rng.permutation(rows)
    latent, label = latent[order], label[order]
    usage = np.round(np.exp(2.2 + 0.45 * latent[:, 4]), 2)
    usage[rng.random(rows) < 0.04] = np.nan  # not recorded for some customers
    columns: Columns = {
        "tenure_months": np.clip(np.round(24 - 10 * latent[:, 0]), 0, 72).astype(np.int64),
        "monthly_charges": np.round(np.clip(65 + 18 * latent[:, 1], 18, 130), 2),
        "support_calls": np.clip(np.round(2 + 1.3 * latent[:, 2]), 0, 12).astype(np.int64),
        "data_usage_gb": usage,
        "contract": _cut(latent[:, 3], [0.5, 0.3, 0.2], ["month-to-month", "one-year", "two-year"]),
        "payment_method": _cut(latent[:, 5], [0.45, 0.35, 0.2], ["card", "bank", "check"]),
    }
    labels = np.where(label == 1, "churn", "stay").astype(object)
    if leaky:
        daytime = rng.integers(7, 22, rows).astype(np.float64)
        columns[LEAKY_FEATURE] = np.where(label == 1, 0.0, daytime)
    return columns, labels


def shuffle_labels(labels: npt.NDArray[Any], share: float, seed: int) -> npt.NDArray[Any]:
    """`labels` with a random `share` of them shuffled among those rows (class counts kept)."""
    rng = np.random.default_rng(seed)
    shuffled = labels.copy()
    picked = rng.random(len(labels)) < share
    shuffled[picked] = rng.permutation(shuffled[picked])
    return shuffled


def train(columns: Columns, labels: npt.NDArray[Any], estimator: Any = None) -> Pipeline:
    """The estimator sees a 2-D array in feature order (the columns'), as the runtime feeds
    it; `estimator` (unfitted) replaces the logistic regression after the encoding (the
    explanations' tests and bench serve tree ensembles this way)."""
    names = list(columns)
    matrix = np.empty((len(labels), len(names)), dtype=object)
    consumed = churn_features.preprocess(columns)
    for j, name in enumerate(names):
        matrix[:, j] = consumed[name]
    numeric = [j for j, name in enumerate(names) if name not in CATEGORICAL]
    categorical = [j for j, name in enumerate(names) if name in CATEGORICAL]
    scale = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    encode = OneHotEncoder(handle_unknown="ignore")
    features = ColumnTransformer(
        [("numeric", scale, numeric), ("categorical", encode, categorical)]
    )
    final = LogisticRegression(max_iter=1000) if estimator is None else estimator
    model = make_pipeline(features, final)
    return model.fit(matrix, labels)


def tempered(model: Pipeline, temperature: float) -> Pipeline:
    """The model with its probabilities tempered: the logistic regression's logits divided
    by `temperature` (labels unchanged, every probability nearer to a coin toss)."""
    regression = model[-1]
    regression.coef_ = regression.coef_ / temperature
    regression.intercept_ = regression.intercept_ / temperature
    return model


def write_csv(path: Path, columns: Columns, labels: npt.NDArray[Any]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, TARGET])
        for i in range(len(labels)):
            row = [column[i] for column in columns.values()]
            writer.writerow(
                ["" if isinstance(v, float) and np.isnan(v) else v for v in row] + [labels[i]]
            )


def build(
    out: Path,
    variant: str = "healthy",
    version: str = "1",
    rows: int = 6000,
    seed: int = 7,
    *,
    estimator: Any = None,
    charges_in_cents: bool = False,
) -> Path:
    """Writes OUT/model and OUT/data; returns the model directory (`estimator`: `train`).
    `charges_in_cents`: the training table records monthly charges in cents (100x) while
    the held-out rows, like clients, send currency units: the model and its profile are
    trained on other units than it is served (build_mlserver.py's skewed image)."""
    columns, labels = make_dataset(rows, seed, leaky=variant == "leaky")
    split = int(rows * 0.8)
    train_cols = {k: v[:split] for k, v in columns.items()}
    if charges_in_cents:
        train_cols["monthly_charges"] = train_cols["monthly_charges"] * 100.0
    hold_cols = {k: v[split:] for k, v in columns.items()}
    if LEAKY_FEATURE in hold_cols:  # not known yet when the model is asked
        hold_cols[LEAKY_FEATURE] = np.full(rows - split, np.nan)
    trained_on = labels[:split]
    if variant == "mislabelled":
        trained_on = shuffle_labels(trained_on, MISLABELLED_SHARE, seed)
    model_dir, data_dir = out / "model", out / "data"
    model_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(train(train_cols, trained_on, estimator), model_dir / "model.joblib")
    model = train(train_cols, trained_on)
    if variant == "unsure":
        model = tempered(model, UNSURE_TEMPERATURE)
    joblib.dump(model, model_dir / "model.joblib")
    shutil.copy(HERE / "churn_features.py", model_dir / "churn_features.py")
    config = {
        "name": MODEL_NAME,
        "version": version,
        "framework": "sklearn",
        "artifact": "model.joblib",
        "preprocess": f"churn_features:{PREPROCESS[variant]}",
        "profile": "profile.json",
        "warmup": {"max_latency_ms": 200},
    }
    if variant == "turning":
        config["golden"] = TURNING_GOLDEN
    if variant in FALLBACK_VARIANTS:
        config["fallback"] = FALLBACK
    (model_dir / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # The profile records the training columns as the model consumed them in training,
    # checks them against the training labels for leakage, and records the model's accuracy
    # on the held-out rows (their true labels): what the stable's labelled accuracy is held
    # against once it serves.
    _, profile = profile_model_dir(
        model_dir,
        churn_features.preprocess(train_cols),
        seed=seed,
        leakage=LeakageCheck(trained_on, TARGET),
        holdout=Holdout(churn_features.preprocess(hold_cols), labels[split:], TARGET),
    )
    for flag in profile.leakage or ():
        print(f"warning: leakage: {flag.reason}", file=sys.stderr)
    write_csv(data_dir / "train.csv", train_cols, trained_on)
    write_csv(data_dir / "holdout.csv", hold_cols, labels[split:])
    return model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, nargs="?", default=HERE / "build" / "healthy")
    parser.add_argument("--variant", choices=sorted(PREPROCESS), default="healthy")
    parser.add_argument("--version", default="1")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    model_dir = build(args.out, args.variant, args.version, args.rows, args.seed)
    print(f"model directory: {model_dir}")


if __name__ == "__main__":
    main()
