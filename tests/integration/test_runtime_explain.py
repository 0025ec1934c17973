"""Explanations from a real `modeldeploy serve` process on 127.0.0.1 (the churn example):
attributions asked for over REST JSON, REST binary (tritonclient.http) and gRPC
(tritonclient.grpc) agree and add up to the answer's log-odds; the sampled attribution
metrics on /metrics; models that cannot be explained refuse, on request and at load."""

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from operator_harness import wait_for
from sklearn.ensemble import GradientBoostingClassifier
from test_runtime import (
    IDENTITY_ENV,
    INFER,
    ROOT,
    churn,
    copy_model,
    healthy,
    holdout,
    profile,
    python_model,
    rows_body,
    scrape,
    value,
)
from test_runtime_grpc import complete_rows, grpc_inputs
from test_runtime_tritonclient import _inputs as http_inputs

from modeldeploy import contract as c
from modeldeploy.devenv.imagemap import load_build_script
from modeldeploy.devenv.tools import free_port
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.process import LOOPBACK, ServerProcess
from modeldeploy.serving.protocol import Reason

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
__all__ = ["churn", "complete_rows", "healthy", "holdout", "profile"]  # shared fixtures
MODEL = "churn"
EXPLAIN = {"explain": True}
ROWS = 16


def _explained_copy(healthy: Path, target: Path, sample_rate: float) -> Path:
    model_dir = copy_model(healthy, target)
    config = yaml.safe_load((model_dir / "model.yaml").read_text())
    config["explain"] = {"sample_rate": sample_rate}
    (model_dir / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return model_dir


@pytest.fixture(scope="module")
def server(
    healthy: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, int]]:
    model_dir = _explained_copy(healthy, tmp_path_factory.mktemp("explain") / "model", 1.0)
    grpc_port = free_port()
    args = ["--grpc-port", str(grpc_port)]
    with ServerProcess(model_dir, env=IDENTITY_ENV, args=args) as process:
        process.wait_ready()
        yield process, grpc_port


def _log_odds(probabilities: np.ndarray) -> np.ndarray:
    return np.log(probabilities[:, 1] / probabilities[:, 0])


def test_rest_attributions_add_up_to_the_answers_log_odds(
    server: tuple[ServerProcess, int],
    profile: Profile,
    holdout: dict[str, np.ndarray],
) -> None:
    process = server[0]
    assert "explanations: in log-odds of 'stay'" in process.output()
    body = {**rows_body(profile, holdout, 0, ROWS), "parameters": EXPLAIN}
    response = httpx.post(process.url + INFER, json=body, timeout=10)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    attributions = outputs["attributions"]
    names = [f.name for f in profile.features]
    assert attributions["shape"] == [ROWS, len(names)]
    assert attributions["datatype"] == "FP64"
    parameters = attributions["parameters"]
    assert parameters["features"] == names
    assert parameters["space"] == "log-odds of 'stay'"
    values = np.asarray(attributions["data"]).reshape(ROWS, len(names))
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(ROWS, 2)
    assert outputs["probabilities"]["parameters"]["classes"] == ["churn", "stay"]
    np.testing.assert_allclose(
        values.sum(axis=1) + parameters["expected_value"], _log_odds(probabilities), atol=1e-9
    )
    plain = httpx.post(process.url + INFER, json=rows_body(profile, holdout, 0, ROWS), timeout=10)
    assert "attributions" not in [o["name"] for o in plain.json()["outputs"]]
    only = {**body, "outputs": [{"name": "attributions"}]}
    asked = httpx.post(process.url + INFER, json=only, timeout=10).json()["outputs"]
    assert [o["name"] for o in asked] == ["attributions"]
    assert asked[0]["data"] == attributions["data"]


def test_binary_and_grpc_attributions_match_rest(
    server: tuple[ServerProcess, int],
    profile: Profile,
    complete_rows: dict[str, np.ndarray],
) -> None:
    process, grpc_port = server
    rows = len(next(iter(complete_rows.values())))
    body = {**rows_body(profile, complete_rows, 0, rows), "parameters": EXPLAIN}
    rest = httpx.post(process.url + INFER, json=body, timeout=10).json()
    expected = next(o for o in rest["outputs"] if o["name"] == "attributions")
    rest_values = np.asarray(expected["data"]).reshape(expected["shape"])

    with triton_http.InferenceServerClient(f"{LOOPBACK}:{process.port}") as http_client:
        result = http_client.infer(
            MODEL,
            http_inputs(profile, complete_rows, binary=True),
            outputs=[triton_http.InferRequestedOutput("attributions", binary_data=True)],
            parameters=EXPLAIN,
        )
    binary = result.get_output("attributions")
    assert "binary_data_size" in binary["parameters"]
    assert binary["parameters"]["features"] == expected["parameters"]["features"]
    np.testing.assert_allclose(result.as_numpy("attributions"), rest_values, atol=1e-12)

    with triton_grpc.InferenceServerClient(f"{LOOPBACK}:{grpc_port}") as grpc_client:
        answer = grpc_client.infer(MODEL, grpc_inputs(profile, complete_rows), parameters=EXPLAIN)
    np.testing.assert_allclose(answer.as_numpy("attributions"), rest_values, atol=1e-12)
    tensor = next(o for o in answer.get_response().outputs if o.name == "attributions")
    # gRPC parameters hold no lists or floats: those travel as JSON text.
    assert tensor.parameters["features"].string_param.startswith('["tenure_months"')
    assert math.isclose(
        float(tensor.parameters["expected_value"].string_param),
        expected["parameters"]["expected_value"],
    )


def _explained_rows(url: str) -> float:
    return value(scrape(url), c.EXPLAINED_ROWS_TOTAL)


def _mean_weights(url: str, profile: Profile) -> dict[str, float]:
    """Per feature, the mean |attribution| so far: (positive + negative) / rows."""
    samples = scrape(url)
    rows = value(samples, c.EXPLAINED_ROWS_TOTAL)
    return {
        f.name: (
            value(samples, c.ATTRIBUTION_POSITIVE_TOTAL, feature=f.name)
            + value(samples, c.ATTRIBUTION_NEGATIVE_TOTAL, feature=f.name)
        )
        / rows
        for f in profile.features
    }


def _send_rows(url: str, profile: Profile, holdout: dict[str, np.ndarray]) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        for start in range(0, 200, 20):  # bounded: 10 requests of 20 rows
            response = client.post(INFER, json=rows_body(profile, holdout, start, 20))
            assert response.status_code == 200


def test_sampled_attributions_are_counted_per_feature(
    server: tuple[ServerProcess, int],
    profile: Profile,
    holdout: dict[str, np.ndarray],
) -> None:
    process = server[0]
    before = _explained_rows(process.url)
    _send_rows(process.url, profile, holdout)
    # Explained after their answers, one at a time (a request drawn meanwhile is skipped).
    wait_for(lambda: _explained_rows(process.url) >= before + 20, timeout=30, interval=0.1)
    samples = scrape(process.url)
    rows = value(samples, c.EXPLAINED_ROWS_TOTAL, revision=IDENTITY_ENV[c.ENV_REVISION])
    assert rows >= before + 20
    for feature in profile.features:
        positive = value(samples, c.ATTRIBUTION_POSITIVE_TOTAL, feature=feature.name)
        negative = value(samples, c.ATTRIBUTION_NEGATIVE_TOTAL, feature=feature.name)
        assert positive >= 0
        assert negative >= 0
        assert positive + negative > 0, feature.name  # every input moved some answer
    print(
        f"healthy: mean |attribution| over {rows:.0f} rows: {_mean_weights(process.url, profile)}"
    )


def test_skew_shows_as_a_shift_in_why_the_model_decides(
    server: tuple[ServerProcess, int],
    churn: Callable[[str], Path],
    profile: Profile,
    holdout: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    """The skewed variant's preprocessing scales monthly charges 100x: the same rows' answers
    now hang on monthly_charges, which its mean |attribution| shows."""
    healthy_weights = _mean_weights(server[0].url, profile)
    model_dir = _explained_copy(churn("skewed") / "model", tmp_path / "skewed", 1.0)
    with ServerProcess(model_dir, env=IDENTITY_ENV) as process:
        process.wait_ready()
        _send_rows(process.url, profile, holdout)
        wait_for(lambda: _explained_rows(process.url) >= 20, timeout=30, interval=0.1)
        skewed_weights = _mean_weights(process.url, profile)
    print(f"skewed: mean |attribution|: {skewed_weights}")
    assert skewed_weights["monthly_charges"] > 10 * healthy_weights["monthly_charges"]
    assert max(skewed_weights, key=skewed_weights.__getitem__) == "monthly_charges"


def test_a_boosted_model_is_explained_by_shap_in_the_server(
    profile: Profile,
    holdout: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    """The churn example's pipeline ending in gradient boosting (the explain extra, which the
    dev environment has): its attributions add up to the answer's log-odds too."""
    build = load_build_script(ROOT / "examples/churn/build.py", "churn_build")
    boosted = build.build(tmp_path / "boosted", rows=3000, estimator=GradientBoostingClassifier())
    with ServerProcess(boosted, env=IDENTITY_ENV) as process:
        process.wait_ready()
        assert "explanations: in log-odds of 'stay'" in process.output()
        body = {**rows_body(profile, holdout, 0, ROWS), "parameters": EXPLAIN}
        response = httpx.post(process.url + INFER, json=body, timeout=10)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    attributions = outputs["attributions"]
    values = np.asarray(attributions["data"]).reshape(attributions["shape"])
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(ROWS, 2)
    expected = attributions["parameters"]["expected_value"]
    np.testing.assert_allclose(values.sum(axis=1) + expected, _log_odds(probabilities), atol=1e-9)


CALLABLE_MODEL = """
from pathlib import Path

import joblib

from modeldeploy.serving.model import SklearnModel

_model = SklearnModel(joblib.load(Path(__file__).with_name("model.joblib")), {features!r})


def predict(columns):
    return _model.predict(columns)
"""


def _callable_copy(
    healthy: Path,
    target: Path,
    profile: Profile,
    make: Callable[[Path, Path, float], Path] = _explained_copy,
    sample_rate: float = 0.0,
) -> Path:
    model_dir = make(healthy, target, sample_rate)
    names = [f.name for f in profile.features]
    python_model(model_dir, "callable_model", CALLABLE_MODEL.format(features=names))
    return model_dir


def test_a_model_that_cannot_be_explained_refuses_on_request_and_at_load(
    healthy: Path,
    profile: Profile,
    holdout: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    model_dir = _callable_copy(healthy, tmp_path / "callable", profile)
    with ServerProcess(model_dir, env=IDENTITY_ENV) as process:
        process.wait_ready()
        assert "explanations: refused: a python callable model" in process.output()
        body: dict[str, Any] = {**rows_body(profile, holdout, 0, 2), "parameters": EXPLAIN}
        refused = httpx.post(process.url + INFER, json=body, timeout=10)
        assert refused.status_code == 400
        assert "cannot be explained: a python callable model" in refused.json()["error"]
        samples = scrape(process.url)
        assert value(samples, c.INVALID_REQUESTS_TOTAL, reason=Reason.CANNOT_EXPLAIN) == 1
        assert not any(name == c.EXPLAINED_ROWS_TOTAL for name, _ in samples)
    sampled = _callable_copy(healthy, tmp_path / "sampled", profile, sample_rate=0.5)
    with ServerProcess(sampled, env=IDENTITY_ENV) as process:
        assert process.wait_exited() == 2, process.output()
        assert "explain.sample_rate is 0.5 but a python callable model" in process.output()
