"""The models refuse exactly the specs the apiserver refuses (examples/.../rejected.yaml) and
accept the edge cases it accepts (accepted.yaml).

The apiserver side of the same table runs in tests/integration/test_crd_apply.py.
"""

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modeldeploy.analysis.queries import TEMPLATE_VARIABLES, template_variables
from modeldeploy.api import CustomCheck, ModelDeployment
from modeldeploy.api.types import quantity_value
from modeldeploy.crd import render_crd

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modeldeployments"
CASES: list[dict[str, Any]] = yaml.safe_load((EXAMPLES / "rejected.yaml").read_text())
ACCEPTED: list[dict[str, Any]] = yaml.safe_load((EXAMPLES / "accepted.yaml").read_text())
MINIMAL: dict[str, Any] = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_models_refuse_what_the_apiserver_refuses(case: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelDeployment.model_validate(merge_patch(MINIMAL, case["patch"]))
    assert case.get("python", case["error"]) in str(caught.value)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c["case"] for c in ACCEPTED])
def test_models_accept_what_the_apiserver_accepts(case: dict[str, Any]) -> None:
    ModelDeployment.model_validate(merge_patch(MINIMAL, case["patch"]))


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        (2, Decimal(2)),
        ("500m", Decimal("0.5")),
        ("1Gi", Decimal(2**30)),
        ("1.5k", Decimal(1500)),
        ("1e3", Decimal(1000)),
        ("-1Mi", Decimal(-(2**20))),
        (".5", Decimal("0.5")),
        ("2E", Decimal(2 * 10**18)),
    ],
)
def test_quantity_values(value: int | str, amount: Decimal) -> None:
    assert quantity_value(value) == amount


@pytest.mark.parametrize(
    "query",
    ["{{window}}", 'x{a="{{ stableRevision }}"}', '{a="b"}', "{{{revision}}}", "plain"],
)
def test_custom_query_placeholders_the_runtime_renders_are_accepted(query: str) -> None:
    own = f'{query} + own{{revision="{{{{revision}}}}",namespace="{{{{namespace}}}}"}}'
    check = CustomCheck(name="q", query=own, min=0)
    assert template_variables(check.query) <= set(TEMPLATE_VARIABLES)


@pytest.mark.parametrize("query", ["{{revison}}", "{{revision}", "a }}", "{{ }}", "{{window}}}}"])
def test_custom_query_placeholders_the_runtime_refuses_are_refused(query: str) -> None:
    with pytest.raises(ValidationError, match="may only use the placeholders"):
        CustomCheck(name="q", query=query, min=0)


def test_the_unpatched_example_is_valid() -> None:
    ModelDeployment.model_validate(MINIMAL)


def cel_messages(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            found.add(rule["message"])
        for value in node.values():
            found |= cel_messages(value)
    elif isinstance(node, list):
        for value in node:
            found |= cel_messages(value)
    return found


def test_every_cel_rule_has_a_rejected_case() -> None:
    errors = [case["error"] for case in CASES]
    untested = {m for m in cel_messages(render_crd()) if not any(e in m for e in errors)}
    assert not untested, f"add a case to rejected.yaml for each of {sorted(untested)}"


def test_cases_are_distinct() -> None:
    patches = [yaml.safe_dump(case["patch"], sort_keys=True) for case in CASES]
    assert len(set(patches)) == len(patches)
    assert len(CASES) >= 25
