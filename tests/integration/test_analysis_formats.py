"""A rollout of each model format with a drift rollback, in the local cluster: the churn
model as an XGBoost, LightGBM, ONNX or MLflow model (examples/churn/build_formats.py) is the
stable v1, served by real `modeldeploy serve` processes behind kwok pods, with client traffic
through the Service; its skewed v2 (monthly_charges x100 in its preprocessing) goes out as a
canary and is rolled back on that feature's drift against its own training profile. The
shape of test_analysis_rollback.py's skew test, once per format; each prints its
breach-to-rollback time.
"""

from pathlib import Path

import pytest
from analysis_stack import ANALYSIS, FORMAT_IMAGES, stable_stack
from test_analysis_rollback import RATE, bad_canary

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FORMATS = ("xgboost", "lightgbm", "onnx", "mlflow")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_formats_skewed_canary_is_rolled_back_on_feature_drift(
    fmt: str, kube: KwokCluster, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    healthy, _ = FORMAT_IMAGES[fmt, "healthy"]
    skewed, _ = FORMAT_IMAGES[fmt, "skewed"]
    namespace = f"analysis-{fmt}"
    with (
        stable_stack(
            kube, prometheus, tmp_path, namespace, stable_image=healthy, formats=True
        ) as stack,
        stack.traffic(RATE) as traffic,
    ):
        back, _ = bad_canary(stack, traffic, skewed, "2", f"{fmt}: feature skew vs profile")
    assert traffic.report is not None
    print(f"\n{fmt} client traffic: {traffic.report.summary()}")
    psi = back.checks("fail")["feature-psi/monthly_charges"]
    assert psi["value"] > ANALYSIS["drift"]["features"]["psi"]
    assert psi["samples"] >= ANALYSIS["minSamples"]
    assert "feature-psi of monthly_charges" in back.last_history["reason"]
