"""The operator's own metrics: rounds, rollbacks, promotions, Degraded, /metrics."""

import math
import socket
import urllib.request
from datetime import UTC, datetime

import pytest

from modeldeploy import contract
from modeldeploy.api import CheckResult, Condition, ModelDeploymentStatus, Owner
from modeldeploy.rollout import AnalysisSignal, Event
from modeldeploy.telemetry import OperatorMetrics

pytestmark = pytest.mark.unit

KEY = ("ml", "churn")
MD = {"namespace": "ml", "name": "churn"}
T0 = datetime(2026, 11, 20, tzinfo=UTC)


def degraded(status: str, reason: str) -> ModelDeploymentStatus:
    condition = Condition(type="Degraded", status=status, reason=reason, last_transition_time=T0)  # type: ignore[arg-type]
    return ModelDeploymentStatus(conditions=[condition])


def test_rounds_count_by_result_and_keep_the_last_value() -> None:
    metrics = OperatorMetrics()
    psi = CheckResult(name="feature-psi/age", value=0.4, threshold=0.1, samples=500, verdict="fail")
    failed = AnalysisSignal(revision="s", verdict="fail", time=T0, checks=(psi,))
    metrics.observe_round(KEY, "stable", failed, 0.02)
    gone = CheckResult(name="feature-psi", threshold=0.1, verdict="inconclusive")
    no_data = AnalysisSignal("s", "inconclusive", T0, waiting="no-data", checks=(gone,))
    metrics.observe_round(KEY, "stable", no_data, 5.0)
    sample = metrics.registry.get_sample_value
    stable = MD | {"track": "stable"}
    assert sample(contract.OPERATOR_ANALYSES_TOTAL, stable | {"result": "fail"}) == 1
    assert sample(contract.OPERATOR_ANALYSES_TOTAL, stable | {"result": "no_data"}) == 1
    check = stable | {"check": "feature-psi"}
    assert sample(contract.OPERATOR_CHECK_VERDICTS_TOTAL, check | {"verdict": "fail"}) == 1
    value = sample(contract.OPERATOR_CHECK_VALUE, check)
    assert value is not None
    assert math.isnan(value)  # no data in the last round
    assert sample(contract.OPERATOR_ANALYSIS_DURATION_SECONDS + "_count") == 2
    metrics.forget(KEY)
    assert sample(contract.OPERATOR_CHECK_VALUE, check) is None


def test_plans_count_rollbacks_promotions_and_show_degraded() -> None:
    metrics = OperatorMetrics()
    events = [
        Event("Warning", "RolledBack", "c rolled back"),
        Event("Normal", "Promoted", "c is stable"),
        Event("Warning", "Aborted", "c aborted"),
        Event("Normal", "StepAdvanced", "50%"),
    ]
    metrics.observe_plan(KEY, events, degraded("True", "AnalysisFailed"), 0.01)
    sample = metrics.registry.get_sample_value
    assert sample(contract.OPERATOR_ROLLBACKS_TOTAL, MD | {"reason": "RolledBack"}) == 1
    assert sample(contract.OPERATOR_ROLLBACKS_TOTAL, MD | {"reason": "Aborted"}) == 1
    assert sample(contract.OPERATOR_PROMOTIONS_TOTAL, MD) == 1
    assert sample(contract.OPERATOR_DEGRADED, MD | {"reason": "AnalysisFailed"}) == 1
    metrics.observe_plan(KEY, [], degraded("False", "AsExpected"), 0.01)
    assert sample(contract.OPERATOR_DEGRADED, MD | {"reason": "AnalysisFailed"}) is None
    assert sample(contract.OPERATOR_DEGRADED, MD | {"reason": "AsExpected"}) == 0
    assert sample(contract.OPERATOR_RECONCILE_DURATION_SECONDS + "_count") == 2
    metrics.forget(KEY)
    assert sample(contract.OPERATOR_DEGRADED, MD | {"reason": "AsExpected"}) is None


def test_metrics_are_served_and_a_taken_port_is_not_fatal() -> None:
    metrics = OperatorMetrics()
    metrics.observe_plan(KEY, [Event("Normal", "Promoted", "x")], ModelDeploymentStatus(), 0.1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert not metrics.serve("127.0.0.1", taken.getsockname()[1])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert metrics.serve("127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        metrics.close()
    assert f'{contract.OPERATOR_PROMOTIONS_TOTAL}{{name="churn",namespace="ml"}} 1.0' in text


def test_owner_info_is_one_series_per_model_deployment() -> None:
    metrics = OperatorMetrics()
    sample = metrics.registry.get_sample_value
    metrics.observe_owner(KEY, None)
    unowned = MD | {"team": "", "contact": "", "runbook_url": ""}
    assert sample(contract.OPERATOR_OWNER_INFO, unowned) == 1
    owner = Owner(team="retention", runbook_url="https://runbooks.example/churn")
    metrics.observe_owner(KEY, owner)
    owned = MD | {"team": "retention", "contact": "", "runbook_url": owner.runbook_url}
    assert sample(contract.OPERATOR_OWNER_INFO, owned) == 1
    assert sample(contract.OPERATOR_OWNER_INFO, unowned) is None
    metrics.forget(KEY)
    assert sample(contract.OPERATOR_OWNER_INFO, owned) is None
