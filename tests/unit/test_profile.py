"""The profile builder: schema inference, deciles, baselines, golden requests, table I/O."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from modeldeploy.cli import app
from modeldeploy.profile_schema import FeatureProfile, Profile, RegressionOutput
from modeldeploy.profiling.build import build_profile
from modeldeploy.profiling.holdout import Holdout, holdout_quality
from modeldeploy.profiling.io import read_table, write_profile
from modeldeploy.profiling.stats import (
    column_type,
    decile_edges,
    golden_rows,
    normalise,
    output_profile,
    profile_feature,
    vocabulary,
)
from modeldeploy.serving.model import CallableModel, Prediction
from modeldeploy.serving.pipeline import InferencePipeline

pytestmark = pytest.mark.unit


def _objects(*values: Any) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = list(values)
    return column


def test_column_types_follow_dtypes_and_values() -> None:
    assert column_type(np.array([1.5])) == "float"
    assert column_type(np.array([1, 2])) == "int"
    assert column_type(np.array([True])) == "bool"
    assert column_type(np.array(["a"])) == "string"
    assert column_type(_objects("a", None)) == "string"
    assert column_type(_objects(True, None)) == "bool"
    assert column_type(_objects(1.5, None)) == "float"


def test_normalise_marks_missing_as_nan_or_none() -> None:
    assert np.isnan(normalise(_objects(1, None, float("nan")), "float")[1:]).all()
    assert normalise(_objects("a", float("nan"), 3), "string").tolist() == ["a", None, "3"]


def test_decile_edges_merge_ties_and_ignore_missing() -> None:
    assert decile_edges(np.arange(1.0, 101.0)) == pytest.approx(
        [10.9, 20.8, 30.7, 40.6, 50.5, 60.4, 70.3, 80.2, 90.1]
    )
    assert decile_edges(np.array([0.0] * 50 + [1.0] * 50 + [np.nan])) == [0.0, 0.5, 1.0]
    assert decile_edges(np.array([np.nan])) == []


def test_numeric_feature_baseline_is_about_ten_percent_per_decile() -> None:
    values = np.random.default_rng(0).normal(size=10_000)
    values[:500] = np.nan
    feature = profile_feature("x", values, "float")
    assert feature.nullable
    assert feature.missing_rate == pytest.approx(0.05)
    assert feature.baseline["missing"] == pytest.approx(0.05)
    deciles = [v for k, v in feature.baseline.items() if k != "missing"]
    assert len(deciles) == 10
    assert deciles == pytest.approx([0.095] * 10, abs=0.002)
    assert sum(feature.baseline.values()) == pytest.approx(1.0)


def test_categorical_feature_keeps_the_most_frequent_categories() -> None:
    column = _objects(*(["a"] * 5 + ["b"] * 3 + ["c"] * 2))
    assert vocabulary(column, max_categories=2) == ["a", "b"]
    feature = profile_feature("plan", column, "string", nullable=True)
    assert feature.categories == ["a", "b", "c"]
    assert feature.nullable
    assert feature.baseline == {"a": 0.5, "b": 0.3, "c": 0.2, "other": 0.0, "missing": 0.0}
    with pytest.raises(ValueError, match="reserved"):
        profile_feature("bad", _objects("other", "x"), "string")


def test_output_profile_for_classifiers_and_regressors() -> None:
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.45, 0.55]])
    output = output_profile(Prediction(np.array(["a", "b", "b"]), probabilities, ("a", "b")))
    assert output.baseline["b"] == pytest.approx(2 / 3)
    assert output.confidence is not None
    # 0.55 <= 0.6, 0.7 <= 0.7, 0.9 <= 0.9
    assert output.confidence.baseline[4:9] == pytest.approx([0, 1 / 3, 1 / 3, 0, 1 / 3])
    regression = output_profile(Prediction(np.arange(100.0)))
    assert isinstance(regression, RegressionOutput)
    assert len(regression.edges) == 9


def test_golden_rows_cover_classes_and_missing_and_are_deterministic() -> None:
    labels = ["a"] * 90 + ["b"] * 10
    has_missing = np.zeros(100, dtype=bool)
    has_missing[42] = True
    rows = golden_rows(labels, has_missing, 6, seed=3)
    assert rows == golden_rows(labels, has_missing, 6, seed=3)
    assert rows[0] == 42
    assert len(set(rows)) == 6
    assert sum(labels[r] == "b" for r in rows) >= 2


def _model(columns: Mapping[str, np.ndarray]) -> Prediction:
    score = np.nan_to_num(columns["x"]) + (columns["kind"] == "hot")
    p = 1 / (1 + np.exp(-np.asarray(score, dtype=float)))
    return Prediction(np.where(p > 0.5, 1, 0), np.column_stack([1 - p, p]), (0, 1))


def _pipeline(features: list[FeatureProfile]) -> InferencePipeline:
    return InferencePipeline(features, CallableModel(_model))


def _columns(rows: int = 300) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=rows)
    x[::50] = np.nan
    return {"x": x, "n": rng.integers(0, 5, rows), "kind": rng.choice(["hot", "cold"], rows)}


def test_build_profile_records_golden_outputs_the_pipeline_answers() -> None:
    profile = build_profile(_columns(), _pipeline, golden=4, seed=2)
    assert [f.name for f in profile.features] == ["x", "n", "kind"]
    assert [f.type for f in profile.features] == ["float", "int", "string"]
    assert profile.output.task == "classification"
    assert [g.name for g in profile.golden][-1] == "batch"
    assert len(profile.golden) == 5
    first = profile.golden[0]
    assert first.request["inputs"][0]["data"] == [None]  # the row with a missing value
    assert first.request["inputs"][1]["datatype"] == "INT64"
    pipeline = _pipeline(list(profile.features))
    for golden in profile.golden:
        outputs = {o["name"]: o["data"] for o in pipeline.infer(golden.request).outputs}
        assert outputs == golden.expected
    assert Profile.model_validate_json(profile.model_dump_json()) == profile


def test_build_profile_rejects_unknown_overrides_and_empty_data() -> None:
    with pytest.raises(ValueError, match="no such column"):
        build_profile(_columns(), _pipeline, nullable=["nope"])
    with pytest.raises(ValueError, match="no rows"):
        build_profile({"x": np.array([])}, _pipeline)


def test_read_table_from_csv_npz_and_npy(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("x,kind,n\n1.5,hot,1\n,cold,2\n2.5,,3\n")
    columns = read_table(csv)
    assert column_type(columns["x"]) == "float"
    assert columns["kind"].tolist() == ["hot", "cold", None]
    assert column_type(columns["n"]) == "int"
    np.savez(tmp_path / "t.npz", a=np.arange(3.0), b=np.array(["u", "v", "w"]))
    assert set(read_table(tmp_path / "t.npz")) == {"a", "b"}
    np.save(tmp_path / "t.npy", np.ones((4, 2)))
    assert set(read_table(tmp_path / "t.npy", ["p", "q"])) == {"p", "q"}
    with pytest.raises(ValueError, match="2 columns but 1 names"):
        read_table(tmp_path / "t.npy", ["p"])
    with pytest.raises(ValueError, match="unsupported"):
        read_table(tmp_path / "t.txt")


def test_written_profile_is_plain_json(tmp_path: Path) -> None:
    profile = build_profile(_columns(100), _pipeline, golden=2)
    write_profile(profile, tmp_path / "profile.json")
    document = json.loads((tmp_path / "profile.json").read_text())
    assert document["format_version"] == 1
    assert "categories" not in document["features"][0]  # None fields left out
    assert Profile.model_validate(document) == profile


def test_cli_commands_explain_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text(
        "name: m\nversion: '1'\nframework: python\nentrypoint: m:f\n"
    )
    data = tmp_path / "train.csv"
    data.write_text("x,y\n1,0\n")
    runner = CliRunner()
    missing = runner.invoke(app, ["profile", "--model-dir", str(tmp_path), "--data", str(data),
                                  "--target", "label"])  # fmt: skip
    assert missing.exit_code == 2
    assert "has no column 'label'" in missing.output
    broken = runner.invoke(app, ["profile", "--model-dir", str(tmp_path), "--data", str(data)])
    assert broken.exit_code == 2
    assert "cannot load 'm:f'" in broken.output
    serve = runner.invoke(app, ["serve", "--model-dir", str(tmp_path / "nowhere")])
    assert serve.exit_code == 2
    assert "nowhere/model.yaml" in serve.output


# --- the holdout accuracy -------------------------------------------------------------------


def _holdout(rows: int = 200) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Held-out rows and labels the model gets right but for every fourth row."""
    columns = {k: v[:rows] for k, v in _columns(rows + 7).items()}
    truth = _model(normalised_columns(columns)).values.astype(object)
    truth[::4] = 1 - truth[::4]
    return columns, truth


def normalised_columns(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    types = {"x": "float", "n": "int", "kind": "string"}
    return {k: normalise(v, types[k]) for k, v in columns.items()}  # type: ignore[arg-type]


def test_the_profile_records_the_accuracy_on_held_out_rows_as_the_runtime_counts_it() -> None:
    columns, truth = _holdout()
    labels = np.array([str(v) for v in truth], dtype=object)  # "1" is class 1, as labels.py
    labels[1] = None  # unlabelled rows are left out, as the runtime never scores them
    profile = build_profile(_columns(), _pipeline, holdout=Holdout(columns, labels, "y"))
    assert profile.quality is not None
    assert profile.quality.holdout_rows == 199
    assert profile.quality.holdout_accuracy == pytest.approx(149 / 199)
    assert profile.quality.holdout_tolerance is None
    assert build_profile(_columns(), _pipeline).quality is None
    assert Profile.model_validate_json(profile.model_dump_json()) == profile


def test_a_regressor_is_right_within_the_runtimes_tolerance() -> None:
    output = RegressionOutput(edges=[0.0, 10.0], baseline={})
    prediction = Prediction(np.array([1.0, 2.0, 3.0, 4.0]))
    labels = np.array([1.5, 2.0, 4.5, 14.0])
    default = holdout_quality(prediction, labels, output)  # 10% of the spread: 1.0
    assert (default.holdout_accuracy, default.holdout_tolerance) == (0.5, 1.0)
    wide = holdout_quality(prediction, labels, output, max_abs_error=2.0)
    assert (wide.holdout_accuracy, wide.holdout_rows, wide.holdout_tolerance) == (0.75, 4, 2.0)


def test_a_holdout_must_have_the_training_features_and_some_labels() -> None:
    columns, truth = _holdout()
    other = {"x": columns["x"], "n": columns["n"], "extra": columns["kind"]}
    with pytest.raises(ValueError, match=r"it lacks kind and has extra too"):
        build_profile(_columns(), _pipeline, holdout=Holdout(other, truth))
    empty = np.array([None] * len(truth), dtype=object)
    with pytest.raises(ValueError, match="y has no values in the holdout"):
        build_profile(_columns(), _pipeline, holdout=Holdout(columns, empty, "y"))
    with pytest.raises(ValueError, match="not one value per label"):
        build_profile(_columns(), _pipeline, holdout=Holdout(columns, truth[:-1]))


def test_cli_profile_records_a_holdout_with_its_target(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "import numpy as np\n"
        "from modeldeploy.serving.model import Prediction\n"
        "def f(columns):\n"
        "    return Prediction(np.where(columns['x'] > 0, 'up', 'down'), None, ('down', 'up'))\n"
    )
    (tmp_path / "model.yaml").write_text(
        "name: m\nversion: '1'\nframework: python\nentrypoint: m:f\n"
    )
    (tmp_path / "train.csv").write_text("x,y\n" + "".join(f"{v},a\n" for v in range(-5, 5)))
    (tmp_path / "holdout.csv").write_text("x,y\n1,up\n2,up\n-1,up\n-2,down\n3,\n")
    runner = CliRunner()
    base = ["profile", "--model-dir", str(tmp_path), "--data", str(tmp_path / "train.csv")]
    held = ["--holdout", str(tmp_path / "holdout.csv")]
    alone = runner.invoke(app, [*base, *held])
    assert alone.exit_code == 2
    assert "--holdout needs --target" in alone.output
    result = runner.invoke(app, [*base, *held, "--target", "y"])
    assert result.exit_code == 0, result.output
    assert "holdout accuracy 75.0% on 4 rows" in result.output
    document = json.loads((tmp_path / "profile.json").read_text())
    assert document["quality"] == {"holdout_accuracy": 0.75, "holdout_rows": 4}
