"""Gates and notifications (`rollout.webhooks`): the pure decisions through the state machine
(a gate that has not approved keeps the canary at 0% and still; an approval is never asked
again; a refusal is asked again at analysis.interval, which `Plan.due` says), the payloads,
the URL rules, delivery bookkeeping, and the shell's requests against a fake transport."""

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from test_rollout_glue import FakeApiserver, model_deployment
from test_rollout_machine import NAME, UID, V2, Driver, rev, stable_driver

from modeldeploy.api import (
    CheckResult,
    GateAnswer,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PendingNotification,
    Webhook,
    to_wire,
)
from modeldeploy.handlers import Reconciler
from modeldeploy.resources.names import model_selector, revision_selector
from modeldeploy.rollout import AnalysisInput, AnalysisSignal, Plan, Subject, refuse_privileges
from modeldeploy.rollout.outbox import with_outbox
from modeldeploy.rollout.webhooks import (
    DELIVERY_BACKOFF,
    DELIVERY_ROUNDS,
    WEBHOOK_HOST_LABEL,
    GateAsk,
    Notice,
    WebhookRefused,
    deliverable,
    delivered,
    gate_answer,
    gate_payload,
    notification_payload,
    secret_allowed,
    webhook_url,
)
from modeldeploy.watchcache import Snapshot
from modeldeploy.webhooks import Response, Webhooks, WebhookSettings

pytestmark = pytest.mark.unit

INTERVAL = timedelta(seconds=10)  # test_rollout_machine.base_spec: analysis.interval
STEP_INTERVAL = timedelta(seconds=30)


def hook(name: str, type_: str, **more: Any) -> dict[str, Any]:
    ref = {"secretKeyRef": {"name": "hooks", "key": name}}
    return {"name": name, "type": type_, "urlFrom": ref, **more}


class Gatekeeper:
    """Answers every ask with the verdict set for its webhook; remembers the asks."""

    def __init__(self, **approve: bool) -> None:
        self.approve = approve
        self.asked: list[GateAsk] = []

    def __call__(self, asks: tuple[GateAsk, ...], now: datetime) -> tuple[GateAnswer, ...]:
        self.asked += asks
        return tuple(
            gate_answer(
                a,
                self.approve[a.webhook.name],
                "HTTP 200" if self.approve[a.webhook.name] else "HTTP 403: not signed off",
                now,
            )
            for a in asks
        )


def gated(*webhooks: dict[str, Any], **approve: bool) -> tuple[Driver, Gatekeeper]:
    d = stable_driver()
    keeper = Gatekeeper(**approve)
    d.gates = keeper
    rollout = {**d.spec_raw["rollout"], "webhooks": list(webhooks)}
    d.change(rollout=rollout)
    d.reconcile()
    return d, keeper


def start_rollout(d: Driver) -> Plan:
    d.change(image=V2)
    return d.reconcile()


# --- preRollout gate ---------------------------------------------------------------------


def test_a_refusing_pre_rollout_gate_keeps_the_canary_warm_at_zero_percent() -> None:
    d, keeper = gated(hook("eval", "preRollout"), eval=False)
    first = start_rollout(d)
    canary = rev(V2)
    assert [(a.webhook.name, a.revision, a.step, a.percent) for a in keeper.asked] == [
        ("eval", canary, None, 0)
    ]
    assert "GateRefused" in [e.reason for e in first.events]
    d.run(120)  # far past stepInterval
    assert d.status.canary_revision == canary
    assert d.status.step == 0
    assert d.status.canary_weight == 0
    assert d.client_selector() == revision_selector(NAME, rev())
    assert d.cluster.get("Deployment", f"churn-{canary}")["status"]["readyReplicas"] >= 1
    assert "StepAdvanced" not in d.events()
    assert d.condition("Progressing") == ("True", "GateRefused")
    assert "preRollout gate eval refused" in d.status.message
    assert "HTTP 403: not signed off" in d.status.message
    [answer] = d.status.gates
    assert (answer.webhook, answer.revision, answer.approved) == ("eval", canary, False)
    # Asked again every analysis.interval, its Event only once (the answer did not change).
    assert 11 <= len(keeper.asked) <= 13
    assert d.events().count("GateRefused") == 1


def test_an_approval_starts_the_first_step_and_is_never_asked_again() -> None:
    d, keeper = gated(hook("eval", "preRollout"), eval=False)
    start_rollout(d)
    d.run(15)
    keeper.approve["eval"] = True
    d.run(INTERVAL.seconds)
    assert d.events().count("GateApproved") == 1
    approved_at = d.status.gates[0].time
    assert d.status.step_started_at == approved_at  # the step's clock starts with traffic
    assert d.client_selector() == model_selector(NAME)
    assert d.status.canary_weight > 0
    asked = len(keeper.asked)
    d.until("Stable")
    assert len(keeper.asked) == asked  # the stored approval holds for the whole rollout
    assert d.status.gates == []  # cleared when the rollout ends
    assert d.status.stable_revision == rev(V2)


def test_the_stored_approval_survives_a_restart() -> None:
    """A new operator process plans from the stored status alone: it does not ask again."""
    d, keeper = gated(hook("eval", "preRollout"), eval=True)
    start_rollout(d)
    assert len(keeper.asked) == 1
    restarted = Gatekeeper(eval=False)
    d.gates = restarted
    d.reconcile()
    assert restarted.asked == []
    assert d.client_selector() == model_selector(NAME)


def test_a_refused_gate_is_due_at_its_next_ask() -> None:
    d, keeper = gated(hook("eval", "preRollout"), eval=False)
    result = start_rollout(d)
    assert result.due == d.status.gates[0].time + INTERVAL  # before the step's 30 s end
    early = d.reconcile(after=INTERVAL - timedelta(seconds=2))
    assert (len(keeper.asked), early.due) == (1, result.due)
    d.reconcile(after=result.due - d.now)
    assert len(keeper.asked) == 2


def test_no_mirroring_before_the_pre_rollout_gate_approves() -> None:
    d, keeper = gated(hook("eval", "preRollout"), eval=False)
    d.change(rollout={**d.spec_raw["rollout"], "shadow": {"percent": 20}})
    d.reconcile()
    start_rollout(d)
    d.run(5)
    stable = d.cluster.get("Deployment", f"churn-{rev()}")
    env = {e["name"] for e in stable["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MODELDEPLOY_SHADOW_URL" not in env
    keeper.approve["eval"] = True
    d.run(INTERVAL.seconds)
    stable = d.cluster.get("Deployment", f"churn-{rev()}")
    env = {e["name"] for e in stable["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MODELDEPLOY_SHADOW_URL" in env


# --- step gate ----------------------------------------------------------------------------


def test_a_step_gate_holds_each_step_until_it_approves() -> None:
    d, keeper = gated(hook("sign-off", "step"), **{"sign-off": False})
    start_rollout(d)
    assert keeper.asked == []  # asked only when the step could end otherwise
    d.run(STEP_INTERVAL.seconds + 5)
    assert d.status.step == 0
    assert [a.step for a in keeper.asked] == [0]
    assert keeper.asked[0].percent == 10
    assert d.condition("Progressing") == ("True", "GateRefused")
    keeper.approve["sign-off"] = True
    d.run(INTERVAL.seconds)
    assert d.status.step == 1
    d.until("Stable")
    assert [a.step for a in keeper.asked if a.webhook.name == "sign-off"][-2:] == [0, 1]
    assert d.events().count("GateApproved") == 2


def test_a_promote_command_overrides_the_gates() -> None:
    d, _ = gated(hook("eval", "preRollout"), eval=False)
    start_rollout(d)
    d.annotations["modeldeploy.io/promote"] = rev(V2)
    d.until("Stable")
    assert d.status.stable_revision == rev(V2)


def test_without_gates_nothing_is_asked_and_an_idle_object_is_not_due() -> None:
    d, keeper = gated(hook("chat", "notify"))
    start_rollout(d)
    d.until("Stable")
    d.run(120)
    idle = d.reconcile()
    assert keeper.asked == []
    assert (idle.apply, idle.events, idle.asks, idle.notices, idle.due) == ((), (), (), (), None)


# --- notices ------------------------------------------------------------------------------


def notices(d: Driver) -> list[Notice]:
    return [n for p in d.plans for n in p.notices]


def test_a_rollback_notice_carries_the_failing_checks() -> None:
    d, _ = gated(hook("chat", "notify"))
    start_rollout(d)
    canary = rev(V2)
    failing = CheckResult(
        name="latency-p95", value=312.0, threshold=250.0, samples=812, verdict="fail"
    )
    passing = CheckResult(name="error-rate", value=0.0, threshold=0.01, samples=812, verdict="pass")
    signal = AnalysisSignal(
        canary, "fail", d.now, rollback=True, reason="latency-p95 312 ms (max 250 ms)",
        checks=(failing, passing), samples=812,
    )  # fmt: skip
    d.reconcile(AnalysisInput(gated=True, signal=signal))
    [notice] = notices(d)
    assert (notice.event, notice.revision) == ("RolledBack", canary)
    assert "latency-p95 312 ms" in notice.message
    assert notice.checks == (failing,)


def test_promotion_kill_switch_and_degraded_are_noticed_once_each() -> None:
    d, _ = gated(hook("chat", "notify"))
    start_rollout(d)
    d.until("Stable")
    d.change(killSwitch={"engaged": True})
    d.run(3)
    d.change(killSwitch={"engaged": False})
    d.run(3)
    d.cluster.unready[f"churn-{rev(V2)}"] = 0  # the stable loses its pods
    d.cluster.settle()
    d.guard = False
    d.run(3)
    events = [n.event for n in notices(d)]
    assert events == ["Promoted", "KillSwitchEngaged", "KillSwitchReleased", "Degraded"]
    assert "InsufficientReplicas" in notices(d)[-1].message


def test_a_stable_failing_its_holdout_accuracy_is_degraded_and_noticed_naming_it() -> None:
    d, _ = gated(hook("chat", "notify"))
    stable = rev()
    failing = CheckResult(
        name="holdout-accuracy", value=0.14, threshold=0.05, samples=400, verdict="fail"
    )
    passing = CheckResult(name="feature-psi/age", value=0.01, threshold=0.15, samples=900,
                          verdict="pass")  # fmt: skip
    reason = "holdout-accuracy: labelled accuracy 72.5% (400 labels) vs holdout 86.5%"
    signal = AnalysisSignal(
        stable, "fail", d.now, rollback=False, reason=reason, checks=(failing, passing),
        samples=900,
    )  # fmt: skip
    d.reconcile(AnalysisInput(gated=True, signal=signal))
    assert d.phase() == "Degraded"
    assert d.status.stable_revision == stable  # never a rollback
    degraded = next(c for c in d.status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "AnalysisFailed")
    assert degraded.message == f"{stable} fails its analysis: holdout-accuracy"
    [notice] = notices(d)
    assert (notice.event, notice.revision) == ("Degraded", stable)
    assert notice.message == f"AnalysisFailed: {stable} fails its analysis: holdout-accuracy"
    assert [e.message for p in d.plans for e in p.events if e.reason == "AnalysisFailed"] == [
        f"{stable}: {reason}"
    ]


def test_a_refused_privileged_spec_is_noticed_as_degraded_once() -> None:
    d, _ = gated(hook("chat", "notify"))
    spec = ModelDeploymentSpec.model_validate(
        {**d.spec_raw, "template": {"securityProfile": "privileged",
                                    "securityContext": {"privileged": True}}}
    )  # fmt: skip
    subject = Subject(NAME, "ml", UID, d.generation + 1, spec, d.status, {})
    first = refuse_privileges(subject, spec.privileges(), d.now)
    [notice] = first.notices
    assert (notice.event, notice.revision) == ("Degraded", rev())
    assert notice.message.startswith("PrivilegedNotAllowed: spec.template.")
    again = replace(subject, status=first.status)
    assert refuse_privileges(again, spec.privileges(), d.now).notices == ()


def subject_of(d: Driver) -> Subject:
    return Subject(NAME, "ml", UID, d.generation, d.spec, d.status, {})


def test_the_outbox_names_a_notification_per_receiving_webhook() -> None:
    d, _ = gated(
        hook("all", "notify"),
        hook("promotions", "notify", events=["Promoted"]),
        hook("eval", "preRollout"),
        eval=True,
    )
    notice = Notice("RolledBack", "abc", "rolled back")
    decided = Plan(status=d.status, notices=(notice,))
    status = with_outbox(subject_of(d), decided, "42", d.now)
    [item] = status.pending_notifications
    assert item.webhook == "all"
    again = with_outbox(subject_of(d), decided, "42", d.now)
    assert again.pending_notifications[0].name == item.name  # deterministic: the same key


# --- payloads -----------------------------------------------------------------------------

IDENTITY = {"name": NAME, "namespace": "ml", "uid": UID}
T = datetime(2026, 11, 20, 12, 0, 0).astimezone()
CHECK = CheckResult(name="feature-psi/age", value=0.41, threshold=0.25, samples=900, verdict="fail")


def pending(**more: Any) -> PendingNotification:
    fields: dict[str, Any] = {
        "name": "churn.0123456789abcdef.chat", "webhook": "chat", "event": "RolledBack",
        "revision": "abc", "message": "rolled back", "checks": [CHECK], "time": T, **more,
    }  # fmt: skip
    return PendingNotification.model_validate(fields)


def test_the_json_notification_names_the_failing_check() -> None:
    webhook = Webhook.model_validate(hook("chat", "notify"))
    body = notification_payload(IDENTITY, pending(), webhook)
    assert body["kind"] == "notification"
    assert body["event"] == "RolledBack"
    assert body["idempotencyKey"] == "churn.0123456789abcdef.chat"
    assert body["modelDeployment"] == IDENTITY
    assert body["checks"] == [
        {"name": "feature-psi/age", "value": 0.41, "threshold": 0.25, "samples": 900,
         "verdict": "fail"}
    ]  # fmt: skip


def test_the_slack_notification_is_text_and_blocks() -> None:
    webhook = Webhook.model_validate(hook("chat", "notify", format="slack"))
    body = notification_payload(IDENTITY, pending(), webhook)
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("modeldeploy ml/churn: RolledBack abc")
    text = "\n".join(b["text"]["text"] for b in body["blocks"] if b["type"] == "section")
    assert "feature-psi/age: 0.41 (threshold 0.25, n=900)" in text


def test_a_gate_is_asked_with_the_revision_and_step() -> None:
    webhook = Webhook.model_validate(hook("sign-off", "step"))
    body = gate_payload(IDENTITY, GateAsk(webhook, "abc", 1, 50), "old", None, T)
    assert body["kind"] == "gate"
    assert (body["type"], body["revision"], body["step"], body["canaryPercent"]) == (
        "step", "abc", 1, 50,
    )  # fmt: skip
    assert body["idempotencyKey"] == f"{UID}/sign-off/abc/1"
    assert body["stableRevision"] == "old"


# --- where requests may go ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example/x",
        "http://user:pw@hooks.example/x",
        "http://hooks.example/x#frag",
        "http://hooks.example/a b",
        "http://hooks.example/\tx",
        "http://hooks.example:99999/",
        "http://other.example/x",
        "http://hooks.example.evil/x",
    ],
)
def test_urls_the_operator_does_not_call(url: str) -> None:
    with pytest.raises(WebhookRefused):
        webhook_url(url, ["hooks.example"])


def test_urls_the_operator_calls() -> None:
    allowed = ["hooks.example", "*.ml.svc", "127.0.0.1"]
    assert webhook_url("https://hooks.example/services/T0/B0/x", allowed)[1] == "hooks.example"
    assert webhook_url("http://eval.ml.svc:8080/approve?model=churn", allowed)[1] == "eval.ml.svc"
    assert webhook_url("http://127.0.0.1:9000", allowed)[1] == "127.0.0.1"
    with pytest.raises(WebhookRefused, match="none"):
        webhook_url("http://127.0.0.1:9000", [])


def test_a_secret_needs_the_label_naming_the_host() -> None:
    secret_allowed({WEBHOOK_HOST_LABEL: "hooks.example"}, "hooks.example", "Secret ml/s")
    with pytest.raises(WebhookRefused, match=r"modeldeploy\.io/webhook-host=hooks\.example"):
        secret_allowed({WEBHOOK_HOST_LABEL: "other.example"}, "hooks.example", "Secret ml/s")


# --- delivery bookkeeping -------------------------------------------------------------------


def test_failed_rounds_back_off_then_give_up() -> None:
    status = ModelDeploymentStatus(pending_notifications=[pending()])
    now = T
    for round_ in range(1, DELIVERY_ROUNDS):
        assert [n.name for n in deliverable(status, now)] == [pending().name]
        status, given_up = delivered(status, {pending().name: "HTTP 500"}, [pending().name], now)
        [item] = status.pending_notifications
        assert given_up == []
        assert item.attempts == round_
        assert item.next_attempt_at == now + DELIVERY_BACKOFF * 2 ** (round_ - 1)
        assert deliverable(status, now) == []
        now = item.next_attempt_at
    status, given_up = delivered(status, {pending().name: "HTTP 500"}, [pending().name], now)
    assert status.pending_notifications == []
    assert [(n.name, why) for n, why in given_up] == [(pending().name, "HTTP 500")]


def test_a_delivered_notification_leaves_status() -> None:
    other = pending(name="churn.1.chat")
    status = ModelDeploymentStatus(pending_notifications=[pending(), other])
    status, given_up = delivered(status, {}, [pending().name], T)
    assert status.pending_notifications == [other]
    assert given_up == []


# --- the shell ------------------------------------------------------------------------------


class FakeKube:
    def __init__(self, labels: Mapping[str, str], url: str) -> None:
        import base64

        self.secret = {
            "metadata": {"labels": dict(labels)},
            "data": {"sign-off": base64.b64encode(url.encode()).decode()},
        }

    def get(self, path: str, query: Any = None) -> Any:
        assert path == "/api/v1/namespaces/ml/secrets/hooks"
        return self.secret


class Transport:
    def __init__(self, *answers: Response) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, Mapping[str, Any], float]] = []

    def __call__(self, url: str, payload: Mapping[str, Any], timeout: float) -> Response:
        self.sent.append((url, payload, timeout))
        return self.answers.pop(0)


def shell(
    labels: Mapping[str, str], transport: Transport, hosts: tuple[str, ...] = ("127.0.0.1",)
) -> Webhooks:
    kube = FakeKube(labels, "http://127.0.0.1:8080/gate")
    return Webhooks(kube, WebhookSettings(hosts), post=transport, sleep=lambda _: None)  # type: ignore[arg-type]


def ask_one(webhooks: Webhooks, **spec: Any) -> GateAnswer:
    webhook = Webhook.model_validate(hook("sign-off", "step", **spec))
    raw = {"model": {"name": NAME, "version": "1"}, "image": V2,
           "rollout": {"webhooks": [hook("sign-off", "step", **spec)]}}  # fmt: skip
    subject = Subject(
        NAME, "ml", UID, 1, ModelDeploymentSpec.model_validate(raw), ModelDeploymentStatus()
    )
    [answer] = webhooks.ask(subject, (GateAsk(webhook, "abc", 0, 10),), T)
    return answer


LABELLED = {WEBHOOK_HOST_LABEL: "127.0.0.1"}


def test_a_failing_gate_request_is_retried_then_answers() -> None:
    transport = Transport(
        Response(503, "busy"), Response(None, "ConnectTimeout"), Response(200, "ok")
    )
    answer = ask_one(shell(LABELLED, transport), retries=2, timeout="3s")
    assert answer.approved
    assert [(url, timeout) for url, _, timeout in transport.sent] == [
        ("http://127.0.0.1:8080/gate", 3.0)
    ] * 3
    assert transport.sent[0][1]["revision"] == "abc"


def test_a_gate_refusal_is_not_retried() -> None:
    transport = Transport(Response(403, "not   signed\noff"))
    answer = ask_one(shell(LABELLED, transport), retries=2)
    assert not answer.approved
    assert answer.message == "HTTP 403: not signed off"
    assert len(transport.sent) == 1


@pytest.mark.parametrize(
    ("labels", "hosts", "why"),
    [
        ({}, ("127.0.0.1",), "label modeldeploy.io/webhook-host=127.0.0.1"),
        (LABELLED, ("hooks.example",), "not one the operator may call"),
    ],
)
def test_a_webhook_outside_the_rules_is_refused_and_never_called(
    labels: Mapping[str, str], hosts: tuple[str, ...], why: str
) -> None:
    transport = Transport()
    answer = ask_one(shell(labels, transport, hosts))
    assert not answer.approved
    assert "not called" in answer.message
    assert why in answer.message
    assert transport.sent == []


# --- the glue: asked between two plans, delivered after the status write ------------------


class FakeWebhooks(Webhooks):
    def __init__(self, approve: bool = True, fail: bool = False) -> None:
        super().__init__(None, WebhookSettings())
        self.approve, self.fail = approve, fail
        self.asked: list[GateAsk] = []
        self.delivered: list[PendingNotification] = []

    def ask(self, subject: Subject, asks: Any, now: datetime) -> tuple[GateAnswer, ...]:
        self.asked += asks
        message = "HTTP 200" if self.approve else "HTTP 403: no"
        return tuple(gate_answer(a, self.approve, message, now) for a in asks)

    def deliver(self, subject: Subject, items: Any, now: datetime) -> dict[str, str]:
        self.delivered += items
        return {n.name: "HTTP 503" for n in items} if self.fail else {}


def glue(d: Driver, webhooks: FakeWebhooks) -> tuple[FakeApiserver, Reconciler, Snapshot]:
    body = model_deployment(d.spec_raw, to_wire(d.status))
    body["metadata"]["generation"] = d.generation
    objects = tuple(d.cluster.objects.values())
    api = FakeApiserver(body, list(objects))
    return api, Reconciler(kube=api, webhooks=webhooks), Snapshot(body, objects)  # type: ignore[arg-type]


def test_the_operator_asks_between_two_plans_and_writes_the_answer_once() -> None:
    d, _ = gated(hook("eval", "preRollout"), eval=True)
    d.change(image=V2)
    webhooks = FakeWebhooks(approve=False)
    api, reconciler, snapshot = glue(d, webhooks)
    reconciler.reconcile(("ml", NAME), snapshot)
    assert [(a.webhook.name, a.revision) for a in webhooks.asked] == [("eval", rev(V2))]
    written = api.statuses[0]
    assert written["canaryRevision"] == rev(V2)
    assert [(g["webhook"], g["approved"]) for g in written["gates"]] == [("eval", False)]
    assert [e["reason"] for e in written["pendingEvents"]] == ["RolloutStarted", "GateRefused"]
    services = [b for b in api.applied if b["kind"] == "Service"]
    assert all(b["spec"]["selector"] != model_selector(NAME) for b in services)
    assert any(b["metadata"]["name"] == f"churn-{rev(V2)}" for b in api.applied)  # warms up


@pytest.mark.parametrize("fails", [False, True])
def test_a_notification_is_written_with_its_transition_then_delivered(fails: bool) -> None:
    d, _ = gated(hook("chat", "notify", events=["KillSwitchEngaged"]))
    d.change(killSwitch={"engaged": True})
    webhooks = FakeWebhooks(fail=fails)
    api, reconciler, snapshot = glue(d, webhooks)
    reconciler.reconcile(("ml", NAME), snapshot)
    with_it, after = api.statuses
    [written] = with_it["pendingNotifications"]
    assert (written["event"], written["webhook"]) == ("KillSwitchEngaged", "chat")
    events = {e["name"] for e in with_it["pendingEvents"]}
    assert written["name"].endswith(".chat")
    assert written["name"].removesuffix(".chat") not in events  # a name of its own
    assert [n.name for n in webhooks.delivered] == [written["name"]]
    if fails:
        [kept] = after["pendingNotifications"]
        assert (kept["name"], kept["attempts"]) == (written["name"], 1)
        assert "nextAttemptAt" in kept
    else:
        assert "pendingNotifications" not in after
    assert "pendingEvents" not in after
