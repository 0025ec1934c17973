"""The chart's monitoring: metric names only from the contract, PromQL that Prometheus' own
promtool accepts, recording rules and alerts checked on synthetic series (`promtool test
rules`), the Grafana dashboard, and the kube-state-metrics configuration the status alerts
read."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from test_chart_render import CHART, NAMESPACE, RELEASE, one, render

from modeldeploy import contract
from modeldeploy.api import Phase

pytestmark = pytest.mark.unit

MONITORING: dict[str, Any] = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    }
}
METRIC = re.compile(r"\bmodeldeploy_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
KSM_METRIC = re.compile(r"\bkube_customresource_[a-z0-9_]+")
KSM_CONFIG = CHART / "files" / "kube-state-metrics.yaml"


def contract_metrics() -> set[str]:
    return {
        value
        for name, value in vars(contract).items()
        if name.isupper() and isinstance(value, str) and value.startswith(contract.PREFIX)
    }


def series_name(name: str) -> str:
    """A histogram's series name without its _bucket/_sum/_count suffix."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in contract_metrics():
            return name.removesuffix(suffix)
    return name


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render(MONITORING)


@pytest.fixture(scope="module")
def rule_groups(objects: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, Any] = {"groups": one(objects, "PrometheusRule")["spec"]["groups"]}
    return groups


@pytest.fixture(scope="module")
def dashboard(objects: list[dict[str, Any]]) -> dict[str, Any]:
    configmap = one(objects, "ConfigMap", f"{RELEASE}-modeldeploy-dashboard")
    board: dict[str, Any] = json.loads(configmap["data"]["modeldeploy.json"])
    return board


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: it comes with Prometheus (`hack/testenv.sh install`)")
    return found


def test_every_metric_name_is_in_the_contract(
    rule_groups: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    text = json.dumps(rule_groups) + json.dumps(dashboard)
    used = {series_name(name) for name in METRIC.findall(text)}
    assert used, "no modeldeploy_* metric found"
    assert used <= contract_metrics(), sorted(used - contract_metrics())
    # The analysis' inputs are all charted.
    for name in (
        contract.REQUESTS_TOTAL,
        contract.REQUEST_DURATION_SECONDS,
        contract.FEATURE_BIN_TOTAL,
        contract.FEATURE_BASELINE_RATIO,
        contract.PREDICTION_BIN_TOTAL,
    ):
        assert name in used, name


def test_status_alerts_read_the_shipped_kube_state_metrics_config(
    rule_groups: dict[str, Any],
) -> None:
    config = yaml.safe_load(KSM_CONFIG.read_text())
    (resource,) = config["spec"]["resources"]
    assert resource["groupVersionKind"] == {
        "group": "modeldeploy.io",
        "version": "v1alpha1",
        "kind": "ModelDeployment",
    }
    provided = {f"kube_customresource_{m['name']}" for m in resource["metrics"]}
    used = set(KSM_METRIC.findall(json.dumps(rule_groups)))
    assert used, "no status alert"
    assert used <= provided, sorted(used - provided)
    (phases,) = [m for m in resource["metrics"] if m["each"]["type"] == "StateSet"]
    assert phases["each"]["stateSet"]["list"] == list(get_args(Phase))


def test_promtool_accepts_the_rules(rule_groups: dict[str, Any], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


IDENTITY = 'namespace="ml", model="churn", version="7", revision="9a1b2c3d4e"'
OPERATOR_LABELS = 'namespace="ml", name="churn", reason="RolledBack"'
OWNER = {
    "team": "retention",
    "contact": "ml-oncall@example.com",
    "runbook_url": "https://runbooks.example/churn",
}
KILLED_OWNER = 'team="fraud-squad", runbook_url="https://runbooks.example/fraud"'
OWNER_LABELS = 'namespace="ml", name="churn", ' + ", ".join(f'{k}="{v}"' for k, v in OWNER.items())


def rule_tests() -> dict[str, Any]:
    """Two hours of one revision: tenure's values fall 80/20 in two bins whose training
    baseline is 50/50 (PSI 0.3 ln 1.6 + 0.3 ln 2.5 = 0.4159), and 10% of requests fail."""

    def series(name: str, labels: str, values: str) -> dict[str, str]:
        return {"series": f'{name}{{{IDENTITY}, pod="p", {labels}}}', "values": values}

    bins = contract.FEATURE_BIN_TOTAL
    baseline = contract.FEATURE_BASELINE_RATIO
    requests = contract.REQUESTS_TOTAL
    return {
        "interval": "1m",
        "input_series": [
            series(bins, 'feature="tenure", bin="0"', "0+8x130"),
            series(bins, 'feature="tenure", bin="1"', "0+2x130"),
            series(baseline, 'feature="tenure", bin="0"', "0.5x130"),
            series(baseline, 'feature="tenure", bin="1"', "0.5x130"),
            series(requests, 'code="200"', "0+90x130"),
            series(requests, 'code="500"', "0+10x130"),
            # The operator's own metrics: a rollback at 1h, Degraded throughout; no `up`
            # series of the operator (it is down).
            {
                "series": f"{contract.OPERATOR_ROLLBACKS_TOTAL}{{{OPERATOR_LABELS}}}",
                "values": "_x60 1x70",
            },
            {
                "series": f"{contract.OPERATOR_DEGRADED}{{{OPERATOR_LABELS}}}",
                "values": "1x130",
            },
            # churn's spec.owner; fraud names none (and has no info series: an operator
            # before 0.2, say), so its alert comes without owner labels.
            {"series": f"{contract.OPERATOR_OWNER_INFO}{{{OWNER_LABELS}}}", "values": "1x130"},
            {
                "series": f'{contract.OPERATOR_DEGRADED}{{namespace="ml", name="fraud", '
                'reason="ObjectNotOwned"}',
                "values": "1x130",
            },
            {
                "series": 'kube_customresource_modeldeployment_condition{namespace="ml", '
                'modeldeployment="churn", type="Killed", reason="NotEngaged"}',
                "values": "0x130",
            },
            {
                "series": 'kube_customresource_modeldeployment_condition{namespace="ml", '
                'modeldeployment="fraud", type="Killed", reason="KillSwitchEngaged", '
                f"{KILLED_OWNER}}}",
                "values": "_x100 1x30",
            },
        ],
        "promql_expr_test": [
            {
                "expr": "round(modeldeploy:feature:psi, 0.0001) * 10000",
                "eval_time": "2h",
                "exp_samples": [
                    {"labels": f'{{{IDENTITY}, feature="tenure"}}', "value": 4159},
                ],
            },
            {
                "expr": 'modeldeploy:feature_bin:ratio{bin="0"}',
                "eval_time": "2h",
                "exp_samples": [
                    {
                        "labels": f'modeldeploy:feature_bin:ratio{{{IDENTITY}, feature="tenure", '
                        'bin="0"}',
                        "value": 0.8,
                    },
                ],
            },
            {
                "expr": "modeldeploy:errors:ratio",
                "eval_time": "2h",
                "exp_samples": [
                    {"labels": f"modeldeploy:errors:ratio{{{IDENTITY}}}", "value": 0.1}
                ],
            },
        ],
    }


def expected_alerts() -> list[dict[str, Any]]:
    identity = {"namespace": "ml", "model": "churn", "version": "7", "revision": "9a1b2c3d4e"}
    drift = {
        "exp_labels": {**identity, "feature": "tenure", "severity": "warning"},
        "exp_annotations": {
            "summary": "Feature tenure of model churn drifts from its training profile",
            "description": "PSI 0.416 over 1h for revision 9a1b2c3d4e in ml (threshold 0.2).",
        },
    }
    errors = {
        "exp_labels": {**identity, "severity": "warning"},
        "exp_annotations": {
            "summary": "Model churn answers 5xx to 10% of requests",
            "description": "Revision 9a1b2c3d4e in ml, over 5m (threshold 0.05).",
        },
    }
    operator = {"namespace": "ml", "name": "churn", "reason": "RolledBack", **OWNER}
    owned = {"owner": "retention (ml-oncall@example.com)", "runbook_url": OWNER["runbook_url"]}
    rolled_back = {
        "exp_labels": {**operator, "severity": "warning"},
        "exp_annotations": {
            **owned,
            "summary": "ModelDeployment ml/churn rolled its canary back",
            "description": "The new revision failed its analysis (or its warm-up, or its bake "
            "time) and the stable serves; `kubectl describe modeldeployment` names the failed "
            "check. A new revision (fixed model or spec) is rolled out again.",
        },
    }
    degraded = {
        "exp_labels": {**operator, "severity": "warning"},
        "exp_annotations": {
            **owned,
            "summary": "ModelDeployment ml/churn is Degraded (RolledBack)",
        },
    }
    unowned = {
        "exp_labels": {
            "namespace": "ml", "name": "fraud", "reason": "ObjectNotOwned", "severity": "warning",
        },
        "exp_annotations": {
            "owner": "", "runbook_url": "",
            "summary": "ModelDeployment ml/fraud is Degraded (ObjectNotOwned)",
        },
    }  # fmt: skip
    killed = {
        "exp_labels": {
            "namespace": "ml", "modeldeployment": "fraud", "type": "Killed",
            "reason": "KillSwitchEngaged", "team": "fraud-squad",
            "runbook_url": "https://runbooks.example/fraud", "severity": "info",
        },
        "exp_annotations": {
            "summary": "The kill switch of ModelDeployment ml/fraud is engaged",
            "owner": "fraud-squad", "runbook_url": "https://runbooks.example/fraud",
        },
    }  # fmt: skip
    down = {
        "exp_labels": {
            "namespace": NAMESPACE,
            "job": f"{RELEASE}-modeldeploy-metrics",
            "severity": "critical",
        },
        "exp_annotations": {
            "summary": "The modeldeploy operator is down",
            "description": f"The operator {RELEASE}-modeldeploy in {NAMESPACE} is not up: "
            "rollouts, analyses and rollbacks are not happening.",
        },
    }
    return [
        # `for: 30m` of drift: not yet 20 minutes in, firing at 2h.
        {"eval_time": "20m", "alertname": "ModelFeatureDrift", "exp_alerts": []},
        {"eval_time": "2h", "alertname": "ModelFeatureDrift", "exp_alerts": [drift]},
        {"eval_time": "2h", "alertname": "ModelHighErrorRatio", "exp_alerts": [errors]},
        # The rollback counter is born at 1h: an alert for 15 minutes, then silence.
        {"eval_time": "59m", "alertname": "ModelDeploymentRolledBack", "exp_alerts": []},
        {"eval_time": "65m", "alertname": "ModelDeploymentRolledBack", "exp_alerts": [rolled_back]},
        {"eval_time": "2h", "alertname": "ModelDeploymentRolledBack", "exp_alerts": []},
        {
            "eval_time": "2h",
            "alertname": "ModelDeploymentDegraded",
            "exp_alerts": [degraded, unowned],
        },
        {"eval_time": "2h", "alertname": "ModelDeployOperatorDown", "exp_alerts": [down]},
        {"eval_time": "1h", "alertname": "ModelDeploymentKilled", "exp_alerts": []},
        {"eval_time": "2h", "alertname": "ModelDeploymentKilled", "exp_alerts": [killed]},
    ]


def test_rules_and_alerts_on_synthetic_series(rule_groups: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups))
    checks = {**rule_tests(), "alert_rule_test": expected_alerts()}
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump(
            {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [checks]}
        )
    )
    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard(dashboard: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    configmap = one(objects, "ConfigMap", f"{RELEASE}-modeldeploy-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["uid"] == "modeldeploy-models"
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables == ["datasource", "namespace", "model", "feature"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            # Model series by model; the operator's own by namespace (they carry the
            # ModelDeployment's name, not the model's).
            scope = (
                'namespace=~"$namespace"' if "_operator_" in target["expr"] else 'model=~"$model"'
            )
            assert scope in target["expr"], (panel["title"], target["expr"])


def test_operator_down_without_the_service_monitor_reads_kube_state_metrics() -> None:
    values = {"monitoring": {"prometheusRule": {"enabled": True}}}
    groups = one(render(values), "PrometheusRule")["spec"]["groups"]
    rules = {r.get("alert"): r for g in groups for r in g["rules"]}
    expr = rules["ModelDeployOperatorDown"]["expr"]
    assert expr.startswith("kube_deployment_status_replicas_available{"), expr
    assert f'deployment="{RELEASE}-modeldeploy"' in expr


def test_pod_monitor_scrapes_model_pods_once(objects: list[dict[str, Any]]) -> None:
    monitor = one(objects, "PodMonitor")
    assert monitor["spec"]["selector"] == {
        "matchExpressions": [{"key": "modeldeploy.io/name", "operator": "Exists"}]
    }
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    namespaced = one(render({**MONITORING, "watchNamespaces": ["ml"]}), "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}


def test_service_monitor_scrapes_the_operator(objects: list[dict[str, Any]]) -> None:
    service = one(objects, "Service", f"{RELEASE}-modeldeploy-metrics")
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", 8090, "metrics")
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = one(objects, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")


def test_monitoring_is_off_by_default() -> None:
    kinds = {o["kind"] for o in render()}
    assert not kinds & {"Service", "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
