"""The runtime's low-confidence fallback: model.yaml validation, the rows it answers, how the
response tags them and how the monitor counts them."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_serving import FEATURES, _body, _profile, classify

from modeldeploy import contract as c
from modeldeploy.profile_schema import Profile, RegressionOutput
from modeldeploy.serving.config import ModelDirError, load_config
from modeldeploy.serving.fallback import Fallback, check_fallback, load_fallback
from modeldeploy.serving.model import CallableModel, Prediction
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import FALLBACK_OUTPUT, InferencePipeline, ModelError

pytestmark = pytest.mark.unit

FLOOR = 0.65  # the test model's confidence: max(age, 100 - age) / 100
RULES_MODULE = """
import numpy as np

def rules(columns):
    yes = np.asarray(columns["vip"], dtype=bool)
    probabilities = np.column_stack([np.where(yes, 0.2, 0.9), np.where(yes, 0.8, 0.1)])
    return {"values": np.where(yes, "yes", "no"), "probabilities": probabilities,
            "classes": ["no", "yes"]}
"""


def rules(columns: Mapping[str, np.ndarray]) -> Prediction:
    """Rows of VIPs are a yes, at 0.8; everyone else a no, at 0.9."""
    yes = np.asarray(columns["vip"], dtype=bool)
    probabilities = np.column_stack([np.where(yes, 0.2, 0.9), np.where(yes, 0.8, 0.1)])
    return Prediction(np.where(yes, "yes", "no"), probabilities, ("no", "yes"))


def pipeline(answer: Any = rules) -> InferencePipeline:
    return InferencePipeline(FEATURES, CallableModel(classify), fallback=Fallback(FLOOR, answer))


def write_model_dir(directory: Path, **fallback: Any) -> Path:
    config = {"name": "m", "version": "1", "framework": "python", "entrypoint": "m_rules:rules"}
    if fallback:
        config["fallback"] = fallback
    (directory / "model.yaml").write_text(yaml.safe_dump(config))
    (directory / "m_rules.py").write_text(RULES_MODULE)
    return directory


# --- model.yaml -----------------------------------------------------------------------------


def test_a_declared_fallback_loads_its_rules_from_the_model_directory(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path, confidence_floor=0.6, rules="m_rules:rules")
    config = load_config(model_dir)
    assert config.fallback is not None
    assert config.fallback.confidence_floor == 0.6
    loaded = load_fallback(config, model_dir)
    assert loaded is not None
    assert loaded.confidence_floor == 0.6
    assert load_fallback(load_config(write_model_dir(tmp_path)), tmp_path) is None


@pytest.mark.parametrize(
    ("fallback", "message"),
    [
        ({"confidence_floor": 0, "rules": "m_rules:rules"}, "greater than 0"),
        ({"confidence_floor": 1, "rules": "m_rules:rules"}, "less than 1"),
        ({"confidence_floor": 0.6}, "fallback.rules\n  Field required"),
        ({"confidence_floor": 0.6, "rules": "not a callable"}, "should match pattern"),
        ({"rules": "m_rules:rules"}, "fallback.confidence_floor\n  Field required"),
        (
            {"confidence_floor": 0.6, "rules": "m_rules:rules", "deployment": "churn-fallback"},
            "Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_fallback_section_is_refused_with_the_reason(
    tmp_path: Path, fallback: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelDirError, match=r"invalid .*model\.yaml") as refused:
        load_config(write_model_dir(tmp_path, **fallback))
    assert message in str(refused.value)


def test_rules_that_cannot_be_imported_are_refused(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path, confidence_floor=0.6, rules="m_rules:nothing")
    with pytest.raises(ModelDirError, match="cannot load 'm_rules:nothing'"):
        load_fallback(load_config(model_dir), model_dir)


def test_a_fallback_needs_a_classifier_with_probabilities(tmp_path: Path) -> None:
    config = load_config(write_model_dir(tmp_path, confidence_floor=0.6, rules="m_rules:rules"))
    check_fallback(config, _profile().model_copy(update={"output": _confident_output()}))
    regressor = Profile(
        rows=100, features=FEATURES, output=RegressionOutput(edges=[1.0], baseline={"00": 1.0})
    )
    with pytest.raises(ModelDirError, match="fallback needs a classifier with probabilities"):
        check_fallback(config, regressor)
    with pytest.raises(ModelDirError, match="fallback needs a classifier with probabilities"):
        check_fallback(config, _profile())  # a classifier without a confidence


def _confident_output() -> Any:
    output = _profile().output
    return output.model_copy(update={"confidence": {"0.5": 0.5, "1.0": 0.5}})


# --- answers and tags -----------------------------------------------------------------------


def test_rows_below_the_floor_are_answered_by_the_rules_and_tagged() -> None:
    body = _body(
        age={"shape": [3], "data": [10, 50, 60]},
        income={"shape": [3], "data": [1.0, 2.0, 3.0]},
        plan={"shape": [3], "data": ["a", "b", "c"]},
        vip={"shape": [3], "data": [True, True, False]},
    )
    inference = pipeline().infer(body)
    outputs = {o["name"]: o for o in inference.outputs}
    # age 10: the model is sure (0.9); 50 and 60 are below 0.65: the rules answer them.
    assert outputs["label"]["data"] == ["no", "yes", "no"]
    assert outputs["confidence"]["data"] == pytest.approx([0.9, 0.8, 0.9])
    assert outputs["probabilities"]["data"] == pytest.approx([0.9, 0.1, 0.2, 0.8, 0.9, 0.1])
    assert outputs[FALLBACK_OUTPUT] == {
        "name": FALLBACK_OUTPUT, "shape": [3], "datatype": "BOOL", "data": [False, True, True],
    }  # fmt: skip
    assert inference.fallback is not None
    assert inference.fallback.tolist() == [False, True, True]
    assert inference.prediction.values.tolist() == ["no", "yes", "no"]


def test_without_unsure_rows_the_rules_are_not_called_and_only_the_tag_is_added() -> None:
    def never(columns: Any) -> Any:
        raise AssertionError("the rules were called")

    inference = pipeline(never).infer(_body(age={"data": [5, 95]}))
    outputs = {o["name"]: o["data"] for o in inference.outputs}
    assert outputs[FALLBACK_OUTPUT] == [False, False]
    assert outputs["label"] == ["no", "yes"]


def test_the_tag_may_be_asked_for_alone_and_models_without_a_fallback_have_none() -> None:
    body = {**_body(), "outputs": [{"name": FALLBACK_OUTPUT}]}
    (only,) = pipeline().infer(body).outputs
    assert only["name"] == FALLBACK_OUTPUT
    plain = InferencePipeline(FEATURES, CallableModel(classify)).infer(_body())
    assert plain.fallback is None
    assert FALLBACK_OUTPUT not in {o["name"] for o in plain.outputs}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda cols: np.array(["no"] * 2), "classes None"),
        (lambda cols: Prediction(np.array(["no"] * 2), None, ("no", "yes")), "of shape None"),
        (lambda cols: Prediction(np.array(["no"]), np.ones((1, 2)) / 2, ("no", "yes")), "1 rows"),
        (
            lambda cols: Prediction(np.array(["x"] * 2), np.ones((2, 2)) / 2, ("no", "yes")),
            "no class",
        ),
        (lambda cols: Prediction(np.array(["no"] * 2), np.ones((2, 2)) / 2, ("a", "b")), "classes"),
        (lambda cols: 1 / 0, "the fallback rules failed: ZeroDivisionError"),
    ],
)
def test_rules_answering_otherwise_than_the_model_are_a_model_error(
    answer: Any, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        pipeline(answer).infer(_body(age={"data": [50, 60]}))


# --- counting -------------------------------------------------------------------------------


def _answered(monitor: Monitor) -> dict[str, float]:
    body, _ = monitor.exposition()
    return {
        sample.labels[c.LABEL_ANSWERED_BY]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == c.ANSWERED_ROWS_TOTAL
    }


def test_rows_are_counted_by_what_answered_them_the_fallback_series_only_when_declared() -> None:
    identity = Identity("m", "1", "r1")
    declared = Monitor(_profile(), identity, fallback=True)
    assert _answered(declared) == {c.ANSWERED_BY_MODEL: 0.0, c.ANSWERED_BY_FALLBACK: 0.0}
    declared.observe_answered(5, by_fallback=2)
    declared.observe_answered(3)
    assert _answered(declared) == {c.ANSWERED_BY_MODEL: 6.0, c.ANSWERED_BY_FALLBACK: 2.0}
    plain = Monitor(_profile(), identity)
    plain.observe_answered(4)
    assert _answered(plain) == {c.ANSWERED_BY_MODEL: 4.0}
    with pytest.raises(ValueError, match="without fallback"):
        plain.observe_answered(4, by_fallback=1)
