"""The webhooks' I/O: read a webhook's URL from its Secret, check it against the operator's
rules, and POST (the `ask` and `deliver` seams of `modeldeploy.handlers`). What to ask and
tell, and what an answer means, is decided in the pure plan (`rollout.webhooks`).

    webhooks = Webhooks(kube, WebhookSettings(allowed_hosts=("hooks.slack.com",)))
    answers = webhooks.ask(subject, decided.asks, now)          # -> GateAnswers, never raises
    failures = webhooks.deliver(subject, notifications, now)    # -> {name: why}, never raises

A request: one POST of the JSON payload, `timeout` seconds at most, no redirects followed (a
redirect could lead anywhere; it counts as an answer that is not 2xx), retried `retries`
times on a network error, a timeout, 429 or 5xx with a back-off of 0.5 s, 1 s, 2 s...
A gate's 2xx approves it; any other answer, or none, refuses it with the HTTP status and the
start of the body. These calls run in the reconcile's worker thread: the limits (timeout at
most 60 s, at most 5 retries, at most 8 webhooks) bound how long one reconcile can wait.
"""

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from modeldeploy.api import GateAnswer, PendingNotification, Webhook, parse_duration
from modeldeploy.kube import Kube
from modeldeploy.measure import CredentialsError, read_secret
from modeldeploy.rollout import Subject
from modeldeploy.rollout.webhooks import (
    GateAsk,
    WebhookRefused,
    allowed_host,
    gate_answer,
    gate_payload,
    notification_payload,
    secret_allowed,
    webhook_url,
)

log = logging.getLogger("modeldeploy.webhooks")

RETRY_BACKOFF = 0.5
"""Seconds before the first retry of a failed request; doubles with each retry."""
SHOWN_BODY = 200
"""Characters of an answer's body kept in status."""
USER_AGENT = "modeldeploy-operator"


@dataclass(frozen=True)
class WebhookSettings:
    """The operator's webhook options (`modeldeploy operator --webhook-host`)."""

    allowed_hosts: tuple[str, ...] = ()
    """Hosts a webhook URL may point at (`*.domain`: its subdomains). None: no webhook is
    ever called (gates refuse, notifications fail, with that reason)."""

    def __post_init__(self) -> None:
        for host in self.allowed_hosts:
            allowed_host(host)  # raises for a malformed entry


@dataclass(frozen=True)
class Response:
    status: int | None
    """None: no answer (network error, timeout)."""
    text: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500

    def describe(self) -> str:
        body = " ".join(self.text.split())[:SHOWN_BODY]
        head = f"HTTP {self.status}" if self.status is not None else "no answer"
        return f"{head}: {body}" if body else head


Post = Callable[[str, Mapping[str, Any], float], Response]


def http_post(url: str, payload: Mapping[str, Any], timeout: float) -> Response:
    try:
        answer = requests.post(
            url,
            data=json.dumps(payload),
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.RequestException as err:
        return Response(None, type(err).__name__)
    return Response(answer.status_code, answer.text[: SHOWN_BODY * 4])


class Webhooks:
    def __init__(
        self,
        kube: Kube | None,
        settings: WebhookSettings,
        post: Post = http_post,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self._post = post
        self._sleep = sleep

    def ask(
        self, subject: Subject, asks: Sequence[GateAsk], now: datetime
    ) -> tuple[GateAnswer, ...]:
        """Each gate's answer (refused with the reason when it could not be asked)."""
        answers = []
        for ask in asks:
            payload = gate_payload(
                identity(subject),
                ask,
                subject.status.stable_revision,
                subject.status.last_analysis,
                now,
            )
            try:
                response = self.call(subject, ask.webhook, payload)
            except WebhookRefused as err:
                message = f"webhook refused by the operator, not called: {err}"
                answers.append(gate_answer(ask, False, message, now))
                continue
            except Exception as err:  # never into Kopf; and never an approval
                log.exception("gate %s of %s/%s", ask.webhook.name, subject.namespace, subject.name)
                answers.append(gate_answer(ask, False, f"not asked: {err}", now))
                continue
            answers.append(gate_answer(ask, response.ok, response.describe(), now))
            log.info(
                "%s/%s gate %s about %s: %s",
                subject.namespace, subject.name, ask.webhook.name, ask.revision,
                response.describe(),
            )  # fmt: skip
        return tuple(answers)

    def deliver(
        self, subject: Subject, items: Sequence[PendingNotification], now: datetime
    ) -> dict[str, str]:
        """Send each notification; the names of those that failed, with why."""
        failures: dict[str, str] = {}
        webhooks = {w.name: w for w in subject.spec.rollout.webhooks if w.type == "notify"}
        for item in items:
            webhook = webhooks.get(item.webhook)
            if webhook is None:
                failures[item.name] = f"webhook {item.webhook} is no longer in the spec"
                continue
            try:
                response = self.call(
                    subject, webhook, notification_payload(identity(subject), item, webhook)
                )
            except WebhookRefused as err:
                failures[item.name] = f"webhook refused by the operator, not called: {err}"
                continue
            except Exception as err:  # a notification never stops a reconcile
                log.exception("notification %s of %s/%s", item.name, *identity(subject).values())
                failures[item.name] = str(err)
                continue
            if not response.ok:
                failures[item.name] = response.describe()
        return failures

    def call(self, subject: Subject, webhook: Webhook, payload: Mapping[str, Any]) -> Response:
        """POST `payload` to the webhook's URL, with its retries. Raises WebhookRefused for a
        URL the operator may not call."""
        url = self.url(subject, webhook)
        timeout = parse_duration(webhook.timeout).total_seconds()
        response = self._post(url, payload, timeout)
        for attempt in range(webhook.retries):
            if response.ok or not response.retryable:
                break
            self._sleep(RETRY_BACKOFF * 2**attempt)
            response = self._post(url, payload, timeout)
        return response

    def url(self, subject: Subject, webhook: Webhook) -> str:
        ref = webhook.url_from.secret_key_ref
        try:
            secret = read_secret(self.kube, subject.namespace, ref.name)
        except CredentialsError as err:
            raise WebhookRefused(str(err)) from err
        if not secret.values.get(ref.key):
            raise WebhookRefused(f"{secret.where} has no key {ref.key}")
        url, host = webhook_url(secret.values[ref.key], self.settings.allowed_hosts)
        secret_allowed(secret.labels, host, secret.where)
        return url


def identity(subject: Subject) -> dict[str, str]:
    return {"name": subject.name, "namespace": subject.namespace, "uid": subject.uid}
