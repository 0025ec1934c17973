"""The peers bench's pure parts: one policy in Argo Rollouts', Flagger's and modeldeploy's
terms, the PromQL behind the peers' checks, and the results table."""

from datetime import UTC, datetime

import pytest

from modeldeploy import contract
from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.devenv.peers import (
    ARGO_HASH_LABEL,
    NAME,
    SUMMARY_HEADERS,
    Footprint,
    Rules,
    RunResult,
    argo_analysis_template,
    argo_rollout,
    feature_psi_query,
    flagger_canary,
    flagger_deployment,
    flagger_halt_reason,
    flagger_metric_templates,
    footprint_rows,
    latency_p95_query,
    modeldeploy_spec,
    parse_exports,
    summary_rows,
    target_lines,
)
from modeldeploy.resources.names import LABEL_NAME, LABEL_REVISION

pytestmark = pytest.mark.unit

PROMETHEUS = "http://127.0.0.1:9090"
IMAGE = "registry.example/ml/churn@sha256:" + "1" * 64


def test_queries_pass_until_the_window_holds_enough_requests() -> None:
    query = latency_p95_query('namespace="a"', "30s", 200)
    assert query.startswith("(((histogram_quantile(0.95, sum by (le) (rate(")
    assert f'{contract.REQUEST_DURATION_SECONDS}_bucket{{namespace="a"}}[30s]' in query
    assert f'(sum(increase({contract.REQUESTS_TOTAL}{{namespace="a"}}[30s])) >= 200)' in query
    assert query.endswith(" or on() vector(0)")
    assert query.count("(") == query.count(")")


def test_feature_psi_compares_window_shares_with_the_exported_baseline() -> None:
    query = feature_psi_query('pod="p"', "30s")
    assert f'increase({contract.FEATURE_BIN_TOTAL}{{pod="p"}}[30s])' in query
    assert f'{contract.FEATURE_BASELINE_RATIO}{{pod="p"}}' in query
    assert "ln(" in query
    assert query.count("(") == query.count(")")


def test_argo_rollout_steps_pause_and_analyse_the_latest_hash() -> None:
    rules = Rules(steps=(25, 50), step_seconds=6)
    rollout = argo_rollout("ns", IMAGE, "3", rules)
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["steps"] == [
        {"setWeight": 25}, {"pause": {"duration": "6s"}},
        {"setWeight": 50}, {"pause": {"duration": "6s"}},
    ]  # fmt: skip
    assert canary["analysis"]["args"][0]["valueFrom"] == {"podTemplateHashValue": "Latest"}
    template = rollout["spec"]["template"]
    assert template["metadata"]["labels"][LABEL_NAME] == NAME
    assert template["metadata"]["labels"][LABEL_REVISION] == "v3"
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env[contract.ENV_MODEL_VERSION]["value"] == "3"
    revision = env[contract.ENV_REVISION]["valueFrom"]["fieldRef"]["fieldPath"]
    assert revision == f"metadata.labels['{ARGO_HASH_LABEL}']"


def test_argo_analysis_aborts_on_the_failing_round_after_the_tolerated_ones() -> None:
    rules = Rules(failure_limit=2, p95_ms=40, interval_seconds=2)
    metrics = argo_analysis_template("ns", PROMETHEUS, rules)["spec"]["metrics"]
    assert [m["name"] for m in metrics] == ["latency-p95", "error-rate", "feature-psi"]
    latency = metrics[0]
    assert latency["failureLimit"] == 1
    assert latency["interval"] == "2s"
    assert latency["successCondition"] == "result[0] <= 0.04"
    assert latency["provider"]["prometheus"]["address"] == PROMETHEUS
    assert 'revision="{{args.canary-hash}}"' in latency["provider"]["prometheus"]["query"]


def test_flagger_blue_green_on_the_kubernetes_provider() -> None:
    rules = Rules(
        steps=(25, 50), step_seconds=6, bake_seconds=5, flagger_interval_seconds=10, p95_ms=40
    )
    canary = flagger_canary("ns", rules)["spec"]
    assert canary["provider"] == "kubernetes"
    assert canary["analysis"]["iterations"] == 2  # 17 s of steps and bake, 10 s rounds
    assert canary["analysis"]["threshold"] == rules.failure_limit
    assert "stepWeights" not in canary["analysis"]  # Blue/Green: no traffic shifting
    ranges = {m["templateRef"]["name"]: m["thresholdRange"] for m in canary["analysis"]["metrics"]}
    assert ranges["latency-p95"] == {"max": 0.04}
    templates = flagger_metric_templates("ns", PROMETHEUS, rules)
    assert {t["metadata"]["name"] for t in templates} == set(ranges)
    query = templates[0]["spec"]["query"]
    assert 'pod=~"{{ target }}-[0-9a-zA-Z]+-[0-9a-zA-Z]+"' in query
    assert "[{{ interval }}]" in query
    deployment = flagger_deployment("ns", IMAGE, "2", rules)
    assert deployment["spec"]["replicas"] == rules.replicas


def test_modeldeploy_spec_is_accepted_by_the_api() -> None:
    spec = {"model": {"name": NAME, "version": "1"}, "image": IMAGE, **modeldeploy_spec(Rules())}
    parsed = ModelDeploymentSpec.model_validate(spec)
    assert parsed.rollout.canary is not None
    assert parsed.analysis.min_samples is None  # anytime-valid tests: no floor of its own


def test_modeldeploy_spec_takes_a_sample_floor_when_asked() -> None:
    spec = {
        "model": {"name": NAME, "version": "1"},
        "image": IMAGE,
        **modeldeploy_spec(Rules(), min_samples=200),
    }
    assert ModelDeploymentSpec.model_validate(spec).analysis.min_samples == 200


def _run(tool: str, scenario: str, outcome: str, seconds: float | None) -> RunResult:
    return RunResult(tool, scenario, scenario != "healthy", outcome, seconds)  # type: ignore[arg-type]


def test_summary_counts_outcomes_and_quantiles_per_scenario_and_tool() -> None:
    results = [
        _run("argo", "slow", "rolled back", 30.0),
        _run("argo", "slow", "rolled back", 40.0),
        _run("argo", "slow", "stuck", None),
        _run("modeldeploy", "slow", "rolled back", 10.0),
        _run("argo", "healthy", "promoted", 20.0),
    ]
    rows = summary_rows(results)
    assert len(rows[0]) == len(SUMMARY_HEADERS)
    assert rows[0] == ["slow", "argo", "3", "2", "0", "1", "35.0 / 39.5", "-"]
    assert rows[1][:2] == ["slow", "modeldeploy"]
    assert rows[2] == ["healthy", "argo", "1", "0", "1", "0", "-", "20.0 / 20.0"]


def test_targets_are_ratios_to_the_faster_peer_and_false_rollback_rates() -> None:
    results = [
        _run("argo", "slow", "rolled back", 30.0),
        _run("flagger", "slow", "rolled back", 40.0),
        _run("modeldeploy", "slow", "rolled back", 12.0),
        _run("argo", "healthy", "rolled back", None),
        _run("modeldeploy", "healthy", "promoted", 20.0),
    ]
    lines = target_lines(results)
    assert lines[0] == (
        "target slow: modeldeploy's median breach→0 is 0.40x the faster peer's (≤ 0.5x: met)"
    )
    assert lines[-1] == "false rollbacks of the healthy version: argo 1/1, modeldeploy 0/1"


def test_footprint_rows() -> None:
    rows = footprint_rows({"argo": Footprint(3.0, 60.0, 50 * 2**20)})
    assert rows == [["argo", "3.0", "5.0", "50"]]


def test_the_peers_paths_are_read_from_the_scripts_exports() -> None:
    printed = 'export ARGO_ROLLOUTS_BIN="/c/argo"\nexport FLAGGER_BIN="/c/flagger"\n'
    assert parse_exports(printed) == {"ARGO_ROLLOUTS_BIN": "/c/argo", "FLAGGER_BIN": "/c/flagger"}


def test_flaggers_reason_is_the_newest_halt_since_the_version_was_deployed() -> None:
    deployed = datetime(2026, 12, 2, 12, 0, 30, 500_000, tzinfo=UTC)
    halt = "Halt advancement "
    events = [
        # An earlier run's Event, folded: its lastTimestamp is before this deploy.
        {"message": halt + "error-rate 0.1 > 0.02", "lastTimestamp": "2026-12-02T12:00:10Z"},
        {"message": halt + "latency-p95 0.08 > 0.05", "lastTimestamp": "2026-12-02T12:00:30Z"},
        {"message": halt + "latency-p95 0.09 > 0.05", "eventTime": "2026-12-02T12:00:41.000000Z"},
        {"message": "Starting canary analysis", "lastTimestamp": "2026-12-02T12:00:50Z"},
    ]
    assert flagger_halt_reason(events, deployed) == halt + "latency-p95 0.09 > 0.05"
    assert flagger_halt_reason(events[:2], deployed) == halt + "latency-p95 0.08 > 0.05"
    assert flagger_halt_reason(events[:1], deployed) == "no halted advancement"
