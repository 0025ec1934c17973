"""Each model format (serving/formats/) as a real `modeldeploy serve` process on 127.0.0.1:
the churn example trained as an XGBoost, LightGBM, ONNX and MLflow model (examples/churn/
build_formats.py), Ready only after its golden requests matched, answering V2 requests over
REST with class probabilities, and exporting the same feature bins, prediction bins and
confidence as the scikit-learn model; its skewed variant shows the skew in its bins.
"""

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_runtime import INFER, rows_body, scrape, value

from modeldeploy import contract as c
from modeldeploy.devenv.imagemap import load_build_script
from modeldeploy.profile_schema import Profile
from modeldeploy.profiling.io import read_table
from modeldeploy.profiling.stats import normalise
from modeldeploy.serving.bins import counts, feature_bins
from modeldeploy.serving.process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("xgboost", "lightgbm", "onnx", "mlflow")
ROWS = 400
# MLflow's import alone takes seconds (about 7 s at a load average of 10 on 2 cores).
READY_S = 120.0


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """(format, variant) -> its model directory, built once for the module."""
    module = load_build_script(ROOT / "examples/churn/build_formats.py", "churn_build_formats")

    def built(fmt: str, variant: str) -> Path:
        out = tmp_path_factory.mktemp(f"{fmt}-{variant}")
        return Path(module.build(out, fmt, variant, "1", rows=3000))

    return built


def _holdout(model_dir: Path, profile: Profile) -> dict[str, np.ndarray]:
    columns = read_table(model_dir.parent / "data" / "holdout.csv")
    return {f.name: normalise(columns[f.name], f.type) for f in profile.features}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_format_serves_infers_and_exports_its_bins(
    fmt: str, build: Callable[[str, str], Path]
) -> None:
    model_dir = build(fmt, "healthy")
    profile = Profile.model_validate_json((model_dir / "profile.json").read_bytes())
    holdout = _holdout(model_dir, profile)
    labels = read_table(model_dir.parent / "data" / "holdout.csv")["churned"][:ROWS]
    answers: list[str] = []
    with ServerProcess(model_dir) as server:
        server.wait_ready(READY_S)  # every golden request answered as recorded at build time
        metadata = httpx.get(server.url + "/v2/models/churn", timeout=5).json()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for start in range(0, ROWS, 100):
                answer = client.post(INFER, json=rows_body(profile, holdout, start, 100))
                assert answer.status_code == 200, answer.text
                outputs = {o["name"]: o for o in answer.json()["outputs"]}
                answers += outputs["label"]["data"]
        samples = scrape(server.url)
    assert metadata["platform"] == fmt
    assert outputs["probabilities"]["shape"] == [100, 2]
    assert outputs["probabilities"]["parameters"]["classes"] == profile.output.classes
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(100, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert outputs["confidence"]["data"] == pytest.approx(probabilities.max(axis=1).tolist())
    accuracy = float(np.mean(np.array(answers, dtype=object) == labels))
    print(f"\n{fmt}: accuracy on {ROWS} held-out rows {accuracy:.3f}")
    assert accuracy > 0.8
    for feature in profile.features:
        expected = counts(feature_bins(feature), holdout[feature.name][:ROWS])
        got = [
            value(samples, c.FEATURE_BIN_TOTAL, feature=feature.name, bin=label)
            for label in feature_bins(feature).labels
        ]
        assert got == expected.tolist(), feature.name
    for label in ("churn", "stay"):
        seen = value(samples, c.PREDICTION_BIN_TOTAL, output="label", bin=label)
        assert seen == answers.count(label)
    assert value(samples, c.PREDICTION_CONFIDENCE + "_count") == ROWS
    assert value(samples, c.PREDICTION_CONFIDENCE + "_bucket", le="0.5") == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_formats_skewed_variant_shows_the_skew(
    fmt: str, build: Callable[[str, str], Path]
) -> None:
    model_dir = build(fmt, "skewed")
    profile = Profile.model_validate_json((model_dir / "profile.json").read_bytes())
    holdout = _holdout(model_dir, profile)
    with ServerProcess(model_dir) as server:
        server.wait_ready(READY_S)
        httpx.post(server.url + INFER, json=rows_body(profile, holdout, 0, 300), timeout=10)
        samples = scrape(server.url)
    top = value(samples, c.FEATURE_BIN_TOTAL, feature="monthly_charges", bin="09")
    assert top >= 290  # the training baseline puts 10% there
