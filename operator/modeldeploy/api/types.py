"""Small reusable field types: names, label keys and values, image references, quantities,
passthrough.

Every string is bounded (`max_length`): the apiserver estimates the cost of CEL rules from
those bounds and refuses a CRD whose rules could be too expensive.
"""

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, WithJsonSchema

from modeldeploy.api.base import Rule, cel_quote, full_match, pattern_rule

RESERVED_PREFIX = "modeldeploy.io/"
"""Labels and annotations under this prefix belong to the operator."""

ObjectName = Annotated[
    str,
    Field(min_length=1, max_length=253),
    pattern_rule(
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', "
        "starting and ending with a letter or digit",
    ),
]
"""The name of another object in the same namespace (Secret, ServiceAccount, HTTPRoute...)."""

LabelValue = Annotated[
    str,
    Field(min_length=1, max_length=63),
    pattern_rule(
        "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        "must be a valid label value: at most 63 letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit",
    ),
]
"""A string that is also used as a label value on pods and metric series."""

IMAGE_PATTERN = (
    "^([a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?([.][a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*"
    "(:[0-9]+)?/)?"
    "[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*)*"
    "(:[a-zA-Z0-9_][-a-zA-Z0-9_.]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
DIGEST_MARKER = "@sha256:"
"""In an `Image` (whose pattern only allows a full digest at the end), marks a pinned image."""

Image = Annotated[
    str,
    Field(min_length=1, max_length=512),
    pattern_rule(
        IMAGE_PATTERN,
        "must be a container image reference such as registry.example/churn@sha256:<64 hex "
        "digits> or registry.example/churn:1.4 (lowercase repository, no spaces)",
    ),
]
"""A container image reference: `[registry/]repository[:tag][@sha256:digest]`."""

_is_image = full_match(IMAGE_PATTERN)


def is_image(text: str) -> bool:
    """Python twin of `Image`'s rule (for references outside the API: operator flags)."""
    return len(text) <= 512 and _is_image(text)


QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

_is_quantity = full_match(QUANTITY_PATTERN)

Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 64,
        }
    ),
    Rule(
        cel="type(self) == int || isQuantity(self)",
        message="must be a quantity such as 2, 500m or 1Gi",
        holds=lambda v: isinstance(v, int) or (len(v) <= 64 and _is_quantity(v)),
    ),
]
"""A Kubernetes resource quantity: `2`, `500m`, `1Gi`."""

_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("", 0), ("k", 3))},
    **{s: Decimal(10) ** (3 * (i + 2)) for i, s in enumerate(("M", "G", "T", "P", "E"))},
}
_QUANTITY_PARTS = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)")


def quantity_value(value: int | str) -> Decimal:
    """The amount a valid quantity stands for (Python twin of CEL `quantity(...)`)."""
    if isinstance(value, int):
        return Decimal(value)
    number, suffix = _QUANTITY_PARTS.fullmatch(value).groups()  # type: ignore[union-attr]
    if suffix[:1] in ("e", "E") and len(suffix) > 1:  # an exponent; "E" alone is exa
        return Decimal(number) * Decimal(10) ** Decimal(suffix[1:])
    return Decimal(number) * _SUFFIXES[suffix]


DNS_SUBDOMAIN_PATTERN = "[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
QUALIFIED_NAME_PATTERN = (
    f"^({DNS_SUBDOMAIN_PATTERN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
)
"""A label or annotation key: an optional DNS subdomain prefix and '/', then at most 63
letters, digits, '-', '_' or '.' starting and ending with a letter or digit."""
LABEL_VALUE_PATTERN = "^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
_is_qualified = full_match(QUALIFIED_NAME_PATTERN)
_is_label_value = full_match(LABEL_VALUE_PATTERN)


def qualified_name_cel(text: str) -> str:
    """CEL: the string expression `text` is a label/annotation key."""
    return (
        f"{text}.matches({cel_quote(QUALIFIED_NAME_PATTERN)}) && "
        f"(!{text}.contains('/') || {text}.indexOf('/') <= 253)"
    )


QUALIFIED_NAME_MESSAGE = (
    "an optional DNS subdomain prefix of at most 253 characters and '/', then at most 63 "
    "letters, digits, '-', '_' or '.', starting and ending with a letter or digit "
    "(e.g. team or example.com/team)"
)


def is_qualified_name(key: str) -> bool:
    """Python twin of `qualified_name_cel`."""
    return _is_qualified(key) and ("/" not in key or key.index("/") <= 253)


def is_label_value(value: str) -> bool:
    return _is_label_value(value)


def qualified_keys_rule(what: str) -> Rule:
    """Every key of a map is a label/annotation key (a qualified name)."""
    return Rule(
        cel=f"self.all(k, {qualified_name_cel('k')})",
        message=f"{what} keys must be {QUALIFIED_NAME_MESSAGE}",
        holds=lambda m: all(is_qualified_name(k) for k in m),
    )


def label_values_rule(what: str) -> Rule:
    """Every value of a map is a label value (empty allowed, as Kubernetes allows it)."""
    return Rule(
        cel=f"self.all(k, self[k].matches({cel_quote(LABEL_VALUE_PATTERN)}))",
        message=f"{what} values must be empty or at most 63 letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit",
        holds=lambda m: all(is_label_value(v) for v in m.values()),
    )


Passthrough = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes object passed through unchanged (validated by the apiserver when the operator
creates the Deployment/HPA that carries it). Used only for large upstream types."""

Timestamp = Annotated[
    AwareDatetime,
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]
"""An RFC 3339 time with a time zone, as the apiserver stores it."""

__all__ = [
    "RESERVED_PREFIX",
    "Image",
    "LabelValue",
    "ObjectName",
    "Passthrough",
    "Quantity",
    "Timestamp",
]
