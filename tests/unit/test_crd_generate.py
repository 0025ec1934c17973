"""The generated CRD: in sync with the models, structural, bounded, self-describing."""

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from modeldeploy.api import ModelDeployment, to_wire
from modeldeploy.cli import app
from modeldeploy.crd import CRD_FILENAME, SchemaError, openapi_schema, render_crd, stale_crd

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "modeldeployments"


def root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = render_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crd_is_current() -> None:
    problem = stale_crd(ROOT / "crds")
    assert problem is None, problem


def test_stale_crd_is_detected_with_the_fix_in_the_message(tmp_path: Path) -> None:
    assert "run `modeldeploy crd`" in (stale_crd(tmp_path) or "")
    (tmp_path / CRD_FILENAME).write_text((ROOT / "crds" / CRD_FILENAME).read_text() + "# edit\n")
    assert "is stale" in (stale_crd(tmp_path) or "")


def test_cli_writes_and_checks(tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "crds")
    failed = runner.invoke(app, ["crd", "--check", "--output", out])
    assert failed.exit_code == 1
    assert "run `modeldeploy crd`" in failed.output
    assert runner.invoke(app, ["crd", "--output", out]).exit_code == 0
    checked = runner.invoke(app, ["crd", "--check", "--output", out])
    assert checked.exit_code == 0, checked.output


def test_identity_subresource_and_columns() -> None:
    crd = render_crd()
    assert crd["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    spec = crd["spec"]
    assert spec["group"] == "modeldeploy.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelDeployment"
    assert spec["names"]["plural"] == "modeldeployments"
    assert spec["names"]["shortNames"] == ["mdep", "modeldeploy"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Phase", "Stable", "Canary", "Weight", "Requested", "Age"]


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


ALLOWED = {
    "description", "type", "format", "enum", "default", "minimum", "exclusiveMinimum",
    "maximum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems",
    "maxProperties", "items", "properties", "additionalProperties", "required", "anyOf",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-validations",
}  # fmt: skip


def test_schema_is_structural_and_bounded() -> None:
    for path, node in nodes(root_schema()):
        if path in (".apiVersion", ".kind"):
            continue  # checked by the apiserver itself
        assert set(node) <= ALLOWED, f"{path}: {set(node) - ALLOWED}"
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
            assert "maxLength" in node
            continue
        assert "anyOf" not in node, path
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}
        assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "string":
            assert "maxLength" in node or "enum" in node, f"{path}: unbounded string"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path}: unbounded list"
        if "additionalProperties" in node:
            assert "maxProperties" in node, f"{path}: unbounded map"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True
            assert "minimum" in node


def test_preserve_unknown_fields_only_for_passthrough_kubernetes_types() -> None:
    schema = root_schema()
    passthrough = {p for p, n in nodes(schema) if n.get("x-kubernetes-preserve-unknown-fields")}
    pod = {".affinity", ".topologySpreadConstraints[]"}
    assert passthrough == {
        ".spec.autoscaling.metrics[]",
        ".spec.autoscaling.behavior",
        *(f".spec.template{p}" for p in pod),
        *(f".spec.fallback.template{p}" for p in pod),
    }


def test_every_field_is_described_for_kubectl_explain() -> None:
    undescribed = [
        path
        for path, node in nodes(root_schema())
        if path and not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    # The apiserver refuses any word on metadata (only name and generateName may be set).
    assert undescribed == [".metadata"]


def test_scalar_defaults_are_named_in_descriptions() -> None:
    analysis = root_schema()["properties"]["spec"]["properties"]["analysis"]["properties"]
    assert analysis["falsePositiveRate"]["default"] == 0.01
    assert analysis["falsePositiveRate"]["description"].endswith("Defaults to 0.01.")
    assert "default" not in analysis["minSamples"]
    assert analysis["interval"]["description"].endswith("Defaults to 30s.")


def apply_structural_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """What the apiserver does to an incoming object (apiextensions structural defaulting):
    fill missing properties from `default`, then descend."""
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, sub in schema["properties"].items():
            if name in value:
                value[name] = apply_structural_defaults(value[name], sub)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = apply_structural_defaults(value[key], schema["additionalProperties"])
    elif isinstance(value, list) and "items" in schema:
        return [apply_structural_defaults(v, schema["items"]) for v in value]
    return value


@pytest.mark.parametrize("name", ["minimal.yaml", "complete.yaml"])
def test_apiserver_defaults_equal_model_defaults(name: str) -> None:
    written = yaml.safe_load((EXAMPLES / name).read_text())
    defaulted = apply_structural_defaults(copy.deepcopy(written), root_schema())
    assert defaulted != written or name == "complete.yaml"
    assert defaulted == to_wire(ModelDeployment.model_validate(written))
    assert ModelDeployment.model_validate(defaulted) == ModelDeployment.model_validate(written)


def test_generator_refuses_unbounded_strings() -> None:
    from modeldeploy.api import ApiModel

    class Unbounded(ApiModel):
        text: str

    with pytest.raises(SchemaError, match=r"Unbounded\.text: unbounded string"):
        openapi_schema(Unbounded)


def test_generator_refuses_unions() -> None:
    from modeldeploy.api import ApiModel

    class Union(ApiModel):
        value: int | str

    with pytest.raises(SchemaError, match="unions other than"):
        openapi_schema(Union)
