"""How a new revision replaces the stable one: canary steps, traffic, shadow, approval, bake."""

from itertools import pairwise
from typing import Annotated, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel, ListMapKey, Rule, not_stored_default
from modeldeploy.api.duration import Duration, PositiveDuration
from modeldeploy.api.types import ObjectName
from modeldeploy.api.webhooks import MAX_WEBHOOKS, Webhook

MAX_STEPS = 10
DEFAULT_CANARY_PERCENT = 10

Percent = Annotated[int, Field(ge=0, le=100)]
Step = Annotated[int, Field(ge=1, le=100)]


def _strictly_increasing(steps: list[int] | None) -> bool:
    return steps is None or all(a < b for a, b in pairwise(steps))


class Canary(ApiModel):
    """How much live traffic the new revision gets before promotion: one `percent` or a list
    of `steps` (exactly one of the two). When absent: percent 10 (not filled in by the
    apiserver, so that adding steps later is a plain edit)."""

    rules = (
        Rule(
            cel="has(self.percent) != has(self.steps)",
            message="canary sets exactly one of percent or steps",
            holds=lambda c: (c.percent is None) != (c.steps is None),
        ),
        Rule(
            cel="!has(self.steps) || (self.steps.isSorted() && "
            "self.steps.all(s, self.steps.exists_one(t, t == s)))",
            message="canary.steps must be strictly increasing, e.g. [1, 5, 25, 50]",
            holds=lambda c: _strictly_increasing(c.steps),
            field_path=".steps",
        ),
    )

    percent: Percent | None = None
    """A single step: the share of live traffic (0-100) the new revision serves while it is
    analysed, before promotion. 0 is a dark launch: no live traffic, only mirrored shadow
    traffic (needs rollout.shadow.percent above 0)."""
    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)] | None = None
    """Traffic percentages (1-100, strictly increasing) the new revision moves through, each
    held for at least rollout.stepInterval and until analysis passes, e.g. [1, 5, 25, 50]."""


class Traffic(ApiModel):
    """How traffic is split between the stable and the new revision."""

    rules = (
        Rule(
            cel="self.mode != 'gatewayAPI' || has(self.httpRoute)",
            message="traffic.httpRoute is required when traffic.mode is gatewayAPI",
            holds=lambda t: t.mode != "gatewayAPI" or t.http_route is not None,
        ),
        Rule(
            cel="self.mode == 'gatewayAPI' || !has(self.httpRoute)",
            message="traffic.httpRoute is only used when traffic.mode is gatewayAPI",
            holds=lambda t: t.mode == "gatewayAPI" or t.http_route is None,
            field_path=".httpRoute",
        ),
    )

    mode: Literal["replicas", "gatewayAPI"] = "replicas"
    """replicas: no mesh needed; the Service selects pods of both revisions and the canary
    share is approximated by replica counts (status.canaryWeight reports the effective share).
    gatewayAPI: exact weights on the backendRefs of `httpRoute`."""
    http_route: ObjectName | None = Field(default=None, alias="httpRoute")
    """Name of an HTTPRoute in the same namespace whose backendRefs the operator points at the
    <name>-stable and <name>-canary Services with weights. Only with mode gatewayAPI."""


class Shadow(ApiModel):
    """Mirroring of live requests to the new revision before it serves any of them."""

    percent: Percent = 0
    """Share of live requests (0-100) also sent to the new revision, whose answers are
    discarded; analysed for rollout.stepInterval before the first canary step. 0 = off."""


class Rollout(ApiModel):
    """How a new revision (a change of image, model version or template) is rolled out."""

    rules = (
        Rule(
            cel="!has(self.canary) || !has(self.canary.percent) || self.canary.percent > 0 "
            "|| self.shadow.percent > 0",
            message="canary.percent 0 (dark launch) needs shadow.percent above 0, otherwise the "
            "new revision gets no traffic to analyse",
            holds=lambda r: r.canary.percent != 0 or r.shadow.percent > 0,
            field_path=".shadow.percent",
        ),
    )

    canary: Canary = Field(
        default=Canary(percent=DEFAULT_CANARY_PERCENT), json_schema_extra=not_stored_default
    )
    step_interval: PositiveDuration = "5m"
    """Minimum time at each step; a step only advances when this has passed and the analysis
    passed with enough samples. At least analysis.interval."""
    traffic: Traffic = Traffic()
    shadow: Shadow = Shadow()
    require_approval: bool = False
    """Hold at the last step (phase Paused) until a person approves: `modeldeploy approve`,
    i.e. annotation modeldeploy.io/promote=<status.canaryRevision>."""
    bake_time: Duration = "10m"
    """After promotion, keep the previous revision's pods warm this long; when the new
    stable's analysis fails failureLimit times in a row within it, traffic goes back to the
    previous revision at once. 0s = scale it down right away."""
    paused: bool = False
    """Freeze the rollout where it is (traffic and replicas stay; analysis keeps reporting).
    Rollbacks on failed analysis still happen while paused."""
    webhooks: Annotated[list[Webhook], Field(max_length=MAX_WEBHOOKS), ListMapKey("name")] = Field(
        default_factory=list
    )
    """Gates the rollout waits for (preRollout, step) and receivers of notifications
    (notify), each with its URL from a Secret."""
