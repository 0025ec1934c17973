"""A real `modeldeploy serve` of the churn example against clients at fault (issue 17): a
bounded seeded fuzz, stalled uploads and clients hanging up must never be 5xx, so they can
never get a healthy canary rolled back on its error rate."""

import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_runtime import (  # noqa: F401  (fixtures)
    INFER,
    churn,
    healthy,
    profile,
    scrape,
    value,
    wait_for_fast,
)

from modeldeploy import contract as c
from modeldeploy.devenv.fuzz import MalformedBodies
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.process import LOOPBACK, ServerProcess
from modeldeploy.serving.protocol import Reason

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FUZZ_REQUESTS = 2000
FUZZ_SECONDS = 60.0
BODY_TIMEOUT_S = 0.5
SLOW_CLIENTS = 20


@pytest.fixture(scope="module")
def server(healthy: Path) -> Iterator[ServerProcess]:  # noqa: F811
    args = ["--body-timeout", str(BODY_TIMEOUT_S), "--log-level", "warning"]
    with ServerProcess(healthy, args=args) as process:
        process.wait_ready()
        yield process


def _errors(url: str) -> float:
    samples = scrape(url)
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == c.REQUESTS_TOTAL and dict(labels)[c.LABEL_CODE].startswith("5")
    )


def test_fuzzed_requests_are_never_5xx_and_the_server_keeps_serving(
    server: ServerProcess,
    profile: Profile,  # noqa: F811
) -> None:
    golden = profile.golden[-1]  # the batch of all picked rows
    bodies = MalformedBodies(golden.request, seed=17)
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + FUZZ_SECONDS
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(FUZZ_REQUESTS):
            if time.monotonic() > deadline:
                break
            raw = bodies.next()
            answer = client.post(INFER, content=raw, headers={"content-type": "application/json"})
            statuses[answer.status_code] += 1
            assert answer.status_code < 500, (answer.status_code, answer.text, raw[:300])
            if answer.status_code >= 400:
                assert set(answer.json()) == {"error"}
                assert "Error(" not in answer.json()["error"]  # no exception text
        assert sum(statuses.values()) == FUZZ_REQUESTS, f"only {statuses} in {FUZZ_SECONDS}s"
        assert statuses[400] > FUZZ_REQUESTS // 2, statuses
        valid = client.post(INFER, json=golden.request)
    assert valid.status_code == 200
    assert {o["name"]: o["data"] for o in valid.json()["outputs"]}["label"] == golden.expected[
        "label"
    ]
    assert _errors(server.url) == 0


def _open_upload(port: int, declared: int, sent: bytes) -> socket.socket:
    """A client that declares `declared` body bytes, sends `sent` and then nothing."""
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    head = (
        f"POST {INFER} HTTP/1.1\r\nhost: {LOOPBACK}\r\ncontent-type: application/json\r\n"
        f"content-length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_stalled_uploads_are_cut_off_by_the_body_timeout(server: ServerProcess) -> None:
    before = scrape(server.url)
    start = time.monotonic()
    stalled = [_open_upload(server.port, 10_000, b'{"inputs": [') for _ in range(SLOW_CLIENTS)]
    try:
        ready = httpx.get(server.url + "/v2/health/ready", timeout=5)
        assert ready.status_code == 200  # the stalled uploads hold no thread, no loop
        answers = [_read_until_closed(sock) for sock in stalled]  # the server closes them
    finally:
        for sock in stalled:
            sock.close()
    elapsed = time.monotonic() - start
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 4
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"did not arrive within 0.5 s" in answer
    after = scrape(server.url)
    timed_out = value(after, c.INVALID_REQUESTS_TOTAL, reason=Reason.BODY_TIMEOUT) - value(
        before, c.INVALID_REQUESTS_TOTAL, reason=Reason.BODY_TIMEOUT
    )
    assert timed_out == SLOW_CLIENTS
    assert _errors(server.url) == 0


def test_clients_hanging_up_mid_upload_are_499_never_5xx(server: ServerProcess) -> None:
    before = scrape(server.url)
    for _ in range(SLOW_CLIENTS):
        _open_upload(server.port, 10_000, b'{"inputs": [{"name": "ten').close()

    def counted() -> float:
        after = scrape(server.url)
        return value(after, c.REQUESTS_TOTAL, code="499") - value(
            before, c.REQUESTS_TOTAL, code="499"
        )

    wait_for_fast(lambda: counted() == SLOW_CLIENTS)
    after = scrape(server.url)
    invalid = value(after, c.INVALID_REQUESTS_TOTAL) - value(before, c.INVALID_REQUESTS_TOTAL)
    assert invalid == 0  # not an invalid input either
    assert _errors(server.url) == 0
