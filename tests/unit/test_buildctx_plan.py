"""`modeldeploy build`'s decisions (buildctx/plan.py): the framework of a model file or MLflow
directory, the extras and pinned libraries of its image, model.yaml, the Containerfile, and
the refusal of a training set that fails the profile's checks."""

from typing import Any

import numpy as np
import pytest

from modeldeploy.buildctx.plan import (
    CONTAINERFILE,
    BadBuildInput,
    BuildRefused,
    BuildRequest,
    ModelSource,
    containerfile,
    context_files,
    detect_framework,
    parse_classes,
    plan_model,
    refusal,
    requirements,
)
from modeldeploy.profile_schema import ClassificationOutput, LeakageFlag, Profile
from modeldeploy.profiling.stats import profile_feature
from modeldeploy.serving.config import ModelConfig

pytestmark = pytest.mark.unit

REQUEST = BuildRequest("churn", "2", "0.1.0")
VERSIONS = {"numpy": "2.4.0", "scikit-learn": "1.9.1", "joblib": "1.6.0", "mlflow-skinny": "3.18.0"}


def _mlmodel(loader: str = "mlflow.sklearn") -> dict[str, Any]:
    return {"flavors": {"python_function": {"loader_module": loader}, "sklearn": {}}}


def _profile(leakage: list[LeakageFlag] | None = None) -> Profile:
    feature = profile_feature("tenure", np.arange(1.0, 11.0), "float")
    output = ClassificationOutput(classes=["stay", "churn"], baseline={})
    return Profile(rows=10, features=[feature], output=output, leakage=leakage)


@pytest.mark.parametrize(
    ("name", "framework"),
    [
        ("model.joblib", "sklearn"),
        ("model.PKL", "sklearn"),
        ("booster.json", "xgboost"),
        ("booster.ubj", "xgboost"),
        ("model.txt", "lightgbm"),
        ("graph.onnx", "onnx"),
    ],
)
def test_a_model_files_framework_comes_from_its_name(name: str, framework: str) -> None:
    assert detect_framework(ModelSource(name, False)) == framework


def test_an_mlflow_directory_is_mlflow_and_any_other_directory_is_refused() -> None:
    assert detect_framework(ModelSource("mlflow-model", True, _mlmodel())) == "mlflow"
    with pytest.raises(BadBuildInput, match="without an MLmodel file"):
        detect_framework(ModelSource("saved", True))
    with pytest.raises(BadBuildInput, match="give --framework"):
        detect_framework(ModelSource("model.bin", False))


def test_the_plan_installs_the_formats_extra_only_and_pins_its_libraries() -> None:
    plan = plan_model(ModelSource("model.joblib", False), REQUEST)
    assert plan.extras == ("serve", "sklearn")
    assert plan.libraries == ("numpy", "scikit-learn", "joblib")
    assert plan.model_yaml == {
        "name": "churn",
        "version": "2",
        "framework": "sklearn",
        "artifact": "model.joblib",
    }
    ModelConfig.model_validate(plan.model_yaml)  # what the runtime will read
    assert requirements(plan, REQUEST, VERSIONS) == [
        "modeldeploy[serve,sklearn]==0.1.0",
        "numpy==2.4.0",
        "scikit-learn==1.9.1",
        "joblib==1.6.0",
    ]


def test_an_mlflow_model_brings_its_flavors_extra_and_turns_telemetry_off() -> None:
    plan = plan_model(ModelSource("mlflow-model", True, _mlmodel()), REQUEST)
    assert plan.framework == "mlflow"
    assert plan.extras == ("serve", "mlflow", "sklearn")
    assert "mlflow-skinny" in plan.libraries
    assert "scikit-learn" in plan.libraries
    assert "MLFLOW_DISABLE_TELEMETRY=true" in containerfile(plan, REQUEST, VERSIONS)
    sklearn = plan_model(ModelSource("model.joblib", False), REQUEST)
    assert "MLFLOW" not in containerfile(sklearn, REQUEST, VERSIONS)


def test_an_mlflow_flavor_without_known_libraries_is_refused() -> None:
    with pytest.raises(BadBuildInput, match=r"loader is mlflow\.pytorch.*mlflow\.sklearn"):
        plan_model(ModelSource("m", True, _mlmodel("mlflow.pytorch")), REQUEST)
    with pytest.raises(BadBuildInput, match="no python_function flavor"):
        plan_model(ModelSource("m", True, {"flavors": {"keras": {}}}), REQUEST)


def test_a_framework_given_must_fit_the_model() -> None:
    with pytest.raises(BadBuildInput, match="takes an MLflow model directory"):
        plan_model(ModelSource("model.joblib", False), BuildRequest("m", "1", "0", "mlflow"))
    with pytest.raises(BadBuildInput, match="choose auto or"):
        plan_model(ModelSource("model.joblib", False), BuildRequest("m", "1", "0", "torch"))
    onnx = plan_model(ModelSource("model.bin", False), BuildRequest("m", "1", "0", "onnx"))
    assert onnx.model_yaml["framework"] == "onnx"


def test_classes_go_to_model_yaml_for_formats_only() -> None:
    request = BuildRequest("m", "1", "0", classes=("stay", "churn"))
    plan = plan_model(ModelSource("model.json", False), request)
    assert plan.model_yaml["classes"] == ["stay", "churn"]
    with pytest.raises(BadBuildInput, match="has its own"):
        plan_model(ModelSource("model.joblib", False), request)
    assert parse_classes("stay, churn") == ("stay", "churn")
    for bad in ("one", "a,a", "a,,b"):
        with pytest.raises(BadBuildInput, match="distinct"):
            parse_classes(bad)


def test_a_bundled_wheel_is_copied_in_and_installed_with_the_extras() -> None:
    request = BuildRequest("m", "1", "0.1.0", wheel="modeldeploy-0.1.0-py3-none-any.whl")
    plan = plan_model(ModelSource("model.onnx", False), request)
    text = containerfile(plan, request, {})
    assert "COPY wheels /wheels" in text
    assert '"/wheels/modeldeploy-0.1.0-py3-none-any.whl[serve,onnx]"' in text
    assert "==0.1.0" not in text  # nothing from the index when the wheel is bundled
    assert "onnxruntime" not in text  # not installed here: nothing to pin


def test_the_containerfile_has_the_example_images_shape() -> None:
    plan = plan_model(ModelSource("model.joblib", False), REQUEST)
    text = containerfile(plan, REQUEST, VERSIONS)
    assert text.index("ARG BASE_IMAGE=") < text.index("FROM ${BASE_IMAGE} AS build")
    assert "COPY model /model" in text
    assert "--mount=type=secret,id=ca-bundle" in text
    assert 'io.modeldeploy.model.version="2"' in text
    assert "USER 65532:65532" in text
    assert text.rstrip().endswith('ENTRYPOINT ["modeldeploy", "serve", "--model-dir", "/model"]')


def test_a_profile_with_leakage_flags_refuses_the_build_with_their_reasons() -> None:
    flag = LeakageFlag(
        feature="last_change_hour",
        kind="class-concentrated",
        value=1.0,
        threshold=0.5,
        reason="100% of the rows with churned = churn have last_change_hour = 0",
    )
    plan = plan_model(ModelSource("model.joblib", False), REQUEST)
    assert refusal(_profile()) is None
    assert list(context_files(plan, REQUEST, _profile(), VERSIONS)) == [CONTAINERFILE]
    with pytest.raises(BuildRefused, match="leak the label: last_change_hour") as refused:
        context_files(plan, REQUEST, _profile([flag]), VERSIONS)
    assert "have last_change_hour = 0" in str(refused.value)
