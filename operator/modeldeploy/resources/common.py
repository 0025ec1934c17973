"""Metadata shared by every object the operator owns, and the applied-body hash."""

from dataclasses import dataclass
from typing import Any

from modeldeploy.api import API_VERSION, KIND
from modeldeploy.resources.names import (
    ANNOTATION_APPLIED_HASH,
    FIELD_MANAGER,
    LABEL_MANAGED_BY,
    LABEL_NAME,
)
from modeldeploy.resources.revision import short_hash

Body = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns (and garbage-collects) the objects."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def metadata(
    owner: Owner,
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": {LABEL_NAME: owner.name, LABEL_MANAGED_BY: FIELD_MANAGER, **(labels or {})},
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def applied_hash(body: Body) -> str:
    """Hash of what the operator owns in `body`: everything but the hash annotation itself
    and a Deployment's `spec.replicas` (compared on its own, an HPA may own it)."""
    meta = {
        **body.get("metadata", {}),
        "annotations": {
            k: v
            for k, v in body.get("metadata", {}).get("annotations", {}).items()
            if k != ANNOTATION_APPLIED_HASH
        },
    }
    spec = {k: v for k, v in body.get("spec", {}).items() if k != "replicas"}
    return short_hash({**body, "metadata": meta, "spec": spec}, length=16)


def with_applied_hash(body: Body) -> Body:
    meta = body["metadata"]
    annotations = {**meta.get("annotations", {}), ANNOTATION_APPLIED_HASH: applied_hash(body)}
    return {**body, "metadata": {**meta, "annotations": annotations}}
