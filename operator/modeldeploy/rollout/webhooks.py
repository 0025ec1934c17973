"""Gates and notifications, decided purely; the shell (`modeldeploy.webhooks`) only reads the
Secret and sends the HTTP requests.

Gates are asked the way the analysis is measured: the machine's plan says which gate it
needs answered (`Plan.asks`: the webhook, the revision, the step), the shell asks them and
the plan is made again with the answers, which it records in `status.gates` (an approval
is never asked again for the same revision and step, also after a restart; a refusal is
asked again every analysis.interval: `Plan.due`).

Notifications ride on the Event outbox (`rollout.outbox`): the machine's `Plan.notices`
become `status.pendingNotifications`, one per notify webhook that receives the event,
written with the transition they report, each named like an Event (its idempotency key),
delivered after the status write and removed once a receiver took them: at least once,
across restarts. A failed delivery round is tried again later (`DELIVERY_BACKOFF`, doubling,
at most `DELIVERY_ROUNDS`); it never holds the rollout.

Where requests may go (the same rules as the Prometheus endpoints, `analysis.endpoints`):
the URL comes from a Secret key; the Secret must carry `WEBHOOK_HOST_LABEL` with the URL's
host (an admin's statement), the host must be one of the operator's allowed hosts, and the
URL must be a plain http(s) URL (`webhook_url`). A webhook that breaks a rule is never
called: a gate counts as refused with the reason, a notification as failed.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from modeldeploy.api import (
    MAX_EVENT_MESSAGE,
    MAX_NOTIFIED_CHECKS,
    MAX_PENDING_NOTIFICATIONS,
    AnalysisResult,
    CheckResult,
    GateAnswer,
    ModelDeploymentStatus,
    NotifyEvent,
    PendingNotification,
    Webhook,
    WebhookType,
)

WEBHOOK_HOST_LABEL = "modeldeploy.io/webhook-host"
"""Label on a Secret: the one host its webhook URL may point at."""
DELIVERY_ROUNDS = 5
DELIVERY_BACKOFF = timedelta(seconds=30)
"""Between a notification's failed delivery round and the next; doubles each round."""
_HOST = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_ALLOWED_HOST = re.compile(r"(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_PATH_QUERY = re.compile(r"(/[-A-Za-z0-9._~%!$&'()*+,;=:@]*)*(\?[-A-Za-z0-9._~%!$&'()*+,;=:@/?]*)?")


class WebhookRefused(ValueError):
    """A webhook the operator's rules do not let it call; the message says what to do."""


def allowed_host(text: str) -> str:
    """One entry of the operator's allowed hosts (`--webhook-host`): a host name or IP, or
    `*.domain` for its subdomains. Raises ValueError otherwise."""
    if not _ALLOWED_HOST.fullmatch(text):
        raise ValueError(
            f"--webhook-host {text!r}: expected a host name or IP, or *.domain for subdomains"
        )
    return text.lower()


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    host = host.lower()
    return any(
        host.endswith(entry[1:]) if entry.startswith("*.") else host == entry for entry in allowed
    )


def webhook_url(url: str, allowed: Sequence[str]) -> tuple[str, str]:
    """(url, host) of a webhook URL the operator may call: plain http(s), a host the
    operator allows, an optional port, path and query; no credentials, fragment, spaces or
    control characters. Raises WebhookRefused otherwise."""
    odd = any(not "!" <= char <= "~" for char in url)  # urlsplit drops TAB, CR, LF silently
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port, odd = None, True
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    rest = url[len(f"{parts.scheme}://{parts.netloc}") :]
    if (
        odd
        or parts.scheme not in ("http", "https")
        or not _HOST.fullmatch(host)
        or not _PATH_QUERY.fullmatch(rest)
    ):
        raise WebhookRefused(
            "the URL must be http(s)://host[:port][/path][?query], without credentials, "
            "fragment or spaces"
        )
    if not host_allowed(host, allowed):
        hosts = ", ".join(allowed) if allowed else "none"
        raise WebhookRefused(
            f"host {host} is not one the operator may call (its --webhook-host, chart "
            f"webhooks.allowedHosts: {hosts})"
        )
    return url, host.lower()


def secret_allowed(labels: Mapping[str, str], host: str, where: str) -> None:
    """Raises WebhookRefused unless an admin labelled the Secret for this host."""
    if labels.get(WEBHOOK_HOST_LABEL, "").lower() != host:
        raise WebhookRefused(
            f"{where} may not be used as a webhook URL for host {host}: an admin allows it "
            f"with the label {WEBHOOK_HOST_LABEL}={host}"
        )


# --- gates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateAsk:
    """A gate the plan needs answered: may `revision` go on past `step`?"""

    webhook: Webhook
    revision: str
    step: int | None
    """The step (index) it waits at; None: before any traffic (preRollout) or the shadow
    phase (step)."""
    percent: int
    """The share of live traffic the canary has at that point (0 before the first step)."""

    @property
    def type(self) -> WebhookType:
        return self.webhook.type


def answered(
    answers: Sequence[GateAnswer], webhook: str, revision: str, step: int | None
) -> GateAnswer | None:
    """The answer of `webhook` about this revision and step, if it gave one."""
    found = next((a for a in answers if a.webhook == webhook), None)
    if found is None or found.revision != revision or found.step != step:
        return None
    return found


def gate_payload(
    identity: Mapping[str, str],
    ask: GateAsk,
    stable: str | None,
    last_analysis: AnalysisResult | None,
    now: datetime,
) -> dict[str, Any]:
    """The JSON body a gate is asked with. `identity`: name, namespace, uid of the
    ModelDeployment."""
    step = "" if ask.step is None else str(ask.step)
    analysis = None
    if last_analysis is not None and last_analysis.revision == ask.revision:
        analysis = last_analysis.model_dump(mode="json", by_alias=True)
    return {
        "kind": "gate",
        "type": ask.type,
        "webhook": ask.webhook.name,
        "idempotencyKey": f"{identity['uid']}/{ask.webhook.name}/{ask.revision}/{step}",
        "modelDeployment": dict(identity),
        "revision": ask.revision,
        "stableRevision": stable,
        "step": ask.step,
        "canaryPercent": ask.percent,
        "lastAnalysis": analysis,
        "time": now.isoformat(),
    }


def gate_answer(ask: GateAsk, approved: bool, message: str, now: datetime) -> GateAnswer:
    return GateAnswer(
        webhook=ask.webhook.name,
        revision=ask.revision,
        step=ask.step,
        approved=approved,
        message=message[:MAX_EVENT_MESSAGE],
        time=now,
    )


# --- notifications ----------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """Something a notify webhook may be told (`Plan.notices`)."""

    event: NotifyEvent
    revision: str | None
    message: str
    checks: tuple[CheckResult, ...] = ()


def failing_checks(analysis: AnalysisResult | None) -> tuple[CheckResult, ...]:
    if analysis is None:
        return ()
    return tuple(c for c in analysis.checks if c.verdict == "fail")[:MAX_NOTIFIED_CHECKS]


def notifications(
    webhooks: Sequence[Webhook], notices: Sequence[Notice], names: Sequence[str], now: datetime
) -> list[PendingNotification]:
    """One pending notification per notice and webhook that receives it; `names[i]` is the
    i-th notice's deterministic name (suffixed by the webhook)."""
    return [
        PendingNotification(
            name=f"{name}.{webhook.name}",
            webhook=webhook.name,
            event=notice.event,
            revision=notice.revision,
            message=notice.message[:MAX_EVENT_MESSAGE],
            checks=list(notice.checks),
            time=now,
        )
        for notice, name in zip(notices, names, strict=True)
        for webhook in webhooks
        if webhook.receives(notice.event)
    ][-MAX_PENDING_NOTIFICATIONS:]


def deliverable(status: ModelDeploymentStatus, now: datetime) -> list[PendingNotification]:
    """The pending notifications whose delivery round is due."""
    return [
        n
        for n in status.pending_notifications
        if n.next_attempt_at is None or n.next_attempt_at <= now
    ]


def delivered(
    status: ModelDeploymentStatus, failures: Mapping[str, str], tried: Sequence[str], now: datetime
) -> tuple[ModelDeploymentStatus, list[tuple[PendingNotification, str]]]:
    """The status after a delivery round of the notifications named `tried` (`failures`:
    name -> why, for those that failed), and the notifications given up (their last round
    failed), with why."""
    kept: list[PendingNotification] = []
    given_up: list[tuple[PendingNotification, str]] = []
    for item in status.pending_notifications:
        if item.name not in tried:
            kept.append(item)
        elif item.name in failures:
            attempts = item.attempts + 1
            if attempts >= DELIVERY_ROUNDS:
                given_up.append((item, failures[item.name]))
                continue
            later = now + DELIVERY_BACKOFF * 2 ** (attempts - 1)
            kept.append(item.model_copy(update={"attempts": attempts, "next_attempt_at": later}))
    return status.model_copy(update={"pending_notifications": kept}), given_up


def notification_payload(
    identity: Mapping[str, str], item: PendingNotification, webhook: Webhook
) -> dict[str, Any]:
    """The body sent to a notify webhook: the operator's JSON, or a Slack-compatible
    message."""
    checks = [c.model_dump(mode="json", by_alias=True) for c in item.checks]
    if webhook.format == "slack":
        return slack_message(identity, item)
    return {
        "kind": "notification",
        "event": item.event,
        "webhook": item.webhook,
        "idempotencyKey": item.name,
        "modelDeployment": dict(identity),
        "revision": item.revision,
        "message": item.message,
        "checks": checks,
        "time": item.time.isoformat(),
    }


def _check_line(check: CheckResult) -> str:
    value = "no data" if check.value is None else f"{check.value:.4g}"
    return f"{check.name}: {value} (threshold {check.threshold:g}, n={check.samples})"


def slack_message(identity: Mapping[str, str], item: PendingNotification) -> dict[str, Any]:
    """`{"text", "blocks"}` as Slack's incoming webhooks (and Mattermost, Rocket.Chat, ...)
    take it; `text` is the fallback line for notifications."""
    where = f"{identity['namespace']}/{identity['name']}"
    text = f"modeldeploy {where}: {item.event} {item.revision or ''}".rstrip()
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*\n{item.message}"}}
    ]
    if item.checks:
        lines = "\n".join(f"• {_check_line(c)}" for c in item.checks)
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"Failing checks:\n{lines}"}}
        )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"id {item.name}"}]})
    return {"text": f"{text}: {item.message}", "blocks": blocks}
