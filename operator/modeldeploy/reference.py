"""The ModelDeployment field reference (`docs/reference.md`), generated from the CRD schema.

It walks the structural schema `modeldeploy crd` writes (`crd.root_schema`), so that the
reference, `kubectl explain` and the apiserver agree: one section per object, a row per
field with its type, default, limits and description, then the object's cross-field rules
with the message the apiserver (and the models, which check the same `Rule`) report. Rules
of single values (names, durations, quantities, images) are listed once, under "Value
formats". A field without a description is refused, as the CRD generator refuses an
unbounded string. `docs/reference.md` holds the output; a unit test fails when it is stale.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy.api import API_VERSION, KIND, SHORT_NAMES, ModelDeployment
from modeldeploy.api.base import CEL_RULES_KEY
from modeldeploy.crd import CRD_FILENAME, format_default, root_schema, stale_file

REFERENCE_PATH = Path("docs/reference.md")
COMMAND = "modeldeploy docs reference"

Schema = dict[str, Any]


class UndescribedFieldError(ValueError):
    """A field of the API has no description (a docstring under it in the model)."""


@dataclass(frozen=True)
class RuleDoc:
    """One CEL rule of the schema, as a user meets it."""

    message: str
    cel: str
    field: str = ""
    """Where the apiserver reports it, relative to the object (empty: the object itself)."""


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str
    default: str
    """`required`, a default value, or empty (absent means unset)."""
    limits: tuple[str, ...]
    description: str
    section: str = ""
    """Path of the field's own section (objects and lists of objects), else empty."""
    formats: tuple[RuleDoc, ...] = ()
    """Rules of the value itself (also of each item or map value)."""


@dataclass(frozen=True)
class ObjectDoc:
    path: str
    description: str
    fields: tuple[FieldDoc, ...]
    rules: tuple[RuleDoc, ...]


def _rules(node: Schema) -> tuple[RuleDoc, ...]:
    return tuple(
        RuleDoc(rule["message"], rule["rule"], rule.get("fieldPath", "").lstrip("."))
        for rule in node.get(CEL_RULES_KEY, [])
    )


def _has_fields(node: Schema) -> bool:
    return "properties" in node


def _element(node: Schema) -> Schema | None:
    """The schema of a list's items or a map's values, if the node is one."""
    if node.get("type") == "array":
        items: Schema = node["items"]
        return items
    values = node.get("additionalProperties")
    return values if isinstance(values, dict) else None


def _type(node: Schema) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind: str = node["type"]
    element = _element(node)
    if element is not None:
        return f"[]{_type(element)}" if kind == "array" else f"map[string]{_type(element)}"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (any fields)"
    if "format" in node:
        return f"{kind} ({node['format']})"
    return kind


def _range(node: Schema) -> str | None:
    low, high = node.get("minimum"), node.get("maximum")
    low_open = node.get("exclusiveMinimum") is True
    high_open = node.get("exclusiveMaximum") is True
    if low is not None and high is not None and not (low_open or high_open):
        return f"{low} to {high}"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(bounds) or None


def _count(low: int | None, high: int | None, unit: str) -> str | None:
    if low is not None and high is not None:
        return f"{low} to {high} {unit}"
    if high is not None:
        return f"at most {high} {unit}"
    return f"at least {low} {unit}" if low is not None else None


def _own_limits(node: Schema) -> list[str]:
    enum = node.get("enum")
    keys = node.get("x-kubernetes-list-map-keys")
    limits = [
        "one of " + ", ".join(f"`{value}`" for value in enum) if enum else None,
        _range(node),
        _count(node.get("minLength"), node.get("maxLength"), "characters"),
        _count(node.get("minItems"), node.get("maxItems"), "items"),
        _count(None, node.get("maxProperties"), "entries"),
        f"pattern `{node['pattern']}`" if "pattern" in node else None,
        "unique " + ", ".join(f"`{key}`" for key in keys) if keys else None,
    ]
    return [limit for limit in limits if limit]


def _limits(node: Schema) -> tuple[str, ...]:
    """The node's bounds, then those of each item or value (unless it has sections)."""
    limits = _own_limits(node)
    element = _element(node)
    if element is not None and not _has_fields(element):
        each = "each item" if node["type"] == "array" else "each value"
        limits += [f"{each}: {limit}" for limit in _own_limits(element)]
    return tuple(limits)


def _formats(node: Schema) -> tuple[RuleDoc, ...]:
    """Rules on a value (not on an object's fields): its own, and its items' or values'."""
    if _has_fields(node):
        return ()
    element = _element(node)
    return _rules(node) + (_formats(element) if element is not None else ())


def _default(name: str, node: Schema, required: list[str]) -> str:
    if name in required:
        return "required"
    if "default" not in node:
        return ""
    value = node["default"]
    return "its fields' defaults" if isinstance(value, dict) else f"`{format_default(value)}`"


def _section_of(node: Schema, path: str) -> tuple[str, Schema] | None:
    """The path and schema of the object a field opens a section for, if any."""
    if _has_fields(node):
        return path, node
    element = _element(node)
    if element is not None and _has_fields(element):
        return (f"{path}[]" if node["type"] == "array" else f"{path}{{}}"), element
    return None


def _field_path(object_path: str, name: str) -> str:
    """`spec.replicas.minWarm`; the root's fields are `spec`, `status`..."""
    return name if object_path == KIND else f"{object_path}.{name}"


def _shape(path: str, node: Schema) -> str:
    """What makes two sections the same type: the field's name and the object's schema,
    whatever the field's own description and default say (two fields of one name and
    shape, like the pod templates of the model and of the fallback)."""
    name = path.rsplit(".", 1)[-1].removesuffix("[]").removesuffix("{}")
    content = {k: v for k, v in node.items() if k not in ("description", "default")}
    return name + json.dumps(content)


class _Walk:
    """Depth first in field order; an object already documented (the fallback's pod
    template) links to that section instead of repeating it."""

    def __init__(self) -> None:
        self.documented: dict[str, str] = {}

    def objects(self, path: str, node: Schema) -> Iterator[ObjectDoc]:
        self.documented[_shape(path, node)] = path
        required: list[str] = node.get("required", [])
        fields, nested = [], []
        for name, sub in node["properties"].items():
            field_path = _field_path(path, name)
            if not sub.get("description"):
                raise UndescribedFieldError(
                    f"{field_path} has no description: add a docstring under the field"
                )
            section = _section_of(sub, field_path)
            if section is not None:
                known = self.documented.get(_shape(*section))
                if known is None:
                    nested.append(section)
                section = (known or section[0], section[1])
            fields.append(
                FieldDoc(
                    name=name,
                    type=_type(sub),
                    default=_default(name, sub, required),
                    limits=_limits(sub),
                    description=sub["description"],
                    section=section[0] if section else "",
                    formats=_formats(sub),
                )
            )
        yield ObjectDoc(path, node.get("description", ""), tuple(fields), _rules(node))
        for section_path, section_node in nested:
            yield from self.objects(section_path, section_node)


def objects(schema: Schema | None = None) -> tuple[ObjectDoc, ...]:
    """Every object of the resource (or of `schema`), the root first, then depth first in
    field order."""
    return tuple(_Walk().objects(KIND, schema or _documented_root()))


def _documented_root() -> Schema:
    """The CRD's schema, with the words the CRD may not carry: the apiserver refuses a
    description on `metadata`, the model has one."""
    schema = root_schema(default_notes=False)
    words = ModelDeployment.model_fields["metadata"].description or ""
    schema["properties"]["metadata"] = {**schema["properties"]["metadata"], "description": words}
    return schema


# --- Markdown -----------------------------------------------------------------------------


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, only letters, digits, '-' and '_' kept."""
    return "".join(c for c in heading.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _prose(text: str) -> str:
    """Markdown of plain text: `<` outside code spans would open an HTML tag."""
    parts = text.split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def _cell(text: str) -> str:
    return _prose(text).replace("|", "\\|").replace("\n\n", "<br><br>")


def _link(path: str, text: str) -> str:
    return f"[{text}](#{anchor(path)})"


def _row(field: FieldDoc) -> str:
    name = f"`{field.name}`"
    limits = [*field.limits, *(rule.message for rule in field.formats)]
    cells = [
        _link(field.section, name) if field.section else name,
        f"`{field.type}`",
        field.default,
        "; ".join(limits),
        field.description,
    ]
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _rule_lines(rules: tuple[RuleDoc, ...]) -> list[str]:
    lines = ["Rules (the apiserver refuses an object that breaks one, with this message):", ""]
    for rule in rules:
        where = f"on `{rule.field}`: " if rule.field else ""
        lines += [f"- {where}{_prose(rule.message)}  ", f"  CEL: `{rule.cel}`"]
    return [*lines, ""]


def _object_lines(obj: ObjectDoc) -> list[str]:
    lines = [f"## {obj.path}", ""]
    if obj.description:
        lines += [_prose(obj.description), ""]
    lines += ["| Field | Type | Default | Limits | Description |", "| --- " * 5 + "|"]
    lines += [_row(field) for field in obj.fields]
    lines.append("")
    return lines + (_rule_lines(obj.rules) if obj.rules else [])


def _formats_lines(docs: tuple[ObjectDoc, ...]) -> list[str]:
    """Each distinct value rule once, with the fields that use it."""
    users: dict[RuleDoc, list[str]] = {}
    for obj in docs:
        for field in obj.fields:
            for rule in field.formats:
                users.setdefault(rule, []).append(_field_path(obj.path, field.name))
    lines = [
        "## Value formats",
        "",
        "Rules of single values, each with the message the apiserver reports and its CEL.",
        "",
    ]
    for rule, paths in users.items():
        lines += [
            f"- {_prose(rule.message)}  ",
            f"  CEL: `{rule.cel}`  ",
            "  Fields: " + ", ".join(f"`{path}`" for path in paths),
        ]
    return [*lines, ""]


def _contents(docs: tuple[ObjectDoc, ...]) -> list[str]:
    lines = []
    for obj in docs:
        depth = 0 if obj.path == KIND else obj.path.count(".") + 1
        lines.append(f"{'  ' * depth}- {_link(obj.path, obj.path)}")
    return [*lines, f"- {_link('Value formats', 'Value formats')}", ""]


def render_reference() -> str:
    docs = objects()
    anchors = [anchor(obj.path) for obj in docs]
    if len(set(anchors)) != len(anchors):
        raise ValueError("two sections of the reference would have the same anchor")
    names = ", ".join(f"`{name}`" for name in SHORT_NAMES)
    lines = [
        "# ModelDeployment reference",
        "",
        f"<!-- Generated by `{COMMAND}` from modeldeploy.api. Do not edit. -->",
        "",
        f"`apiVersion: {API_VERSION}`, `kind: {KIND}`, namespaced, short names {names}. "
        "Every field of spec and status, generated from the API models "
        f"(`operator/modeldeploy/api/`) through the schema of `crds/{CRD_FILENAME}`: "
        "`kubectl explain modeldeployment.spec --recursive` shows the same descriptions. "
        "Examples: `examples/modeldeployments/` (`minimal.yaml`, `complete.yaml` with every "
        "spec field, `rejected.yaml`).",
        "",
        "How to read it. **Default**: `required`, or the value the apiserver fills in when "
        "the field is absent (empty: the field stays absent, which the description "
        "explains). **Limits**: bounds the apiserver enforces (numbers, lengths, list and "
        "map sizes, allowed values) and the rules of the value itself, by their message; "
        "the same rules with their CEL are under [Value formats](#value-formats). **Rules** "
        "under an object: checks across its fields. The operator's models check every limit "
        "and rule too, with the same messages. Status is written only by the operator.",
        "",
        *_contents(docs),
    ]
    for obj in docs:
        lines += _object_lines(obj)
    lines += _formats_lines(docs)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_reference(target: Path = REFERENCE_PATH) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_reference(), encoding="utf-8")
    return target


def stale_reference(target: Path = REFERENCE_PATH) -> str | None:
    """Why `target` differs from the models, or None when it is current."""
    return stale_file(target, render_reference(), COMMAND)
