"""docs/reference.md: generated from the models, current, complete, every rule by its message."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modeldeploy.api import ApiModel
from modeldeploy.api.base import CEL_RULES_KEY
from modeldeploy.cli import app
from modeldeploy.crd import openapi_schema, root_schema
from modeldeploy.reference import (
    UndescribedFieldError,
    anchor,
    objects,
    render_reference,
    stale_reference,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"


def test_committed_reference_is_current() -> None:
    problem = stale_reference(REFERENCE)
    assert problem is None, problem


def test_stale_reference_is_detected_with_the_fix_in_the_message(tmp_path: Path) -> None:
    target = tmp_path / "reference.md"
    assert "run `modeldeploy docs reference`" in (stale_reference(target) or "")
    target.write_text(REFERENCE.read_text() + "edit\n")
    assert "is stale" in (stale_reference(target) or "")


def test_cli_writes_and_checks(tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "docs" / "reference.md")
    failed = runner.invoke(app, ["docs", "reference", "--check", "--output", out])
    assert failed.exit_code == 1
    assert "run `modeldeploy docs reference`" in failed.output
    assert runner.invoke(app, ["docs", "reference", "--output", out]).exit_code == 0
    checked = runner.invoke(app, ["docs", "reference", "--check", "--output", out])
    assert checked.exit_code == 0, checked.output


def test_a_field_without_description_is_refused() -> None:
    class Undescribed(ApiModel):
        count: int

    with pytest.raises(UndescribedFieldError, match="count has no description"):
        objects(openapi_schema(Undescribed))


def rule_messages(node: dict[str, Any]) -> Iterator[str]:
    for rule in node.get(CEL_RULES_KEY, []):
        yield rule["message"]
    for sub in node.get("properties", {}).values():
        yield from rule_messages(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from rule_messages(node[key])


def test_every_rule_of_the_crd_is_in_the_reference_by_its_message_and_cel() -> None:
    text = render_reference()
    messages = set(rule_messages(root_schema()))
    assert len(messages) > 20
    for message in messages:
        assert message.replace("<", "&lt;") in text, message


def row(section: str, field: str) -> list[str]:
    text = render_reference().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    starts = (f"| `{field}`", f"| [`{field}`]")
    line = next(line for line in text.splitlines() if line.startswith(starts))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_rows_carry_type_default_limits_and_description() -> None:
    assert row("spec.replicas", "minWarm") == [
        "`minWarm`",
        "`integer`",
        "`2`",
        "1 to 1000",
        "Ready, warmed-up pods the stable revision never drops below, rollouts included.",
    ]
    steps = row("spec.rollout.canary", "steps")
    assert steps[1:4] == ["`[]integer`", "", "1 to 10 items; each item: 1 to 100"]
    psi = row("spec.analysis.drift.features", "psi")
    assert psi[2:4] == ["`0.05`", "> 0 and &lt;= 100"]
    assert row("spec", "imagePolicy")[3] == "one of `requireDigest`, `allowTags`"
    assert row("spec.model", "name")[2] == "required"
    interval = row("spec.analysis", "interval")
    assert interval[2] == "`30s`"
    assert "must be a duration longer than 0s" in interval[3]
    assert "Defaults to" not in interval[4]  # a column of its own here


def test_sections_link_and_a_repeated_object_is_documented_once() -> None:
    text = render_reference()
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert "spec.template.env[]" in headings
    assert not any(h.startswith("spec.fallback.template") for h in headings)
    assert row("spec.fallback", "template")[0] == "[`template`](#spectemplate)"
    for target in {link.split(")")[0] for link in text.split("](#")[1:]}:
        assert target in {anchor(h) for h in headings}, target
