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


TOKEN_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
"""An HTTP token (RFC 9110): a header's name (as Gateway API's HTTPHeaderName), a cookie's."""
HeaderName = Annotated[str, Field(min_length=1, max_length=256, pattern=TOKEN_PATTERN)]
HeaderValue = Annotated[str, Field(min_length=1, max_length=4096)]
CookieValue = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[!#-+\--:<-\[\]-~]+$")]
"""RFC 6265 cookie-octets: no spaces, quotes, commas, semicolons or backslashes."""


class HeaderCohort(ApiModel):
    """Requests that carry header `name` with exactly `value` (Gateway API HTTPHeaderMatch,
    type Exact; header names match case-insensitively)."""

    name: HeaderName
    """The header, e.g. x-canary."""
    value: HeaderValue
    """Its value, matched exactly, e.g. "true"."""


class CookieCohort(ApiModel):
    """Requests that carry cookie `name` with exactly `value`. Gateway API has no cookie
    match: the cohort rule matches the Cookie header with a RegularExpression
    (`(^|;\\s*)name=value(;|$)`), whose support is implementation-specific (Envoy-based
    gateways, Istio and others take RE2)."""

    name: HeaderName
    """The cookie, e.g. beta."""
    value: CookieValue
    """Its value, matched exactly, e.g. "1"."""


class Cohort(ApiModel):
    """The requests the new revision serves alone before any weighted step (Argo Rollouts'
    setHeaderRoute): a rule added to the HTTPRoute, in front of the weighted one, sends the
    requests with `header` (or `cookie`, exactly one of the two) to <name>-canary only;
    every other request stays on the stable. The cohort phase lasts like a step: at least
    rollout.stepInterval, and until the analysis passes; then the rule goes and the weighted
    steps start. Only with traffic.mode gatewayAPI. Analysed like with like: the canary's
    own checks (latency, errors, feature drift against its training profile, golden
    answers, custom checks) judge the cohort; the checks that compare it with the stable
    (prediction drift, invalid-input increase, accuracy) would compare different
    populations, and wait for the weighted steps, on evidence from their start."""

    rules = (
        Rule(
            cel="has(self.header) != has(self.cookie)",
            message="canary.cohort sets exactly one of header or cookie",
            holds=lambda c: (c.header is None) != (c.cookie is None),
        ),
    )

    header: HeaderCohort | None = None
    """The cohort by a request header (Exact match)."""
    cookie: CookieCohort | None = None
    """The cohort by a cookie (a RegularExpression match on the Cookie header)."""

    def describe(self) -> str:
        """The cohort in words, as status.cohort says it: `header x-canary=true`."""
        if self.header is not None:
            return f"header {self.header.name}={self.header.value}"
        assert self.cookie is not None
        return f"cookie {self.cookie.name}={self.cookie.value}"


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
    cohort: Cohort | None = None
    """A cohort phase before the first step (after the shadow phase, if any): only the
    requests with this header or cookie go to the new revision. Only with traffic.mode
    gatewayAPI."""


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
        Rule(
            cel="!has(self.canary) || !has(self.canary.cohort) "
            "|| self.traffic.mode == 'gatewayAPI'",
            message="canary.cohort needs traffic.mode gatewayAPI: only a Gateway can send the "
            "requests with a header or cookie to the new revision (replica ratios pick no "
            "requests)",
            holds=lambda r: r.canary.cohort is None or r.traffic.mode == "gatewayAPI",
            field_path=".canary.cohort",
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
