"""The API models: defaults, wire form, round trips of the examples, status helpers."""

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from modeldeploy.api import (
    HISTORY_LIMIT,
    Canary,
    CheckResult,
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelRef,
    Replicas,
    Rollout,
    parse_duration,
    to_wire,
)

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modeldeployments"
DIGEST = "@sha256:" + "a" * 64


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return data


def test_defaults_a_careful_operator_would_choose() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"name": "churn", "version": "1"}, "image": "reg.example/churn" + DIGEST}
    )
    assert spec.image_policy == "requireDigest"
    assert (spec.replicas.min_warm, spec.replicas.max) == (2, 10)
    assert spec.autoscaling.target_cpu_utilization == 70
    assert spec.warmup.max_latency_ms == 1000
    assert parse_duration(spec.warmup.timeout) == timedelta(minutes=10)

    rollout = spec.rollout
    assert (rollout.canary.percent, rollout.canary.steps) == (10, None)
    assert rollout.step_interval == "5m"
    assert rollout.traffic.mode == "replicas"
    assert rollout.traffic.http_route is None
    assert rollout.shadow.percent == 0
    assert not rollout.require_approval
    assert not rollout.paused
    assert rollout.bake_time == "10m"

    analysis = spec.analysis
    assert (analysis.interval, analysis.window) == ("30s", "5m")
    assert analysis.false_positive_rate == 0.01
    assert analysis.min_samples is None
    assert analysis.failure_limit == 2
    assert analysis.on_no_data == "hold"
    assert analysis.no_data_timeout == "15m"
    assert (analysis.latency.p95_ms, analysis.latency.p99_ms) == (None, None)
    assert analysis.error_rate.max == 0.01
    assert analysis.invalid_input_rate.max_increase == 0.02
    assert analysis.drift.enabled
    features, predictions = analysis.drift.features, analysis.drift.predictions
    assert (features.psi, features.ks, features.kl, features.js) == (0.05, None, None, None)
    assert features.wasserstein is None
    assert (predictions.psi, predictions.ks, predictions.kl) == (0.1, None, None)
    assert (predictions.js, predictions.wasserstein) == (None, None)
    assert analysis.drift.missing_rate.max_increase == 0.05
    assert analysis.custom == []

    assert not spec.kill_switch.engaged
    assert spec.kill_switch.mode == "scaleToZero"
    assert spec.fallback is None
    assert spec.prometheus is None
    assert spec.template.termination_grace_period_seconds == 30


def test_camel_case_on_the_wire_snake_case_in_python() -> None:
    by_name = Replicas(min_warm=3, max=5)
    by_alias = Replicas.model_validate({"minWarm": 3, "max": 5})
    assert by_name == by_alias
    assert to_wire(by_name) == {"minWarm": 3, "max": 5}
    wire = to_wire(ModelDeployment.model_validate(load("complete.yaml")))
    assert "targetCPUUtilization" in wire["spec"]["autoscaling"]
    assert "p95Ms" in wire["spec"]["analysis"]["latency"]
    assert "httpRoute" in wire["spec"]["rollout"]["traffic"]


def test_unknown_fields_are_errors_not_silently_dropped() -> None:
    with pytest.raises(ValidationError, match="minWarmm"):
        Replicas.model_validate({"minWarmm": 3})


def test_models_are_immutable() -> None:
    replicas = Replicas()
    with pytest.raises(ValidationError):
        replicas.max = 3  # type: ignore[misc]
    assert replicas.model_copy(update={"max": 3}).max == 3


def is_contained(part: Any, whole: Any) -> bool:
    """Everything in `part` is in `whole` with the same value (`whole` may add defaults)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            k in whole and is_contained(v, whole[k]) for k, v in part.items()
        )
    if isinstance(part, list):
        return (
            isinstance(whole, list)
            and len(part) == len(whole)
            and all(is_contained(p, w) for p, w in zip(part, whole, strict=True))
        )
    return bool(part == whole)


@pytest.mark.parametrize("name", ["minimal.yaml", "complete.yaml"])
def test_examples_round_trip(name: str) -> None:
    written = load(name)
    parsed = ModelDeployment.model_validate(written)
    wire = to_wire(parsed)
    assert ModelDeployment.model_validate(wire) == parsed
    assert to_wire(ModelDeployment.model_validate(wire)) == wire
    assert is_contained(written, wire), "a field of the example was lost on the way"
    # The brief's spelling of the wire form works too.
    assert (
        ModelDeployment.model_validate(parsed.model_dump(by_alias=True, exclude_none=True))
        == parsed
    )


def model_fields(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every `Class.field` reachable from `model` (through nested models, lists, optionals)."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    found: set[str] = set()
    for name, info in model.model_fields.items():
        found.add(f"{model.__name__}.{name}")
        for sub in nested_models(info.annotation):
            found |= model_fields(sub, seen)
    return found


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in nested_models(arg)]


def fields_written(value: Any) -> set[str]:
    """Every `Class.field` the user set explicitly in a parsed object."""
    if isinstance(value, BaseModel):
        found = {f"{type(value).__name__}.{name}" for name in value.model_fields_set}
        for name in value.model_fields_set:
            found |= fields_written(getattr(value, name))
        return found
    if isinstance(value, list | tuple):
        return set().union(*(fields_written(v) for v in value)) if value else set()
    return set()


def test_complete_example_sets_every_spec_field() -> None:
    # It uses steps, endpoint, a header cohort.
    exclusive_alternatives = {"Canary.percent", "Prometheus.url", "Cohort.cookie"}
    exclusive_alternatives |= {"CookieCohort.name", "CookieCohort.value"}
    refused_unless_empty = {"Capabilities.add", "SELinuxOptions.user", "SELinuxOptions.role"}
    every = model_fields(ModelDeploymentSpec)
    written = fields_written(ModelDeployment.model_validate(load("complete.yaml")).spec)
    missing = every - written - exclusive_alternatives - refused_unless_empty
    assert not missing, f"complete.yaml does not set {sorted(missing)}"


def test_minimal_example_sets_only_what_is_required() -> None:
    spec = ModelDeployment.model_validate(load("minimal.yaml")).spec
    assert spec.model_fields_set == {"model", "image"}


NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_status_example_sets_every_status_field_and_round_trips() -> None:
    written = load("status.yaml")["status"]
    status = ModelDeploymentStatus.model_validate(written)
    # At step 2: no cohort phase (status.cohort is set only there, without a step).
    missing = (
        model_fields(ModelDeploymentStatus)
        - fields_written(status)
        - {"ModelDeploymentStatus.cohort"}
    )
    assert not missing, f"status.yaml does not set {sorted(missing)}"
    assert to_wire(status) == written
    check = status.last_analysis.checks[3] if status.last_analysis else None
    assert check is not None
    assert (check.value, check.verdict) == (None, "inconclusive")
    assert status.step_started_at == NOW


def test_wire_form_leaves_out_empty_lists_and_maps() -> None:
    assert to_wire(ModelDeploymentStatus()) == {
        "phase": "Pending",
        "message": "",
        "canaryWeight": 0,
        "requestedWeight": 0,
        "consecutiveFailures": 0,
    }
    template = ModelDeployment.model_validate(load("minimal.yaml")).spec.template
    assert to_wire(template) == {
        "resources": {},
        "terminationGracePeriodSeconds": 30,
        "automountServiceAccountToken": False,
        "securityProfile": "restricted",
    }


def test_status_times_need_a_time_zone() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        ModelDeploymentStatus(step_started_at=datetime(2026, 1, 1))


def test_status_refuses_values_that_are_not_json() -> None:
    with pytest.raises(ValidationError):
        CheckResult(name="x", value=float("nan"), threshold=1, verdict="fail")


def test_conditions_are_unique_by_type() -> None:
    condition = ModelDeploymentStatus.model_validate(load("status.yaml")["status"]).conditions[1]
    with pytest.raises(ValidationError, match="duplicate type 'Progressing'"):
        ModelDeploymentStatus(conditions=[condition, condition])


def test_history_is_bounded() -> None:
    entry = HistoryEntry(revision="rev", version="1", image="img", event="Started", time=NOW)
    with pytest.raises(ValidationError, match=f"at most {HISTORY_LIMIT} items"):
        ModelDeploymentStatus(history=[entry] * (HISTORY_LIMIT + 1))


def test_default_canary_stays_implicit_on_the_wire() -> None:
    # The CRD does not fill in canary (adding steps later must not collide with a stored
    # percent), so the wire form leaves it out unless it was written.
    assert Rollout().canary == Canary(percent=10)
    assert "canary" not in to_wire(Rollout())
    assert to_wire(Rollout(canary=Canary(percent=10)))["canary"] == {"percent": 10}
    assert Rollout.model_validate(to_wire(Rollout())) == Rollout()


def test_resource_name_must_leave_room_for_derived_names() -> None:
    spec = {"model": {"name": "m", "version": "1"}, "image": "reg.example/m" + DIGEST}
    ModelDeployment.model_validate({"metadata": {"name": "a" * 50}, "spec": spec})
    for bad in ("a" * 51, "churn.v2"):
        with pytest.raises(ValidationError, match=r"metadata\.name must be at most 50 characters"):
            ModelDeployment.model_validate({"metadata": {"name": bad}, "spec": spec})


def test_parsing_does_not_alter_its_input() -> None:
    written = load("complete.yaml")
    before = copy.deepcopy(written)
    ModelDeployment.model_validate(written)
    assert written == before


def test_model_ref_is_a_label_value() -> None:
    ModelRef(name="churn", version="2026-11-20_rc.1")
    with pytest.raises(ValidationError, match="must be a valid label value"):
        ModelRef(name="churn", version="2026/11/20")
