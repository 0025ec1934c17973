"""buildctx/context.py on a small scikit-learn model trained here: the context it writes, and
nothing at all (no staging directory either) when the training data are refused or the
output is taken."""

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modeldeploy import __version__
from modeldeploy.buildctx.context import TrainingData, write_context
from modeldeploy.buildctx.plan import BadBuildInput, BuildRefused, BuildRequest

pytestmark = pytest.mark.unit

REQUEST = BuildRequest("toy", "1", __version__)


def _trained(directory: Path, leaky: bool = False) -> tuple[Path, Path]:
    """A model file and its training CSV; `leaky` adds a column that is the label itself."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"amount": rng.normal(size=400), "visits": rng.normal(size=400)})
    label = np.where(frame["amount"] + 0.5 * frame["visits"] > 0, "yes", "no")
    if leaky:
        frame["refund_hour"] = np.where(label == "yes", 0.0, rng.uniform(1, 23, 400))
    model = LogisticRegression().fit(frame.to_numpy(), label)
    joblib.dump(model, directory / "model.joblib")
    frame.assign(bought=label).to_csv(directory / "train.csv", index=False)
    return directory / "model.joblib", directory / "train.csv"


def test_the_context_holds_containerfile_model_yaml_profile_and_model(tmp_path: Path) -> None:
    model, data = _trained(tmp_path)
    output = tmp_path / "out" / "toy-1"
    plan, profile = write_context(model, TrainingData(data, "bought"), output, REQUEST)
    files = {str(p.relative_to(output)) for p in output.rglob("*") if p.is_file()}
    assert files == {
        "Containerfile",
        "model/model.yaml",
        "model/profile.json",
        "model/model.joblib",
    }
    assert plan.framework == "sklearn"
    assert [f.name for f in profile.features] == ["amount", "visits"]
    assert profile.golden
    assert "scikit-learn==" in (output / "Containerfile").read_text()
    assert [p.name for p in output.parent.iterdir()] == ["toy-1"]  # no staging left


def test_refused_training_data_write_nothing(tmp_path: Path) -> None:
    model, data = _trained(tmp_path, leaky=True)
    parent = tmp_path / "contexts"
    parent.mkdir()
    with pytest.raises(BuildRefused, match="leak the label: refund_hour"):
        write_context(model, TrainingData(data, "bought"), parent / "toy-1", REQUEST)
    assert list(parent.iterdir()) == []


def test_an_output_that_holds_files_is_refused_untouched(tmp_path: Path) -> None:
    model, data = _trained(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(BadBuildInput, match="not an empty directory"):
        write_context(model, TrainingData(data, "bought"), tmp_path / "taken", REQUEST)
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    with pytest.raises(BadBuildInput, match="no column 'label'"):
        write_context(model, TrainingData(data, "label"), tmp_path / "fresh", REQUEST)
    assert not (tmp_path / "fresh").exists()
    assert not list(tmp_path.glob(".fresh.*"))  # its staging directory went too
