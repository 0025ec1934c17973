"""Leakage flags of the profile builder: the statistics, the profile, the CLI."""

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modeldeploy.cli import app
from modeldeploy.profile_schema import FeatureProfile, Profile
from modeldeploy.profiling.build import build_profile
from modeldeploy.profiling.leakage import (
    DEFAULT_THRESHOLD,
    REFUSED_EXIT_CODE,
    LeakageCheck,
    LeakyTrainingData,
    label_task,
    leakage_flags,
)
from modeldeploy.serving.model import CallableModel
from modeldeploy.serving.pipeline import InferencePipeline

pytestmark = pytest.mark.unit

ROWS = 4000


def _objects(values: list[object]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _churn(rows: int = ROWS, churn_share: float = 0.3, seed: int = 5) -> np.ndarray:
    draw = np.random.default_rng(seed).random(rows) < churn_share
    return _objects(["churn" if d else "stay" for d in draw])


def _clean(labels: np.ndarray, seed: int = 6) -> dict[str, np.ndarray]:
    """Features that carry evidence for the label, none that give it away."""
    gen = np.random.default_rng(seed)
    churned = labels == "churn"
    tenure = np.round(np.clip(24 - 8 * churned + gen.normal(0, 10, len(labels)), 0, 72))
    plan = _objects(gen.choice(["basic", "pro", "team"], len(labels)).tolist())
    customer = _objects([f"c{i}" for i in range(len(labels))])  # unique per row
    return {"tenure": tenure, "plan": plan, "customer": customer}


def test_a_clean_table_is_not_flagged() -> None:
    labels = _churn()
    assert leakage_flags(_clean(labels), labels) == []


def test_a_feature_that_separates_the_label_is_flagged_with_its_figure_and_why() -> None:
    rng = np.random.default_rng(11)
    labels = _churn()
    churned = labels == "churn"
    refund = np.where(churned, rng.uniform(5, 50, ROWS), rng.uniform(-1, 4.9, ROWS))
    (flag,) = leakage_flags({**_clean(labels), "refund": refund}, labels, label_name="churned")
    assert (flag.feature, flag.kind, flag.threshold) == ("refund", "separates-label", 0.95)
    assert flag.value == pytest.approx(1.0, abs=0.01)
    assert flag.reason.startswith("refund alone predicts churned with a balanced accuracy of 0.99")
    assert "recorded after the outcome" in flag.reason


def test_a_perfect_separator_of_a_rare_class_is_flagged() -> None:
    rng = np.random.default_rng(11)
    labels = _churn(churn_share=0.04)
    score = np.where(labels == "churn", 1.0, 0.0) + rng.uniform(0, 0.9, ROWS)
    (flag,) = leakage_flags({"score": score}, labels)
    assert flag.kind == "separates-label"
    assert flag.value > 0.99


def test_a_class_of_a_few_rows_makes_no_separator() -> None:
    rng = np.random.default_rng(11)
    labels = _churn()
    labels[:3] = "fraud"  # one bin holding them would "separate" fraud perfectly
    noise = rng.normal(size=ROWS)
    noise[:3] = 99.0
    assert leakage_flags({"noise": noise}, labels) == []
    assert leakage_flags({"noise": noise}, _objects(["stay"] * (ROWS - 5) + ["churn"] * 5)) == []
    # 25 churners: noise finds bins with a few of them, which the held-out half does not share.
    rare = _objects(["stay"] * (ROWS - 25) + ["churn"] * 25)
    assert leakage_flags({"noise": noise}, rare) == []
    separator = (rare == "churn") + rng.uniform(0, 0.9, ROWS)
    assert [f.kind for f in leakage_flags({"separator": separator}, rare)] == ["separates-label"]


def test_the_midnight_appointments_are_class_concentrated() -> None:
    rng = np.random.default_rng(11)
    labels = _objects(["no-show" if r < 0.2 else "seen" for r in rng.random(ROWS)])
    hour = rng.integers(8, 18, ROWS).astype(float)  # appointments in office hours ...
    no_show = labels == "no-show"
    midnight = no_show & (rng.random(ROWS) < 0.7)  # ... but 70% of no-shows logged at 00:00
    hour[midnight] = 0.0
    hour[~no_show & (rng.random(ROWS) < 0.01)] = 0.0
    flags = leakage_flags({"hour": hour}, labels, label_name="attended")
    (flag,) = [f for f in flags if f.kind == "class-concentrated"]
    assert flag.feature == "hour"
    assert flag.value == pytest.approx(0.7, abs=0.05)
    assert flag.threshold == 0.5
    assert flag.reason == (
        "70% of the rows with attended = no-show have hour = 0, against 0.9% of the other rows: "
        "a value that only one outcome has is usually written when it happens"
    )
    assert [f.kind for f in flags] == ["class-concentrated"]  # 85% balanced: not a separator


def test_a_value_missing_for_one_class_only_is_class_concentrated() -> None:
    rng = np.random.default_rng(11)
    labels = _churn()
    cancelled_on = _objects(["2026-01-0" + str(d) for d in rng.integers(1, 9, ROWS)])
    cancelled_on[labels == "stay"] = None
    flags = leakage_flags({"cancelled_on": cancelled_on}, labels)
    concentrated = next(f for f in flags if f.kind == "class-concentrated")
    assert "the label = stay have cancelled_on = missing, against 0.0%" in concentrated.reason


def test_regression_labels_are_judged_by_explained_variance() -> None:
    rng = np.random.default_rng(11)
    price = rng.normal(100, 20, ROWS)
    assert label_task(price) == "regression"
    assert label_task(np.arange(ROWS) % 3) == "classification"
    columns = {
        "sold_for": price + rng.normal(0, 1, ROWS),  # known after the sale
        "rooms": np.round(price / 40 + rng.normal(0, 1, ROWS)),
    }
    (flag,) = leakage_flags(columns, price, label_name="price")
    assert (flag.feature, flag.kind) == ("sold_for", "separates-label")
    assert flag.reason.startswith("sold_for alone explains 9")
    assert "of the variance of price (eta squared)" in flag.reason


def test_the_threshold_is_configurable_and_checked() -> None:
    rng = np.random.default_rng(11)
    labels = _churn()
    hint = np.where(labels == "churn", 1.0, 0.0) + rng.normal(0, 0.3, ROWS)  # ~0.95 balanced
    assert [f.feature for f in leakage_flags({"hint": hint}, labels, threshold=0.9)] == ["hint"]
    assert leakage_flags({"hint": hint}, labels, threshold=0.99) == []
    with pytest.raises(ValueError, match="threshold"):
        leakage_flags({"hint": hint}, labels, threshold=1.5)


def test_rows_without_a_label_are_left_out() -> None:
    labels = _churn()
    labels[::10] = None
    separator = np.where(labels == "churn", 1.0, 0.0)
    assert [f.kind for f in leakage_flags({"x": separator}, labels)] == [
        "separates-label",
        "class-concentrated",
    ]
    with pytest.raises(ValueError, match="no values"):
        leakage_flags({"x": separator}, _objects([None] * ROWS))


# --- the profile ----------------------------------------------------------------------------


def _model(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.nan_to_num(np.asarray(columns["tenure"], dtype=float))


def _pipeline(features: list[FeatureProfile]) -> InferencePipeline:
    return InferencePipeline(features, CallableModel(_model))


def test_the_profile_records_the_flags_and_a_clean_one_has_none() -> None:
    labels = _churn(600)
    leaky = {**_clean(labels), "refund": np.where(labels == "churn", 9.0, 0.0)}
    profile = build_profile(leaky, _pipeline, golden=2, leakage=LeakageCheck(labels, "churned"))
    assert profile.leakage is not None
    assert {f.feature for f in profile.leakage} == {"refund"}
    assert Profile.model_validate_json(profile.model_dump_json()) == profile
    clean = build_profile(_clean(labels), _pipeline, golden=2, leakage=LeakageCheck(labels))
    assert clean.leakage is None
    assert "leakage" not in clean.model_dump(exclude_none=True)  # older readers still read it


def test_a_refusing_build_stops_before_the_model_runs() -> None:
    labels = _churn(600)
    leaky = {"tenure": np.where(labels == "churn", 0.0, 30.0)}

    def never(features: list[FeatureProfile]) -> InferencePipeline:
        raise AssertionError("the model must not run")

    with pytest.raises(LeakyTrainingData, match="leak the label: tenure") as refused:
        build_profile(leaky, never, leakage=LeakageCheck(labels, refuse=True))
    assert [f.kind for f in refused.value.flags] == ["separates-label", "class-concentrated"]
    with pytest.raises(ValueError, match="has 600 values for 599 rows"):
        build_profile({"tenure": leaky["tenure"][1:]}, never, leakage=LeakageCheck(labels))


# --- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "leaky_model.py").write_text(
        "import numpy as np\n\n\ndef predict(columns):\n"
        "    return np.nan_to_num(np.asarray(columns['tenure'], dtype=float))\n"
    )
    (directory / "model.yaml").write_text(
        "name: m\nversion: '1'\nframework: python\nentrypoint: leaky_model:predict\n"
    )
    return directory


def _train_csv(path: Path, *, leaky: bool) -> Path:
    rng = np.random.default_rng(11)
    labels = _churn(600)
    tenure = _clean(labels)["tenure"]
    lines = ["tenure,cancel_hour,churned"]
    for t, label in zip(tenure, labels, strict=True):
        hour = (0 if label == "churn" else int(rng.integers(8, 18))) if leaky else 12
        lines.append(f"{t:g},{hour},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _profile(model_dir: Path, data: Path, *extra: str) -> tuple[int, str]:
    arguments = ["profile", "--model-dir", str(model_dir), "--data", str(data), *extra]
    result = CliRunner().invoke(app, arguments)
    return result.exit_code, result.output


def test_cli_prints_the_flags_as_warnings_and_records_them(model_dir: Path) -> None:
    data = _train_csv(model_dir.parent / "train.csv", leaky=True)
    code, output = _profile(model_dir, data, "--target", "churned")
    assert code == 0, output
    assert "warning: leakage: cancel_hour alone predicts churned with a balanced" in output
    assert "warning: leakage: 100% of the rows with churned = churn have cancel_hour = 0" in (
        output
    )
    document = json.loads((model_dir / "profile.json").read_text())
    assert [f["feature"] for f in document["leakage"]] == ["cancel_hour", "cancel_hour"]
    assert "churned" not in [f["name"] for f in document["features"]]


def test_cli_refuses_leaky_data_and_writes_no_profile(model_dir: Path) -> None:
    data = _train_csv(model_dir.parent / "train.csv", leaky=True)
    code, output = _profile(model_dir, data, "--target", "churned", "--refuse-leaky")
    assert code == REFUSED_EXIT_CODE == 3
    assert "leakage: cancel_hour alone predicts churned" in output
    assert "refusing training data whose feature(s) leak the label: cancel_hour" in output
    assert not (model_dir / "profile.json").exists()


def test_cli_accepts_clean_data_and_needs_a_target_to_refuse(model_dir: Path) -> None:
    data = _train_csv(model_dir.parent / "train.csv", leaky=False)
    code, output = _profile(model_dir, data, "--target", "churned", "--refuse-leaky")
    assert code == 0, output
    assert "leakage" not in output
    assert "leakage" not in json.loads((model_dir / "profile.json").read_text())
    code, output = _profile(model_dir, data, "--refuse-leaky")
    assert code == 2
    assert "--refuse-leaky needs --target" in output


def test_cli_default_threshold_is_the_builders() -> None:
    help_text = CliRunner().invoke(app, ["profile", "--help"]).output
    assert f"[default: {DEFAULT_THRESHOLD}]" in help_text
