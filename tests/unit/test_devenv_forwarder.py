"""The pod runner's local Service forwarders: which endpoint a request goes to, which headers
go with it, and one forwarder on 127.0.0.1 in front of a recording server (in process)."""

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from modeldeploy import contract as c
from modeldeploy.devenv.endpoints import Endpoint, Published, ServiceMembers
from modeldeploy.devenv.forwarder import (
    Forwarders,
    ServiceForwarder,
    endpoint_behind,
    forwarded_headers,
)
from modeldeploy.devenv.pods import ServiceRef

pytestmark = pytest.mark.unit

CANARY = ServiceRef("ml", "churn-canary")


def endpoint(pod: str, address: str, ready: bool = True, namespace: str = "ml") -> Endpoint:
    return Endpoint(namespace, pod, "churn", "r2", "churn", address, ready, 1, "image")


def published(*endpoints: Endpoint, pods: tuple[str, ...] = ("a", "b")) -> Published:
    members = [ServiceMembers("ml", "churn-canary", pods), ServiceMembers("ml", "churn", ("s",))]
    return Published(list(endpoints), members)


def test_a_request_goes_to_a_ready_endpoint_behind_the_service_uniformly() -> None:
    world = published(
        endpoint("a", "127.0.0.1:1001"),
        endpoint("b", "127.0.0.1:1002"),
        endpoint("c", "127.0.0.1:1003", ready=False),  # not Ready
        endpoint("s", "127.0.0.1:1004"),  # behind another Service
        endpoint("a", "127.0.0.1:1005", namespace="other"),  # same pod name elsewhere
        pods=("a", "b", "c"),
    )
    rng = random.Random(3)
    picked = [endpoint_behind(world, CANARY, rng) for _ in range(400)]
    addresses = [e.address for e in picked if e is not None]
    assert len(addresses) == 400
    assert set(addresses) == {"127.0.0.1:1001", "127.0.0.1:1002"}
    assert 150 < addresses.count("127.0.0.1:1001") < 250


def test_no_ready_endpoint_behind_the_service() -> None:
    rng = random.Random(0)
    assert (
        endpoint_behind(published(endpoint("a", "127.0.0.1:1", ready=False)), CANARY, rng) is None
    )
    assert endpoint_behind(Published(), CANARY, rng) is None


def test_forwarded_headers_keep_the_shadow_mark_and_trace_context_only_end_to_end() -> None:
    headers = [
        ("Host", "127.0.0.1:4000"),
        ("Content-Length", "12"),
        ("Connection", "keep-alive"),
        ("Transfer-Encoding", "chunked"),
        ("content-type", "application/json"),
        (c.SHADOW_HEADER, "1"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]
    assert forwarded_headers(headers) == {
        "content-type": "application/json",
        c.SHADOW_HEADER: "1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, bytes, dict[str, str]]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append(("POST", self.path, body, dict(self.headers.items())))
        answer = b'{"outputs": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@contextmanager
def backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        _Recorder.seen.clear()


def test_a_forwarder_passes_requests_to_the_endpoint_and_answers_503_without_one() -> None:
    with backend() as address:
        world = [published(endpoint("a", address))]
        forwarder = ServiceForwarder(CANARY, lambda: world[0]).start()
        try:
            assert forwarder.address.startswith("127.0.0.1:")
            url = f"http://{forwarder.address}/v2/models/churn/infer"
            with httpx.Client(trust_env=False, timeout=5) as client:
                headers = {c.SHADOW_HEADER: "1", "content-type": "application/json"}
                answer = client.post(url, content=b'{"inputs": []}', headers=headers)
                assert answer.status_code == 200
                assert answer.json() == {"outputs": []}
                again = client.post(url, content=b"{}", headers=headers)  # same connection
                assert again.status_code == 200
                ((method, path, body, seen), _) = _Recorder.seen
                assert (method, path, body) == ("POST", "/v2/models/churn/infer", b'{"inputs": []}')
                assert seen[c.SHADOW_HEADER] == "1"
                world[0] = published(endpoint("a", address, ready=False))
                gone = client.post(url, content=b"{}")
                assert gone.status_code == 503
                assert "ml/churn-canary" in gone.text
        finally:
            forwarder.close()


def test_forwarders_open_once_per_service_and_close_when_no_pod_names_it() -> None:
    said: list[str] = []
    forwarders = Forwarders(Published, said.append)
    try:
        first = forwarders.address(CANARY)
        assert forwarders.address(CANARY) == first
        other = forwarders.address(ServiceRef("ml", "other"))
        assert other != first
        forwarders.retain({CANARY})
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{other}/", timeout=2, trust_env=False)
        assert httpx.get(f"http://{first}/", timeout=2, trust_env=False).status_code == 503
    finally:
        forwarders.close()
    assert [m.split()[0] for m in said] == ["forwarding", "forwarding", "closing", "closing"]


def test_a_forwarder_at_its_connection_limit_closes_further_connections_at_once() -> None:
    forwarder = ServiceForwarder(CANARY, Published, max_connections=1).start()
    try:
        url = f"http://{forwarder.address}/"
        with httpx.Client(trust_env=False, timeout=5) as holder:
            assert holder.get(url).status_code == 503  # its keep-alive connection holds the slot
            with pytest.raises(httpx.TransportError):
                httpx.get(url, timeout=5, trust_env=False)
            assert holder.get(url).status_code == 503  # the held connection still works
    finally:
        forwarder.close()
