"""Pod template overrides: what a user may set on the pods the operator creates."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel, ListMapKey, Rule, cel_quote, pattern_rule
from modeldeploy.api.types import (
    LABEL_VALUE_PATTERN,
    QUALIFIED_NAME_MESSAGE,
    RESERVED_PREFIX,
    ObjectName,
    Passthrough,
    Quantity,
    is_label_value,
    is_qualified_name,
    label_values_rule,
    qualified_keys_rule,
    qualified_name_cel,
    quantity_value,
)

STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_RESOURCE_NAME_CEL = (
    f"k in {list(STANDARD_RESOURCES)} || k.startsWith('hugepages-') || "
    f"(k.contains('/') && {qualified_name_cel('k')})"
)


def _is_resource_name(key: str) -> bool:
    return (
        key in STANDARD_RESOURCES
        or key.startswith("hugepages-")
        or ("/" in key and is_qualified_name(key))
    )


ResourceList = Annotated[
    dict[str, Quantity],
    Field(max_length=16),
    Rule(
        cel=f"self.all(k, {_RESOURCE_NAME_CEL})",
        message="resource names are cpu, memory, ephemeral-storage, hugepages-<size> or an "
        "extended resource with a domain prefix such as nvidia.com/gpu",
        holds=lambda m: all(_is_resource_name(k) for k in m),
    ),
    Rule(
        cel="self.all(k, type(self[k]) == int ? self[k] >= 0 : "
        "!isQuantity(self[k]) || !quantity(self[k]).isLessThan(quantity('0')))",
        message="resource quantities must not be negative",
        holds=lambda m: all(quantity_value(v) >= 0 for v in m.values()),
    ),
]


def _requests_within_limits(r: "ResourceRequirements") -> bool:
    return all(
        quantity_value(amount) <= quantity_value(r.limits[name])
        for name, amount in r.requests.items()
        if name in r.limits
    )


def _cel_amount(value: str) -> str:
    """An int-or-string quantity as a CEL Quantity."""
    return f"(type({value}) == int ? quantity(string({value})) : quantity({value}))"


def _cel_valid(value: str) -> str:
    """Guards quantity(): an invalid value has its own message."""
    return f"(type({value}) == int || isQuantity({value}))"


_REQUEST = "self.requests[k]"
_LIMIT = "self.limits[k]"


class ResourceRequirements(ApiModel):
    """Compute resources of the model container, as in a Pod container's `resources`."""

    rules = (
        Rule(
            cel="!has(self.requests) || !has(self.limits) || self.requests.all(k, "
            f"!(k in self.limits) || !{_cel_valid(_REQUEST)} || !{_cel_valid(_LIMIT)} || "
            f"{_cel_amount(_REQUEST)}.compareTo({_cel_amount(_LIMIT)}) <= 0)",
            message="a resource request must not exceed its limit (e.g. requests.memory <= "
            "limits.memory)",
            holds=_requests_within_limits,
            field_path=".requests",
        ),
    )

    requests: ResourceList = Field(default_factory=dict)
    """Resources the scheduler reserves, e.g. {cpu: 500m, memory: 1Gi}."""
    limits: ResourceList = Field(default_factory=dict)
    """Hard limits, e.g. {memory: 2Gi, nvidia.com/gpu: 1}."""


class KeyRef(ApiModel):
    """A key of a Secret or ConfigMap in the same namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap."""
    key: Annotated[
        str,
        Field(min_length=1, max_length=253),
        pattern_rule(
            "^[-._a-zA-Z0-9]+$", "must be a ConfigMap/Secret key: letters, digits, '-', '_' or '.'"
        ),
    ]
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
"""The operator's and the runtime's own variables (modeldeploy.contract)."""
ENV_NAME_PATTERN = "^[ -<>-~]+$"
"""What the apiserver accepts as a variable name (and envFrom prefix): printable ASCII except
'=' (relaxed environment variable validation, GA since Kubernetes 1.34)."""
ENV_NAME_MESSAGE = "printable ASCII characters other than '='"


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

    name: Annotated[
        str,
        Field(min_length=1, max_length=256),
        pattern_rule(ENV_NAME_PATTERN, f"env names must be {ENV_NAME_MESSAGE}"),
    ]
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
        Rule(
            cel=f"!has(self.prefix) || !self.prefix.startsWith('{ENV_PREFIX_RESERVED}')",
            message=f"an envFrom prefix must not start with {ENV_PREFIX_RESERVED}: those names "
            "are reserved, the operator sets them",
            holds=lambda e: not (e.prefix or "").startswith(ENV_PREFIX_RESERVED),
            field_path=".prefix",
        ),
    )

    config_map_ref: SourceRef | None = None
    """The ConfigMap."""
    secret_ref: SourceRef | None = None
    """The Secret."""
    prefix: (
        Annotated[
            str,
            Field(max_length=64),
            pattern_rule(
                ENV_NAME_PATTERN.replace("+", "*"), f"an envFrom prefix must be {ENV_NAME_MESSAGE}"
            ),
        ]
        | None
    ) = None
    """Prefix for every variable name."""


class Toleration(ApiModel):
    """Lets the pods schedule onto nodes with a matching taint (as in a Pod spec)."""

    rules = (
        Rule(
            cel="self.operator != 'Exists' || !has(self.value) || self.value == ''",
            message="a toleration with operator Exists must not set a value",
            holds=lambda t: t.operator != "Exists" or not t.value,
        ),
        Rule(
            cel="self.operator == 'Exists' || (has(self.key) && self.key != '')",
            message="a toleration without a key must have operator Exists (it tolerates every "
            "taint)",
            holds=lambda t: t.operator == "Exists" or bool(t.key),
        ),
        Rule(
            cel="!has(self.key) || self.key == '' || " + qualified_name_cel("self.key"),
            message=f"a toleration key must be {QUALIFIED_NAME_MESSAGE}",
            holds=lambda t: not t.key or is_qualified_name(t.key),
            field_path=".key",
        ),
        Rule(
            cel="self.operator != 'Equal' || !has(self.value) || "
            f"self.value.matches({cel_quote(LABEL_VALUE_PATTERN)})",
            message="a toleration value must be empty or a label value: at most 63 letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit",
            holds=lambda t: t.operator != "Equal" or is_label_value(t.value or ""),
            field_path=".value",
        ),
        Rule(
            cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="tolerationSeconds needs effect NoExecute",
            holds=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
            field_path=".effect",
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
    qualified_keys_rule("label"),
    label_values_rule("label"),
]
Annotations = Annotated[
    dict[str, Annotated[str, Field(max_length=8192)]],
    Field(max_length=64),
    _no_reserved_keys("annotations"),
    qualified_keys_rule("annotation"),
]
NodeSelector = Annotated[
    dict[str, Annotated[str, Field(max_length=63)]],
    Field(max_length=32),
    qualified_keys_rule("nodeSelector"),
    label_values_rule("nodeSelector"),
]


RESTRICTED = (
    "model pods run under the restricted Pod Security profile (securityProfile: privileged "
    "lifts it where the operator runs with --allow-privileged-models)"
)


Capability = Annotated[str, Field(min_length=1, max_length=64)]


class Capabilities(ApiModel):
    """Linux capabilities of the model container. ALL are dropped, always."""

    add: Annotated[list[Capability], Field(max_length=8)] = Field(default_factory=list)
    """Only empty (unless securityProfile is privileged): the restricted profile adds none."""
    drop: Annotated[list[Capability], Field(max_length=64)] = Field(default_factory=list)
    """Capabilities dropped besides ALL (which is always dropped)."""


class SeccompProfile(ApiModel):
    """A seccomp profile, as in a security context."""

    type: Literal["RuntimeDefault", "Localhost", "Unconfined"]
    """RuntimeDefault (the default), Localhost (a profile on the node) or Unconfined."""
    localhost_profile: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """With type Localhost: the profile's path relative to the kubelet's seccomp directory."""


class SELinuxOptions(ApiModel):
    """SELinux labels, as in a security context."""

    user: Annotated[str, Field(max_length=253)] | None = None
    """SELinux user."""
    role: Annotated[str, Field(max_length=253)] | None = None
    """SELinux role."""
    type: Annotated[str, Field(max_length=253)] | None = None
    """SELinux type."""
    level: Annotated[str, Field(max_length=253)] | None = None
    """SELinux level."""


UserId = Annotated[int, Field(ge=0, le=2147483647)]


class ContainerSecurityContext(ApiModel):
    """Security context of the model container, merged field by field over the restricted
    profile (allowPrivilegeEscalation false, readOnlyRootFilesystem, runAsNonRoot,
    capabilities drop ALL, seccomp RuntimeDefault): it may tighten or relax what the profile
    allows, never privileges."""

    rules = (
        Rule(
            cel="!has(self.allowPrivilegeEscalation) || self.allowPrivilegeEscalation || "
            "!((has(self.privileged) && self.privileged) || (has(self.capabilities) && "
            "has(self.capabilities.add) && self.capabilities.add.exists(c, c == 'CAP_SYS_ADMIN')))",
            message="allowPrivilegeEscalation false contradicts privileged true or an added "
            "CAP_SYS_ADMIN: leave it out",
            holds=lambda c: c.allow_privilege_escalation is not False or not c.escalates(),
            field_path=".allowPrivilegeEscalation",
        ),
    )

    def escalates(self) -> bool:
        """Privileged, or CAP_SYS_ADMIN added: privilege escalation cannot be off then."""
        added = self.capabilities.add if self.capabilities else []
        return bool(self.privileged) or "CAP_SYS_ADMIN" in added

    privileged: bool | None = None
    """Only false (unless securityProfile is privileged)."""
    allow_privilege_escalation: bool | None = None
    """Only false (unless securityProfile is privileged; the default)."""
    capabilities: Capabilities | None = None
    read_only_root_filesystem: bool | None = None
    """false gives the model a writable root filesystem (/tmp is writable either way)."""
    run_as_user: UserId | None = None
    """User ID of the model process (not 0 unless securityProfile is privileged)."""
    run_as_group: UserId | None = None
    """Group ID of the model process."""
    run_as_non_root: bool | None = None
    """Only true (unless securityProfile is privileged; the default)."""
    seccomp_profile: SeccompProfile | None = None
    se_linux_options: SELinuxOptions | None = None


class PodSecurityContext(ApiModel):
    """Security context of the pod, merged field by field over the restricted profile
    (runAsNonRoot, seccomp RuntimeDefault)."""

    run_as_user: UserId | None = None
    """User ID of every container (not 0 unless securityProfile is privileged)."""
    run_as_group: UserId | None = None
    """Group ID of every container."""
    run_as_non_root: bool | None = None
    """Only true (unless securityProfile is privileged; the default)."""
    fs_group: UserId | None = None
    """Group that owns mounted volumes."""
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = None
    """When volume ownership is changed to fsGroup."""
    supplemental_groups: Annotated[list[UserId], Field(max_length=32)] = Field(default_factory=list)
    """Further groups of every container's first process."""
    seccomp_profile: SeccompProfile | None = None
    se_linux_options: SELinuxOptions | None = None


@dataclass(frozen=True)
class Privilege:
    """A setting the restricted profile refuses, on the PodTemplate."""

    path: str
    """Where it is set, e.g. securityContext.privileged."""
    what: str
    """The refused setting in words (the start of the message)."""
    cel: str
    """True when the template asks for it (`self` is the PodTemplate)."""
    asked: Callable[["PodTemplate"], bool]


def _has(path: str) -> str:
    """CEL: every field along `path` (below self) is set."""
    parts = path.split(".")
    return " && ".join(f"has(self.{'.'.join(parts[: i + 1])})" for i in range(len(parts)))


def _root_privileges(context: str, get: Callable[["PodTemplate"], Any]) -> tuple[Privilege, ...]:
    return (
        Privilege(
            f"{context}.runAsUser",
            f"{context}.runAsUser 0 (root)",
            f"{_has(context + '.runAsUser')} && self.{context}.runAsUser == 0",
            lambda t: get(t) is not None and get(t).run_as_user == 0,
        ),
        Privilege(
            f"{context}.runAsNonRoot",
            f"{context}.runAsNonRoot false",
            f"{_has(context + '.runAsNonRoot')} && !self.{context}.runAsNonRoot",
            lambda t: get(t) is not None and get(t).run_as_non_root is False,
        ),
    )


SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
"""The SELinux types the baseline Pod Security profile allows (spc_t and the like are not)."""


def _confinement_privileges(
    context: str, get: Callable[["PodTemplate"], Any]
) -> tuple[Privilege, ...]:
    """No seccomp Unconfined and no SELinux label beyond a container type (baseline)."""

    def seccomp(t: "PodTemplate") -> SeccompProfile | None:
        return getattr(get(t), "seccomp_profile", None)

    def selinux(t: "PodTemplate") -> SELinuxOptions | None:
        return getattr(get(t), "se_linux_options", None)

    selinux_path = f"{context}.seLinuxOptions"
    allowed = ", ".join(f"'{t}'" for t in SELINUX_TYPES)
    return (
        Privilege(
            f"{context}.seccompProfile.type",
            f"{context}.seccompProfile Unconfined",
            f"{_has(context + '.seccompProfile')} && "
            f"self.{context}.seccompProfile.type == 'Unconfined'",
            lambda t: (profile := seccomp(t)) is not None and profile.type == "Unconfined",
        ),
        Privilege(
            f"{selinux_path}.type",
            f"{selinux_path}.type other than {', '.join(SELINUX_TYPES[1:])}",
            f"{_has(selinux_path + '.type')} && !(self.{selinux_path}.type in [{allowed}])",
            lambda t: (o := selinux(t)) is not None and (o.type or "") not in SELINUX_TYPES,
        ),
        Privilege(
            f"{selinux_path}.user",
            f"{selinux_path}.user",
            f"{_has(selinux_path + '.user')} && self.{selinux_path}.user != ''",
            lambda t: bool((o := selinux(t)) and o.user),
        ),
        Privilege(
            f"{selinux_path}.role",
            f"{selinux_path}.role",
            f"{_has(selinux_path + '.role')} && self.{selinux_path}.role != ''",
            lambda t: bool((o := selinux(t)) and o.role),
        ),
    )


def _container(t: "PodTemplate") -> ContainerSecurityContext | None:
    return t.security_context


def _pod(t: "PodTemplate") -> PodSecurityContext | None:
    return t.pod_security_context


PRIVILEGES: tuple[Privilege, ...] = (
    Privilege(
        "securityContext.privileged",
        "a privileged container",
        f"{_has('securityContext.privileged')} && self.securityContext.privileged",
        lambda t: bool(t.security_context and t.security_context.privileged),
    ),
    Privilege(
        "securityContext.allowPrivilegeEscalation",
        "allowPrivilegeEscalation true",
        f"{_has('securityContext.allowPrivilegeEscalation')} && "
        "self.securityContext.allowPrivilegeEscalation",
        lambda t: bool(t.security_context and t.security_context.allow_privilege_escalation),
    ),
    Privilege(
        "securityContext.capabilities.add",
        "capabilities.add",
        f"{_has('securityContext.capabilities.add')} && "
        "size(self.securityContext.capabilities.add) > 0",
        lambda t: bool(
            t.security_context
            and t.security_context.capabilities
            and t.security_context.capabilities.add
        ),
    ),
    *_root_privileges("securityContext", _container),
    *_root_privileges("podSecurityContext", _pod),
    *_confinement_privileges("securityContext", _container),
    *_confinement_privileges("podSecurityContext", _pod),
)
"""What only securityProfile privileged may ask for (host namespaces and volumes are not
part of the template at all)."""


def _restricted_rule(privilege: Privilege) -> Rule:
    return Rule(
        cel=f"self.securityProfile == 'privileged' || !({privilege.cel})",
        message=f"{privilege.what} is not allowed: {RESTRICTED}",
        holds=lambda t: t.security_profile == "privileged" or not privilege.asked(t),
        field_path=f".{privilege.path}",
    )


class PodTemplate(ApiModel):
    """Overrides for the pods of every revision. The operator owns the rest of the pod: the
    model container's image, ports, probes, the modeldeploy.io/ labels and MODELDEPLOY_ env.

    A change here is a new revision (it is part of the revision hash), rolled out like a new
    image."""

    rules = tuple(_restricted_rule(privilege) for privilege in PRIVILEGES)

    def privileges(self) -> tuple[str, ...]:
        """The settings only the privileged profile allows that this template asks for."""
        return tuple(p.path for p in PRIVILEGES if p.asked(self))

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
    node_selector: NodeSelector = Field(default_factory=dict)
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
    security_profile: Literal["restricted", "privileged"] = "restricted"
    """restricted: the pods run under the restricted Pod Security profile, and the security
    contexts below may not grant privileges. privileged: they may (privileged, privilege
    escalation, added capabilities, root, seccomp Unconfined, an SELinux user, role or a
    type other than the container types), but only an operator started with
    --allow-privileged-models (chart value allowPrivilegedModels) runs such pods; any other
    builds nothing for it and says why (Degraded PrivilegedNotAllowed, and a Warning Event)."""
    security_context: ContainerSecurityContext | None = None
    """Security context of the model container, merged over the restricted profile."""
    pod_security_context: PodSecurityContext | None = None
    """Security context of the pod, merged over the restricted profile."""
    automount_service_account_token: bool = False
    """Mount the ServiceAccount's API token into the pods: only for a model that calls the
    Kubernetes API (a token it does not need is a credential a compromised model leaks)."""
    termination_grace_period_seconds: Annotated[int, Field(ge=0, le=3600)] = 30
    """Seconds a pod has to finish in-flight requests after it was told to stop."""
    labels: Labels = Field(default_factory=dict)
    """Extra labels on the pods (keys under modeldeploy.io/ are reserved)."""
    annotations: Annotations = Field(default_factory=dict)
    """Extra annotations on the pods (keys under modeldeploy.io/ are reserved)."""
