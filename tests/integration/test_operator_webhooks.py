"""Rollout gates and notifications on the real cluster: the real operator (allowed to call
127.0.0.1 only), real model servers behind kwok pods, client traffic, the session
Prometheus, and a receiver in this test (a threaded http.server on 127.0.0.1) behind a
webhook URL read from a labelled Secret.

In order (the second test goes on with the first one's canary):
- a pre-rollout gate that refuses keeps the canary at 0% of traffic with the gate's answer
  in status (Progressing GateRefused, status.gates) while it is asked again every
  analysis.interval; once it approves, the canary gets traffic;
- that canary (the `slow` image: 60 ms late) breaches latency and is rolled back, and the
  receiver gets the RolledBack notification naming the failing check with its value,
  threshold and samples;
- a healthy canary approved at once keeps its approval across an operator restart (no new
  ask: it is in status);
- engaging and releasing the kill switch are notified.
"""

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from analysis_stack import (
    ANALYSIS,
    ROLLOUT,
    SLOW,
    V1,
    V3,
    AnalysisStack,
    Traffic,
    rolled_back,
)
from operator_harness import apply_object, ensure_namespace, patch_model_deployment, wait_for

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.rollout.webhooks import WEBHOOK_HOST_LABEL

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NAMESPACE = "webhooks"
RATE = 30.0
SECRET = "churn-webhooks"
Body = dict[str, Any]


class Receiver:
    """POSTs to /gate are answered with `gate_status`; every JSON body is kept by path."""

    def __init__(self) -> None:
        self.gate_status = 403
        self.received: list[tuple[str, Body]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver.lock:
                    receiver.received.append((self.path, body))
                    status = receiver.gate_status if self.path == "/gate" else 200
                answer = b"waiting for the offline evaluation" if status >= 300 else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str) -> list[Body]:
        with self.lock:
            return [body for p, body in self.received if p == path]

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhooks_spec() -> Body:
    def ref(key: str) -> Body:
        return {"secretKeyRef": {"name": SECRET, "key": key}}

    return {
        **ROLLOUT,
        "webhooks": [
            {"name": "offline-eval", "type": "preRollout", "urlFrom": ref("gate"),
             "timeout": "2s", "retries": 0},
            {"name": "on-call", "type": "notify", "urlFrom": ref("notify"),
             "events": ["RolledBack", "KillSwitchEngaged", "KillSwitchReleased"]},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster,
    prometheus: PrometheusServer,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    ensure_namespace(kube, NAMESPACE)
    urls = {"gate": f"{receiver.url}/gate", "notify": f"{receiver.url}/notify"}
    apply_object(kube, {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE,
                     "labels": {WEBHOOK_HOST_LABEL: "127.0.0.1"}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in urls.items()},
    })  # fmt: skip
    with AnalysisStack(
        kube, prometheus.url, prometheus.targets_dir, NAMESPACE, workdir,
        operator_args=["--webhook-host", "127.0.0.1"],
    ) as s:  # fmt: skip
        s.deploy(V1, "1", rollout=webhooks_spec())
        s.wait_stable()
        yield s


@pytest.fixture(scope="module")
def traffic(stack: AnalysisStack) -> Iterator[Traffic]:
    with stack.traffic(RATE) as load:
        yield load


def test_a_refusing_pre_rollout_gate_keeps_the_canary_at_zero(
    stack: AnalysisStack, traffic: Traffic, receiver: Receiver
) -> None:
    with stack.timeline() as timeline:
        stack.deploy(SLOW, "4", rollout=webhooks_spec())
        started = timeline.wait(lambda s: s.canary is not None, 30, "a canary")
        canary = started.canary
        refused = timeline.wait(
            lambda s: s.condition("Progressing").get("reason") == "GateRefused", 30,
            "Progressing GateRefused", after=started.t,
        )  # fmt: skip
        # Asked again every analysis.interval (2 s): wait for a few asks.
        wait_for(lambda: len(receiver.bodies("/gate")) >= 3, timeout=30, what="3 asks")
        gate = receiver.bodies("/gate")[0]
        assert (gate["kind"], gate["type"], gate["revision"]) == ("gate", "preRollout", canary)
        assert gate["modelDeployment"]["name"] == "churn"
        status = stack.status()
        [answer] = status["gates"]
        assert answer["webhook"] == "offline-eval"
        assert answer["revision"] == canary
        assert answer["approved"] is False
        assert answer["message"] == "HTTP 403: waiting for the offline evaluation"
        assert "preRollout gate offline-eval refused" in status["message"]
        assert "waiting for the offline evaluation" in refused.condition("Progressing")["message"]

        # Its pods warm up and turn Ready, and it is still asked, but it gets no traffic.
        def canary_ready() -> int:
            deployments = stack.reader.deployments(NAMESPACE, "churn")
            return int(deployments[f"churn-{canary}"]["status"].get("readyReplicas") or 0)

        wait_for(canary_ready, timeout=60, what="a Ready canary pod")
        asks = len(receiver.bodies("/gate"))
        wait_for(lambda: len(receiver.bodies("/gate")) > asks, timeout=30, what="another ask")
        assert timeline.seen(lambda s: s.weight, after=started.t) == [0]
        assert traffic.count(str(canary)) == 0
        print(f"\nrefused {len(receiver.bodies('/gate'))} times, the canary's weight stayed 0")

        receiver.gate_status = 200
        timeline.wait(lambda s: s.weight > 0, 60, "traffic to the approved canary")
        approved = stack.status()["gates"][0]
        assert approved["approved"] is True
        assert approved["message"].startswith("HTTP 200")
        assert stack.messages("GateApproved", canary)


def test_the_rollback_of_that_canary_is_notified_with_its_failing_check(
    stack: AnalysisStack, traffic: Traffic, receiver: Receiver
) -> None:
    with stack.timeline() as timeline:
        back = timeline.wait(rolled_back, 150, "rollback of the slow canary")
    canary = back.status["failedRevision"]

    def notified() -> Body | None:
        return next(
            (b for b in receiver.bodies("/notify")
             if b["event"] == "RolledBack" and b["revision"] == canary),
            None,
        )  # fmt: skip

    note: Body = wait_for(notified, timeout=30, what="the RolledBack notification")
    assert note["kind"] == "notification"
    assert note["modelDeployment"]["namespace"] == NAMESPACE
    assert note["idempotencyKey"].endswith(".on-call")
    checks = {c["name"]: c for c in note["checks"]}
    latency = checks["latency-p95"]
    assert latency["verdict"] == "fail"
    assert latency["value"] > ANALYSIS["latency"]["p95Ms"]
    assert latency["threshold"] == ANALYSIS["latency"]["p95Ms"]
    assert latency["samples"] >= ANALYSIS["minSamples"]
    assert "latency-p95" in note["message"]
    # Delivered: nothing left pending, and sent once (its key names it if it were again).
    wait_for(lambda: not stack.status().get("pendingNotifications"), timeout=30,
             what="no pending notification")  # fmt: skip
    keys = [b["idempotencyKey"] for b in receiver.bodies("/notify")]
    assert keys.count(note["idempotencyKey"]) == 1
    print(f"\nnotified: {note['message']}")


def test_a_restarted_operator_does_not_ask_an_answered_gate_again(
    stack: AnalysisStack, traffic: Traffic, receiver: Receiver
) -> None:
    receiver.gate_status = 200
    asked = len(receiver.bodies("/gate"))
    with stack.timeline() as timeline:
        stack.deploy(V3, "3", rollout=webhooks_spec())
        started = timeline.wait(lambda s: s.canary is not None, 30, "a canary")
        timeline.wait(lambda s: s.weight > 0, 60, "traffic to the approved canary")
    canary = started.canary
    assert len(receiver.bodies("/gate")) == asked + 1
    stack.operator.stop()
    receiver.gate_status = 403  # were it asked again, the canary would lose its traffic
    stack.operator.start()

    def analysed_again() -> bool:
        # A round of the restarted operator, with the canary still under way.
        status = stack.status()
        last = status.get("lastAnalysis") or {}
        return last.get("revision") == canary and last.get("time", "") > before

    before = stack.status()["lastAnalysis"]["time"]
    wait_for(analysed_again, timeout=60, what="a round of the restarted operator")
    status = stack.status()
    assert status["canaryRevision"] == canary
    assert status["canaryWeight"] > 0
    assert len(receiver.bodies("/gate")) == asked + 1


def test_the_kill_switch_is_notified_when_engaged_and_released(
    stack: AnalysisStack, receiver: Receiver
) -> None:
    def told(event: str) -> Body | None:
        return next((b for b in receiver.bodies("/notify") if b["event"] == event), None)

    patch_model_deployment(
        stack.kube, NAMESPACE, "churn", {"spec": {"killSwitch": {"engaged": True}}}
    )
    engaged: Body = wait_for(lambda: told("KillSwitchEngaged"), timeout=30, what="engaged")
    assert engaged["message"] == "traffic taken from the model (scaleToZero)"
    patch_model_deployment(
        stack.kube, NAMESPACE, "churn", {"spec": {"killSwitch": {"engaged": False}}}
    )
    released: Body = wait_for(lambda: told("KillSwitchReleased"), timeout=30, what="released")
    assert released["revision"] == engaged["revision"] == stack.status()["stableRevision"]
