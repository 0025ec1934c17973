"""The desired state of a ModelDeployment: what serves, and how it may change."""

from typing import Annotated, Literal

from pydantic import Field

from modeldeploy.api.analysis import Analysis
from modeldeploy.api.base import ApiModel, Rule, pattern_rule
from modeldeploy.api.duration import PositiveDuration, cel_not_shorter, parse_duration
from modeldeploy.api.external import ExternalServer
from modeldeploy.api.rollout import Rollout
from modeldeploy.api.template import PodTemplate
from modeldeploy.api.types import DIGEST_MARKER, Image, LabelValue, ObjectName, Passthrough

MAX_REPLICAS = 1000
ImagePolicy = Literal["requireDigest", "allowTags"]


class ModelRef(ApiModel):
    """Which model this is; both values label the pods and every metric series."""

    name: LabelValue
    """Model name, e.g. churn."""
    version: LabelValue
    """Model version, e.g. 2026-11-20. Changing it starts a rollout."""


ReplicaCount = Annotated[int, Field(ge=1, le=MAX_REPLICAS)]


class Replicas(ApiModel):
    """Bounds of each revision's replica count (the HPA's floor and ceiling)."""

    rules = (
        Rule(
            cel="self.minWarm <= self.max",
            message="replicas.minWarm must not exceed replicas.max",
            holds=lambda r: r.min_warm <= r.max,
            field_path=".minWarm",
        ),
    )

    min_warm: ReplicaCount = 2
    """Ready, warmed-up pods the stable revision never drops below, rollouts included."""
    max: ReplicaCount = 10
    """Most pods a revision may scale to."""


class Autoscaling(ApiModel):
    """The HorizontalPodAutoscaler (autoscaling/v2) of the stable revision, bounded by
    replicas; a canary is sized from the stable's count."""

    target_cpu_utilization: Annotated[int, Field(ge=1, le=100, alias="targetCPUUtilization")] = 70
    """Average CPU use, in percent of the pods' CPU requests, the HPA aims at."""
    metrics: Annotated[list[Passthrough], Field(max_length=10)] = Field(default_factory=list)
    """Further HPA v2 metrics (type Pods/Object/External/ContainerResource), exactly as in a
    HorizontalPodAutoscaler's spec.metrics; added to the CPU target."""
    behavior: Passthrough | None = None
    """HPA scale-up/down behavior, exactly as in a HorizontalPodAutoscaler's spec.behavior."""


class Warmup(ApiModel):
    """When a pod counts as Ready: after the image's golden requests returned the expected
    outputs, fast enough. A new revision gets traffic only on Ready pods."""

    max_latency_ms: Annotated[int, Field(ge=1, le=600_000)] = 1000
    """A golden request slower than this many milliseconds keeps the pod not Ready."""
    timeout: PositiveDuration = "10m"
    """How long a new revision's pods may take to become Ready before the rollout rolls back."""


class KillSwitch(ApiModel):
    """Take traffic away from the model at once, keeping the spec so that releasing it
    restores the previous state."""

    engaged: bool = False
    """Pull the switch."""
    mode: Literal["scaleToZero", "fallback"] = "scaleToZero"
    """scaleToZero: scale every revision to zero (clients get connection errors).
    fallback: route all traffic to spec.fallback."""


class Fallback(ApiModel):
    """A simpler model or static responder to serve when the kill switch is engaged with mode
    fallback. Runs as <name>-fallback behind the same Service."""

    image: Image
    """Image of the fallback (pinned by digest when imagePolicy is requireDigest)."""
    replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    """Pods of the fallback, kept running so that switching to it is immediate."""
    template: PodTemplate | None = None
    """Pod overrides for the fallback (none when absent)."""


class SecretRef(ApiModel):
    """A Secret in the ModelDeployment's namespace."""

    name: ObjectName
    """Its name."""


class PrometheusAuth(ApiModel):
    """Credentials for Prometheus (none when absent)."""

    type: Literal["bearer", "basic"] = "bearer"
    """bearer: the Secret's key `token`; basic: its keys `username` and `password`."""
    secret_ref: SecretRef
    """The Secret holding the credentials."""


class Prometheus(ApiModel):
    """The Prometheus that holds this model's metrics (the operator's default when absent):
    one of the endpoints the operator's configuration names."""

    rules = (
        Rule(
            cel="has(self.endpoint) != has(self.url)",
            message="set exactly one of prometheus.endpoint and prometheus.url",
            holds=lambda p: (p.endpoint is None) != (p.url is None),
        ),
    )

    endpoint: (
        Annotated[
            str,
            Field(min_length=1, max_length=63),
            pattern_rule(
                "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                "must be the name of one of the operator's Prometheus endpoints (a DNS label)",
            ),
        ]
        | None
    ) = None
    """Name of one of the operator's Prometheus endpoints (`--prometheus-endpoint NAME=URL`,
    chart `prometheus.endpoints`); `default` is its `--prometheus-url`."""
    url: (
        Annotated[
            str,
            Field(min_length=1, max_length=2048),
            pattern_rule(
                "^https?://[-a-zA-Z0-9.]+(:[0-9]{1,5})?(/[-a-zA-Z0-9._~%/]*)?$",
                "must be an http:// or https:// URL: host, optional port and path (no "
                "credentials, query or spaces), e.g. http://prometheus:9090",
            ),
        ]
        | None
    ) = None
    """Deprecated: accepted only when it is exactly the URL of one of the operator's
    endpoints (then the same as naming that endpoint); use `endpoint`."""
    auth: PrometheusAuth | None = None
    """Credentials from a Secret of this namespace that an admin labelled
    `modeldeploy.io/prometheus-endpoint: <endpoint>`."""


def _cel_pinned(image: str) -> str:
    return f"{image}.contains('{DIGEST_MARKER}')"


RUNBOOK_URL_PATTERN = (
    "^https?://[-a-zA-Z0-9.]+(:[0-9]{1,5})?(/[-a-zA-Z0-9._~%/!$&()*+,;=:@]*)?"
    "([?][-a-zA-Z0-9._~%/!$&()*+,;=:@?]*)?(#[-a-zA-Z0-9._~%/!$&()*+,;=:@?]*)?$"
)
MAX_CONTACT = 256


class Owner(ApiModel):
    """Who answers for this model: shown by `modeldeploy status`, in the operator's Events
    and audit log, and on its alerts (the `modeldeploy_operator_owner_info` metric)."""

    team: LabelValue
    """The team that owns the model, e.g. retention (also a label value of the owner metric)."""
    contact: Annotated[str, Field(min_length=1, max_length=MAX_CONTACT)] | None = None
    """How to reach the owner: an email address, a chat channel, a pager alias (free text)."""
    runbook_url: (
        Annotated[
            str,
            Field(min_length=1, max_length=2048),
            pattern_rule(
                RUNBOOK_URL_PATTERN,
                "must be an http:// or https:// URL without spaces or quotes, e.g. "
                "https://runbooks.example/churn",
            ),
        ]
        | None
    ) = None
    """What to do when this model's rollout fails or it degrades: the runbook's http(s) URL
    (the `runbook_url` of its alerts)."""

    def summary(self) -> str:
        """ "owner: retention (ml-oncall@example.com)": for Events and one-line views."""
        return f"owner: {self.team}" + (f" ({self.contact})" if self.contact else "")


class ModelDeploymentSpec(ApiModel):
    """What should serve (one image = model + code + training profile) and how it may change."""

    rules = (
        Rule(
            cel=f"self.imagePolicy != 'requireDigest' || {_cel_pinned('self.image')}",
            message="image must be pinned by digest (...@sha256:<64 hex digits>) because "
            "imagePolicy is requireDigest; pin it, or set imagePolicy: allowTags",
            holds=lambda s: s.image_policy != "requireDigest" or DIGEST_MARKER in s.image,
            field_path=".image",
        ),
        Rule(
            cel="self.imagePolicy != 'requireDigest' || !has(self.fallback) || "
            f"{_cel_pinned('self.fallback.image')}",
            message="fallback.image must be pinned by digest (...@sha256:<64 hex digits>) "
            "because imagePolicy is requireDigest",
            holds=lambda s: (
                s.image_policy != "requireDigest"
                or s.fallback is None
                or DIGEST_MARKER in s.fallback.image
            ),
            field_path=".fallback.image",
        ),
        Rule(
            cel="self.killSwitch.mode != 'fallback' || has(self.fallback)",
            message="killSwitch.mode fallback needs spec.fallback (an image to send traffic to)",
            holds=lambda s: s.kill_switch.mode != "fallback" or s.fallback is not None,
            field_path=".killSwitch.mode",
        ),
        Rule(
            cel=cel_not_shorter("self.rollout.stepInterval", "self.analysis.interval"),
            message="rollout.stepInterval must be at least analysis.interval, otherwise a step "
            "ends before its first analysis",
            holds=lambda s: (
                parse_duration(s.rollout.step_interval) >= parse_duration(s.analysis.interval)
            ),
            field_path=".rollout.stepInterval",
        ),
    )

    model: ModelRef
    image: Image
    """The model image: model + serving code + training profile + golden requests, one unit.
    A change starts a rollout."""
    image_policy: ImagePolicy = "requireDigest"
    """requireDigest: images must be pinned (@sha256:...), since a moved tag would silently
    mix versions between pods; allowTags: accept tags too."""
    external_server: ExternalServer | None = None
    """Set when the image is an external V2 server (e.g. MLServer) rather than the
    modeldeploy runtime: the operator then runs `modeldeploy proxy` beside it in each pod
    (none when absent)."""
    template: PodTemplate = PodTemplate()
    replicas: Replicas = Replicas()
    autoscaling: Autoscaling = Autoscaling()
    warmup: Warmup = Warmup()
    rollout: Rollout = Rollout()
    analysis: Analysis = Analysis()
    kill_switch: KillSwitch = KillSwitch()
    fallback: Fallback | None = None
    prometheus: Prometheus | None = None
    owner: Owner | None = None
    """Who owns the model (none when absent)."""

    def privileges(self) -> tuple[str, ...]:
        """What the pod templates ask for that only an operator started with
        --allow-privileged-models runs, as spec paths (empty: nothing)."""
        asked = tuple(f"template.{path}" for path in self.template.privileges())
        if self.fallback is not None and self.fallback.template is not None:
            asked += tuple(f"fallback.template.{p}" for p in self.fallback.template.privileges())
        return asked
