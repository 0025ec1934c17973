"""Building blocks of the API models: camelCase on the wire, rules written once, enforced twice.

A `Rule` pairs a CEL expression (rendered into the CRD, so that `kubectl apply` of a bad
object fails at once) with the same check in Python (so that the models reject exactly what
the apiserver rejects), under one human message. Attach rules to a model with the `rules`
class variable, or to a single field as `Annotated` metadata.
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

CEL_RULES_KEY = "x-kubernetes-validations"


class FieldAnnotation:
    """`Annotated` metadata that validates after the type's own validation (`check`) and adds
    keywords to the field's JSON schema (`extend_schema`)."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def extend_schema(self, json_schema: JsonSchemaValue) -> None:
        raise NotImplementedError

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        self.extend_schema(handler.resolve_ref_schema(json_schema))
        return json_schema


@dataclass(frozen=True)
class Rule(FieldAnnotation):
    """One validation rule: a CEL expression over `self` and its Python twin `holds(self)`.

    `field_path` (relative, e.g. ".minWarm") makes the apiserver report the error at that
    field instead of at the object that carries the rule.
    """

    cel: str
    message: str
    holds: Callable[[Any], bool]
    field_path: str | None = None

    def to_crd(self) -> dict[str, str]:
        rule = {"rule": self.cel, "message": self.message}
        if self.field_path:
            rule["fieldPath"] = self.field_path
        return rule

    def check(self, value: Any) -> Any:
        if not self.holds(value):
            raise ValueError(self.message)
        return value

    def extend_schema(self, json_schema: JsonSchemaValue) -> None:
        add_cel_rules(json_schema, [self])


def add_cel_rules(json_schema: JsonSchemaValue, rules: Iterable[Rule]) -> None:
    rendered = [rule.to_crd() for rule in rules]
    if rendered:
        json_schema.setdefault(CEL_RULES_KEY, []).extend(rendered)


def cel_quote(text: str) -> str:
    """A CEL single-quoted string literal (patterns here never contain quotes/backslashes)."""
    if "'" in text or "\\" in text:
        raise ValueError(f"cannot quote {text!r} for CEL without escapes")
    return f"'{text}'"


def full_match(pattern: str) -> Callable[[str], bool]:
    """Python twin of CEL `s.matches('^...$')`.

    RE2's `$` only matches at the very end; Python's also before a final newline, so the
    anchors are dropped and `re.fullmatch` used instead.
    """
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"pattern {pattern!r} must be anchored with ^ and $")
    compiled = re.compile(pattern[1:-1])
    return lambda text: compiled.fullmatch(text) is not None


def pattern_rule(pattern: str, message: str) -> Rule:
    """A rule that a string field matches `pattern` (anchored), with a human message."""
    return Rule(
        cel=f"self.matches({cel_quote(pattern)})", message=message, holds=full_match(pattern)
    )


def not_stored_default(json_schema: JsonSchemaValue) -> None:
    """`json_schema_extra` for a field whose default the CRD must not fill in: the model still
    defaults it, but the stored object keeps it absent. For choices like `percent` xor
    `steps`, where a filled-in default would collide with the other branch on a later
    `kubectl apply` that only adds that branch."""
    json_schema.pop("default", None)


class ApiModel(BaseModel):
    """Base of every API model: camelCase aliases on the wire, snake_case in Python.

    Unknown fields are errors (the apiserver would prune them silently), values are frozen
    (the operator's core computes new objects, it does not mutate), NaN/Infinity are refused
    (they are not JSON).
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()
    """Cross-field rules of this object: CEL in the CRD, checked in Python after validation."""

    @model_serializer(mode="wrap")
    def _as_stored(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        """The wire form equals what the apiserver stores: lists and maps that default to
        empty are left out while empty (absent and empty mean the same), and so are defaults
        the CRD does not fill in (`not_stored_default`) unless they were set explicitly."""
        data = handler(self)
        if isinstance(data, dict):
            for name, field in type(self).model_fields.items():
                empty = field.default_factory in (list, dict)
                implicit = field.json_schema_extra is not_stored_default
                for key in (field.alias, name):
                    if key in data and (
                        (empty and not data[key])
                        or (implicit and name not in self.model_fields_set)
                    ):
                        del data[key]
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            rule.check(self)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        add_cel_rules(handler.resolve_ref_schema(json_schema), cls.rules)
        return json_schema


@dataclass(frozen=True)
class ListMapKey(FieldAnnotation):
    """`Annotated` metadata for a list of objects keyed by one field (like a map).

    The CRD gets `x-kubernetes-list-type: map` (the apiserver rejects duplicate keys and
    server-side apply merges entries by key); Python rejects duplicates the same way.
    """

    key: str
    """The key field's name on the wire (camelCase)."""

    def check(self, value: Any) -> Any:
        seen: set[Any] = set()
        for item in value:
            key = item.model_dump(by_alias=True)[self.key]
            if key in seen:
                raise ValueError(f"duplicate {self.key} {key!r}: each {self.key} may appear once")
            seen.add(key)
        return value

    def extend_schema(self, json_schema: JsonSchemaValue) -> None:
        json_schema["x-kubernetes-list-type"] = "map"
        json_schema["x-kubernetes-list-map-keys"] = [self.key]
