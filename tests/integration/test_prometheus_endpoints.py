"""Prometheus endpoints are the operator's: one operator allows the session Prometheus
(`default`, which the healthy `churn` uses) and a few local servers on 127.0.0.1 by name;
ModelDeployments beside `churn` name the others.

- a spec naming an endpoint (or a URL) the operator does not list is refused with a Warning
  Event, and nothing is sent to that URL;
- a Prometheus answering with a redirect is not followed: the rounds have no data, and say so;
- an error body is never echoed into status or Events;
- a Secret without the admin's label is refused for credentials (nothing sent);
- a blackholed endpoint (accepts, never answers) used by one ModelDeployment does not stop its
  neighbour's analysis: `churn`'s canary is promoted on passing rounds meanwhile.

The other ModelDeployments' pods run an image the pod runner does not serve (kwok keeps them
Ready): their rounds have no data whatever happens, which is all these tests look at.
"""

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from analysis_stack import ANALYSIS, ROLLOUT, V1, V3, AnalysisStack
from operator_harness import apply_object, model_deployment, patch_model_deployment, wait_for

from modeldeploy.analysis.endpoints import SECRET_ENDPOINT_LABEL
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NAMESPACE = "prom-endpoints"
RATE = 30.0
ROOMY = {**ANALYSIS, "latency": {"p95Ms": 1000}}  # as test_analysis_promotion
OTHER_IMAGE = "registry.example/ml/other"  # not in the image map: kwok pods, no server
BODY_MARKER = "body-marker-7f3a: this text must never leave the operator's log"
EMPTY_VECTOR = {"status": "success", "data": {"resultType": "vector", "result": []}}
Body = dict[str, Any]


class LookalikeHandler(BaseHTTPRequestHandler):
    """/redirect/... answers 302 to /landing/...; /error/... 400 with a Prometheus-shaped
    body carrying BODY_MARKER; anything else an empty vector. Every request is recorded."""

    server: "Lookalike"

    def do_GET(self) -> None:
        self.server.record(self.path)
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", self.path.replace("/redirect/", "/landing/", 1))
            self.end_headers()
            return
        if self.path.startswith("/error/"):
            body = {"status": "error", "errorType": "bad_data", "error": BODY_MARKER}
            self.answer(400, body)
            return
        self.answer(200, EMPTY_VECTOR)

    do_POST = do_GET

    def answer(self, code: int, body: Body) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


class Lookalike(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), LookalikeHandler)
        self.paths: list[str] = []
        self._lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, path: str) -> None:
        with self._lock:
            self.paths.append(path)

    def asked(self, prefix: str) -> list[str]:
        with self._lock:
            return [p for p in self.paths if p.startswith(prefix)]


class Blackhole:
    """Accepts connections on 127.0.0.1 and never answers (at most `limit` held)."""

    def __init__(self, limit: int = 200) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.5)
        self._held: list[socket.socket] = []
        self._limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    @property
    def accepted(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while not self._stop.is_set() and len(self._held) < self._limit:
            try:
                self._held.append(self._socket.accept()[0])
            except TimeoutError:
                continue

    def __enter__(self) -> "Blackhole":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for held in self._held:
            held.close()
        self._socket.close()


@pytest.fixture(scope="module")
def lookalike() -> Iterator[Lookalike]:
    server = Lookalike()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def blackhole() -> Iterator[Blackhole]:
    with Blackhole() as hole:
        yield hole


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster,
    prometheus: PrometheusServer,
    lookalike: Lookalike,
    blackhole: Blackhole,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AnalysisStack]:
    endpoints = {
        "redirect": f"{lookalike.base}/redirect",
        "erroring": f"{lookalike.base}/error",
        "listed": f"{lookalike.base}/listed",
        "blackhole": blackhole.url,
    }
    args = [a for n, url in endpoints.items() for a in ("--prometheus-endpoint", f"{n}={url}")]
    # 4 query threads: a ModelDeployment holds at most one of them.
    args += ["--analysis-workers", "4"]
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with AnalysisStack(
        kube, prometheus.url, prometheus.targets_dir, NAMESPACE, workdir, operator_args=args
    ) as s:
        s.deploy(V1, "1", analysis=ROOMY)
        s.wait_stable()
        yield s


def deploy_other(stack: AnalysisStack, name: str, prometheus: Body, canary: bool = True) -> None:
    """`name` with `prometheus`, Ready; with `canary`, then a canary (rounds run on it)."""
    body = model_deployment(
        name, NAMESPACE, f"{OTHER_IMAGE}:1", analysis=ANALYSIS, prometheus=prometheus,
        replicas={"minWarm": 1, "max": 2},
    )  # fmt: skip
    apply_object(stack.kube, body)
    wait_for(lambda: stack.reader.is_true(NAMESPACE, name, "Ready"), timeout=60, what=name)
    if canary:
        patch_model_deployment(stack.kube, NAMESPACE, name, {"spec": {"image": f"{OTHER_IMAGE}:2"}})


def messages(stack: AnalysisStack, name: str, reason_prefix: str) -> list[str]:
    events = stack.reader.api.get(f"/api/v1/namespaces/{NAMESPACE}/events")["items"]
    return [
        e["message"]
        for e in events
        if e["involvedObject"]["name"] == name and e["reason"].startswith(reason_prefix)
    ]


def wait_messages(stack: AnalysisStack, name: str, reason_prefix: str, needle: str) -> list[str]:
    def found() -> list[str]:
        return [m for m in messages(stack, name, reason_prefix) if needle in m]

    return wait_for(found, timeout=60, what=f"{reason_prefix} Event of {name} with {needle!r}")


def test_an_endpoint_or_url_the_operator_does_not_list_is_refused_and_nothing_is_sent(
    stack: AnalysisStack, lookalike: Lookalike
) -> None:
    deploy_other(stack, "unlisted-name", {"endpoint": "elsewhere"}, canary=False)
    deploy_other(stack, "unlisted-url", {"url": f"{lookalike.base}/unlisted"})
    (by_name,) = wait_messages(stack, "unlisted-name", "PrometheusRefused", "'elsewhere'")
    print(f"[refused] {by_name}")
    assert "not one of the operator's Prometheus endpoints" in by_name
    for allowed in ("blackhole", "default", "erroring", "listed", "redirect"):
        assert allowed in by_name
    # Posted by a round of the canary that ran without data for that reason (instead of
    # AnalysisNoData); nothing reached the URL.
    wait_messages(stack, "unlisted-url", "PrometheusRefused", "spec.prometheus.url")
    assert lookalike.asked("/unlisted") == []


def test_a_redirect_is_not_followed(stack: AnalysisStack, lookalike: Lookalike) -> None:
    deploy_other(stack, "redirected", {"endpoint": "redirect"})
    (message, *_) = wait_messages(stack, "redirected", "AnalysisNoData", "redirect")
    print(f"[redirect] {message}")
    assert "not followed" in message
    assert lookalike.asked("/redirect/")  # it was asked, and answered 302
    assert lookalike.asked("/landing/") == []


def test_an_error_body_is_never_echoed(stack: AnalysisStack, lookalike: Lookalike) -> None:
    deploy_other(stack, "erroring", {"endpoint": "erroring"})
    (message, *_) = wait_messages(stack, "erroring", "AnalysisNoData", "HTTP 400")
    print(f"[error body] {message}")
    assert "bad_data" in message  # the fixed errorType, not the text
    assert lookalike.asked("/error/")
    events = stack.reader.api.get(f"/api/v1/namespaces/{NAMESPACE}/events")
    body = stack.reader.model_deployment(NAMESPACE, "erroring")
    assert "body-marker" not in json.dumps(events)
    assert "body-marker" not in json.dumps(body)


def test_a_secret_without_the_admin_label_is_refused(
    stack: AnalysisStack, lookalike: Lookalike
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "unlabelled-token", "namespace": NAMESPACE},
        "stringData": {"token": "a-token"},
    }
    apply_object(stack.kube, secret)
    auth = {"type": "bearer", "secretRef": {"name": "unlabelled-token"}}
    deploy_other(stack, "unlabelled", {"endpoint": "listed", "auth": auth})
    (message,) = wait_messages(stack, "unlabelled", "PrometheusRefused", "unlabelled-token")
    print(f"[secret] {message}")
    assert f"{SECRET_ENDPOINT_LABEL}=listed" in message
    assert lookalike.asked("/listed/") == []


def test_a_blackholed_endpoint_does_not_stop_a_neighbours_analysis(
    stack: AnalysisStack, blackhole: Blackhole
) -> None:
    deploy_other(stack, "blackholed", {"endpoint": "blackhole"})
    wait_for(lambda: blackhole.accepted > 0, timeout=60, what="a query to the blackhole")
    with stack.timeline() as timeline, stack.traffic(RATE):
        stack.deploy(V3, "3", rollout=ROLLOUT, analysis=ROOMY)
        started, promoted = timeline.canary_promoted()
    passes = timeline.seen(lambda s: s.analysis.get("verdict"), after=started.t)
    print(f"[neighbour] promoted after {promoted.t - started.t:.1f}s; verdicts {passes}")
    print(f"[blackhole] {blackhole.accepted} connections held")
    assert "pass" in passes
    # The blackholed one was being analysed all along, without an answer.
    (message, *_) = wait_messages(stack, "blackholed", "AnalysisNoData", "no answer")
    print(f"[blackhole] {message}")
