"""Small reusable field types: names, label values, image references, quantities, passthrough.

Every string is bounded (`max_length`): the apiserver estimates the cost of CEL rules from
those bounds and refuses a CRD whose rules could be too expensive.
"""

from typing import Annotated, Any

from pydantic import AwareDatetime, Field, WithJsonSchema

from modeldeploy.api.base import Rule, full_match, pattern_rule

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
