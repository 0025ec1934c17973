"""Pod template overrides: what a user may set on the pods the operator creates."""

from typing import Annotated, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel, ListMapKey, Rule
from modeldeploy.api.types import RESERVED_PREFIX, ObjectName, Passthrough, Quantity

ResourceList = Annotated[dict[str, Quantity], Field(max_length=16)]


class ResourceRequirements(ApiModel):
    """Compute resources of the model container, as in a Pod container's `resources`."""

    requests: ResourceList = Field(default_factory=dict)
    """Resources the scheduler reserves, e.g. {cpu: 500m, memory: 1Gi}."""
    limits: ResourceList = Field(default_factory=dict)
    """Hard limits, e.g. {memory: 2Gi, nvidia.com/gpu: 1}."""


class KeyRef(ApiModel):
    """A key of a Secret or ConfigMap in the same namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """Key within it."""
    optional: bool | None = None
    """Whether the pod may start when the key is missing."""


class FieldRef(ApiModel):
    """A field of the pod itself, e.g. metadata.name or status.podIP."""

    field_path: Annotated[str, Field(min_length=1, max_length=253)]
    """Path of the field, e.g. metadata.namespace."""
    api_version: Annotated[str, Field(max_length=64)] | None = None
    """Version of the schema the path is written in (v1 when absent)."""


class ResourceFieldRef(ApiModel):
    """A resource request or limit of a container, e.g. limits.memory."""

    resource: Annotated[str, Field(min_length=1, max_length=253)]
    """The resource, e.g. limits.cpu."""
    container_name: Annotated[str, Field(max_length=63)] | None = None
    """The container (the model container when absent)."""
    divisor: Quantity | None = None
    """Unit of the exposed value, e.g. 1Mi."""


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from (exactly one source)."""

    rules = (
        Rule(
            cel="[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
            "has(self.resourceFieldRef)].filter(x, x).size() == 1",
            message="valueFrom must set exactly one of secretKeyRef, configMapKeyRef, fieldRef "
            "or resourceFieldRef",
            holds=lambda s: (
                sum(
                    ref is not None
                    for ref in (
                        s.secret_key_ref,
                        s.config_map_key_ref,
                        s.field_ref,
                        s.resource_field_ref,
                    )
                )
                == 1
            ),
        ),
    )

    secret_key_ref: KeyRef | None = None
    """A key of a Secret."""
    config_map_key_ref: KeyRef | None = None
    """A key of a ConfigMap."""
    field_ref: FieldRef | None = None
    resource_field_ref: ResourceFieldRef | None = None


ENV_PREFIX_RESERVED = "MODELDEPLOY_"


class EnvVar(ApiModel):
    """An environment variable of the model container."""

    rules = (
        Rule(
            cel="!(has(self.value) && has(self.valueFrom))",
            message="an env entry sets value or valueFrom, not both",
            holds=lambda e: e.value is None or e.value_from is None,
        ),
        Rule(
            cel=f"!self.name.startsWith('{ENV_PREFIX_RESERVED}')",
            message=f"env names starting with {ENV_PREFIX_RESERVED} are reserved: the operator "
            "sets them",
            holds=lambda e: not e.name.startswith(ENV_PREFIX_RESERVED),
            field_path=".name",
        ),
    )

    name: Annotated[str, Field(min_length=1, max_length=256)]
    """Variable name."""
    value: Annotated[str, Field(max_length=32768)] | None = None
    """Literal value."""
    value_from: EnvVarSource | None = None


class SourceRef(ApiModel):
    """A ConfigMap or Secret in the same namespace."""

    name: ObjectName
    """Its name."""
    optional: bool | None = None
    """Whether the pod may start without it."""


class EnvFromSource(ApiModel):
    """All keys of a ConfigMap or Secret as environment variables."""

    rules = (
        Rule(
            cel="has(self.configMapRef) != has(self.secretRef)",
            message="an envFrom entry sets exactly one of configMapRef or secretRef",
            holds=lambda e: (e.config_map_ref is None) != (e.secret_ref is None),
        ),
    )

    config_map_ref: SourceRef | None = None
    """The ConfigMap."""
    secret_ref: SourceRef | None = None
    """The Secret."""
    prefix: Annotated[str, Field(max_length=64)] | None = None
    """Prefix for every variable name."""


class Toleration(ApiModel):
    """Lets the pods schedule onto nodes with a matching taint (as in a Pod spec)."""

    rules = (
        Rule(
            cel="self.operator != 'Exists' || !has(self.value) || self.value == ''",
            message="a toleration with operator Exists must not set a value",
            holds=lambda t: t.operator != "Exists" or not t.value,
        ),
    )

    key: Annotated[str, Field(max_length=317)] | None = None
    """Taint key; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists matches any value, Equal only `value`."""
    value: Annotated[str, Field(max_length=63)] | None = None
    """Taint value (with operator Equal)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; every effect when absent."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """With NoExecute: how long the pod stays bound after the taint appears."""


class LocalObjectReference(ApiModel):
    """A reference by name to an object in the same namespace."""

    name: ObjectName
    """Its name."""


def _no_reserved_keys(what: str) -> Rule:
    return Rule(
        cel=f"self.all(k, !k.startsWith('{RESERVED_PREFIX}'))",
        message=f"{what} under {RESERVED_PREFIX} are reserved for the operator",
        holds=lambda m: not any(k.startswith(RESERVED_PREFIX) for k in m),
    )


Labels = Annotated[
    dict[str, Annotated[str, Field(max_length=63)]],
    Field(max_length=64),
    _no_reserved_keys("labels"),
]
Annotations = Annotated[
    dict[str, Annotated[str, Field(max_length=8192)]],
    Field(max_length=64),
    _no_reserved_keys("annotations"),
]


class PodTemplate(ApiModel):
    """Overrides for the pods of every revision. The operator owns the rest of the pod: the
    model container's image, ports, probes, the modeldeploy.io/ labels and MODELDEPLOY_ env.

    A change here is a new revision (it is part of the revision hash), rolled out like a new
    image."""

    resources: ResourceRequirements = ResourceRequirements()
    """Compute resources of the model container. Set requests: the HPA's CPU utilization is
    measured against them."""
    env: Annotated[
        list[EnvVar],
        Field(max_length=64),
        ListMapKey("name"),
    ] = Field(default_factory=list)
    """Environment variables of the model container (names unique)."""
    env_from: Annotated[list[EnvFromSource], Field(max_length=16)] = Field(default_factory=list)
    """ConfigMaps/Secrets whose keys all become environment variables."""
    node_selector: Annotated[
        dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=32)
    ] = Field(default_factory=dict)
    """Node labels the pods must be scheduled on, e.g. {nvidia.com/gpu.present: "true"}."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(default_factory=list)
    """Taints the pods tolerate."""
    affinity: Passthrough | None = None
    """Pod affinity/anti-affinity and node affinity, exactly as in a Pod spec (validated by the
    apiserver when the operator creates the Deployment)."""
    topology_spread_constraints: Annotated[list[Passthrough], Field(max_length=8)] = Field(
        default_factory=list
    )
    """How pods spread over zones/nodes, exactly as in a Pod spec."""
    service_account_name: ObjectName | None = None
    """ServiceAccount the pods run as (the namespace's default when absent)."""
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=8)] = Field(
        default_factory=list
    )
    """Secrets for pulling the image from a private registry."""
    priority_class_name: ObjectName | None = None
    """PriorityClass of the pods."""
    security_context: Passthrough | None = None
    """Security context of the model container, exactly as in a container spec."""
    pod_security_context: Passthrough | None = None
    """Security context of the pod, exactly as in a Pod spec's securityContext."""
    termination_grace_period_seconds: Annotated[int, Field(ge=0, le=3600)] = 30
    """Seconds a pod has to finish in-flight requests after it was told to stop."""
    labels: Labels = Field(default_factory=dict)
    """Extra labels on the pods (keys under modeldeploy.io/ are reserved)."""
    annotations: Annotations = Field(default_factory=dict)
    """Extra annotations on the pods (keys under modeldeploy.io/ are reserved)."""
