"""Webhooks of a rollout: gates that must approve before the new revision moves on, and
notifications of what happened to it.

A webhook's URL is never in the spec: it comes from a key of a Secret in the
ModelDeployment's namespace, which an admin labelled with the URL's host
(`modeldeploy.io/webhook-host`), and the host must be one the operator allows
(`--webhook-host`). So a spec only picks a Secret; where the operator may send requests
stays the admins' decision.
"""

from datetime import timedelta
from typing import Annotated, Literal, get_args

from pydantic import Field

from modeldeploy.api.base import ApiModel, Rule, pattern_rule
from modeldeploy.api.duration import PositiveDuration, cel_is_duration, parse_duration
from modeldeploy.api.types import ObjectName

MAX_WEBHOOKS = 8
MAX_WEBHOOK_TIMEOUT = timedelta(seconds=60)
MAX_WEBHOOK_RETRIES = 5

WebhookType = Literal["preRollout", "step", "notify"]
GATE_TYPES: tuple[WebhookType, ...] = ("preRollout", "step")
NotifyEvent = Literal[
    "Promoted", "RolledBack", "Degraded", "KillSwitchEngaged", "KillSwitchReleased"
]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)
WebhookName = Annotated[
    str,
    Field(min_length=1, max_length=63),
    pattern_rule("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "must be a DNS label, e.g. sign-off"),
]


class SecretKeyRef(ApiModel):
    """One key of a Secret in the ModelDeployment's namespace."""

    name: ObjectName
    """The Secret's name."""
    key: Annotated[
        str,
        Field(min_length=1, max_length=253),
        pattern_rule("^[-._a-zA-Z0-9]+$", "must be a Secret key (letters, digits, '-', '_', '.')"),
    ]
    """The key whose value is the URL."""


class UrlFrom(ApiModel):
    """Where the webhook's URL is read from."""

    secret_key_ref: SecretKeyRef
    """A Secret key holding the http(s) URL. The Secret must carry the label
    `modeldeploy.io/webhook-host` with the URL's host (an admin's statement that it may be
    called), and the host must be one of the operator's `--webhook-host`s."""


class Webhook(ApiModel):
    """A gate the rollout waits for, or a receiver of notifications."""

    rules = (
        Rule(
            cel="self.type == 'notify' || !has(self.events)",
            message="webhook events are only for type notify (a gate is asked, not told)",
            holds=lambda w: w.type == "notify" or w.events is None,
            field_path=".events",
        ),
        Rule(
            cel="self.type == 'notify' || self.format == 'json'",
            message="webhook format slack is only for type notify (a gate answers with its "
            "HTTP status, which a chat does not)",
            holds=lambda w: w.type == "notify" or w.format == "json",
            field_path=".format",
        ),
        Rule(
            cel=f"!{cel_is_duration('self.timeout')} || duration(self.timeout) <= duration('60s')",
            message="webhook timeout must be at most 60s",
            holds=lambda w: parse_duration(w.timeout) <= MAX_WEBHOOK_TIMEOUT,
            field_path=".timeout",
        ),
    )

    name: WebhookName
    """Unique among the webhooks; named in status, Events and the payload."""
    type: WebhookType
    """preRollout: must approve a new revision before it gets any traffic (its pods warm up
    meanwhile; no mirroring either). step: must approve before the rollout advances past each
    step (and the shadow phase), the last one included. Both are asked with an HTTP POST of a
    JSON payload: a 2xx answer approves, anything else (or no answer) refuses, and a refused
    gate is asked again every analysis.interval. notify: told of events (see `events`);
    its failures never hold the rollout."""
    url_from: UrlFrom
    timeout: PositiveDuration = "10s"
    """How long one request may take (at most 60s)."""
    retries: Annotated[int, Field(ge=0, le=MAX_WEBHOOK_RETRIES)] = 2
    """Further attempts after a failed request (network error, timeout, 5xx, 429), with a
    short back-off. A gate's 4xx answer is a refusal, not a failure: it is not retried."""
    format: Literal["json", "slack"] = "json"
    """json: the operator's payload. slack: a Slack-compatible message ({"text", "blocks"})
    for an incoming-webhook URL (type notify only)."""
    events: (
        Annotated[list[NotifyEvent], Field(min_length=1, max_length=len(NOTIFY_EVENTS))] | None
    ) = None
    """Which events a notify webhook receives (all when absent): Promoted, RolledBack (with
    the failing checks), Degraded (the Degraded condition turning True for another reason
    than a rollback), KillSwitchEngaged, KillSwitchReleased."""

    @property
    def gate(self) -> bool:
        return self.type in GATE_TYPES

    def receives(self, event: NotifyEvent) -> bool:
        return self.type == "notify" and (self.events is None or event in self.events)
