"""The ModelDeployment resource as a whole: identity, the object model, the wire form."""

from typing import Annotated, Any, Final, Literal, Self

from pydantic import Field, WithJsonSchema, model_validator

from modeldeploy.api.base import ApiModel, Rule
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.api.status import ModelDeploymentStatus

GROUP: Final = "modeldeploy.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelDeployment"
PLURAL: Final = "modeldeployments"
SINGULAR: Final = "modeldeployment"
SHORT_NAMES: Final = ("mdep", "modeldeploy")
"""`kubectl get mdep`, `kubectl explain modeldeploy.spec.analysis`."""

MAX_NAME_LENGTH: Final = 50
"""Deployments, Services and HPAs are named <name>-<suffix>; Service names are DNS labels of
at most 63 characters, so the resource's own name must leave room (e.g. -fallback)."""

# One-shot commands from people (the CLI sets them). Each value names the revision it is
# meant for, so that a stale annotation never acts on a later revision.
ANNOTATION_PROMOTE: Final = f"{GROUP}/promote"
"""=<canaryRevision>: promote now (skips the remaining steps and the approval gate)."""
ANNOTATION_ABORT: Final = f"{GROUP}/abort"
"""=<canaryRevision>: roll back now, as if the analysis had failed."""
ANNOTATION_RETRY: Final = f"{GROUP}/retry"
"""=<failedRevision>: roll out a revision that was rolled back or aborted once more."""
# Holding a rollout is declarative: spec.rollout.paused.

NAME_RULE: Final = Rule(
    cel=f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && !self.metadata.name.contains('.')",
    message=f"metadata.name must be at most {MAX_NAME_LENGTH} characters without '.', because "
    "the operator derives Service and Deployment names from it",
    holds=lambda name: len(name) <= MAX_NAME_LENGTH and "." not in name,
)


class ModelDeployment(ApiModel):
    """A model served on Kubernetes, rolled out safely: warm replicas, canary steps or a
    shadow phase, automatic rollback on latency, errors and drift, and a kill switch."""

    api_version: Literal["modeldeploy.io/v1alpha1"] = "modeldeploy.io/v1alpha1"
    """modeldeploy.io/v1alpha1"""
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    """ModelDeployment"""
    metadata: Annotated[dict[str, Any], WithJsonSchema({"type": "object"})] = Field(
        default_factory=dict
    )
    """Standard object metadata (name, namespace, labels...)."""
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    @model_validator(mode="after")
    def _check_name(self) -> Self:
        name = self.metadata.get("name")
        if isinstance(name, str):
            NAME_RULE.check(name)
        return self


def to_wire(model: ApiModel) -> dict[str, Any]:
    """The JSON form the apiserver stores: camelCase, no nulls. `model_validate` inverts it."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)
