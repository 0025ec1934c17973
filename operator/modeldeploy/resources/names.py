"""Names, labels and annotations of the objects the operator owns.

`modeldeploy.io/name` and `modeldeploy.io/revision` are on every revision's pods (Service
and PDB selectors, the pod runner and Prometheus relabelling use them); `modeldeploy.io/track`
is only on the Deployment object, never in the pod template: changing a template label would
restart every pod at promotion.
"""

from typing import Final, Literal

from modeldeploy.api import GROUP

FIELD_MANAGER: Final = "modeldeploy"
"""Server-side apply field manager of everything the operator writes."""

LABEL_NAME: Final = f"{GROUP}/name"
LABEL_REVISION: Final = f"{GROUP}/revision"
LABEL_TRACK: Final = f"{GROUP}/track"
LABEL_FALLBACK: Final = f"{GROUP}/fallback"
"""On fallback pods instead of `modeldeploy.io/name`, so that the client Service's
`{name}` selector (used while a canary takes traffic) never picks them up."""
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"

ANNOTATION_APPLIED_HASH: Final = f"{GROUP}/applied-hash"
"""Hash of the body last applied; an object whose hash matches is not written again."""
ANNOTATION_REVISION_SOURCE: Final = f"{GROUP}/revision-source"
"""Canonical JSON of image + model + template of a revision's Deployment, so that the
Deployment of a revision the spec no longer describes (the stable during a rollout) can be
rebuilt exactly."""

Track = Literal["stable", "canary", "previous", "fallback"]
FALLBACK_REVISION: Final = "fallback"
"""`MODELDEPLOY_REVISION` of fallback pods (never a revision hash: those are hex)."""

HTTP_PORT_NAME: Final = "http"
SERVICE_PORT: Final = 80


def deployment_name(name: str, revision: str) -> str:
    return f"{name}-{revision}"


def fallback_name(name: str) -> str:
    return f"{name}-fallback"


def stable_name(name: str) -> str:
    """HPA and PDB of the stable track, and its Service (traffic mode gatewayAPI)."""
    return f"{name}-stable"


def canary_name(name: str) -> str:
    """Service of the canary track (shadowing, traffic mode gatewayAPI)."""
    return f"{name}-canary"


def revision_selector(name: str, revision: str) -> dict[str, str]:
    """Pods of one revision."""
    return {LABEL_NAME: name, LABEL_REVISION: revision}


def model_selector(name: str) -> dict[str, str]:
    """Pods of every revision (not the fallback)."""
    return {LABEL_NAME: name}


def fallback_selector(name: str) -> dict[str, str]:
    return {LABEL_FALLBACK: name}
