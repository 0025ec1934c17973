"""Local stand-ins for the cluster Services a pod's env names (the shadow's `<name>-canary`).

A pod's process cannot dial `http://churn-canary.ml.svc`: here every server listens on
127.0.0.1. For each Service such a URL names, the pod runner opens one `ServiceForwarder` on
127.0.0.1:<port> and hands the process that address instead; each request it gets goes to
one Ready local endpoint behind the Service (the pods its selector picks, as the runner
publishes them), picked uniformly as kube-proxy does.

Small and bounded: at most `max_connections` client connections (more are closed at once),
idle ones closed after `idle_timeout`, bodies up to `MAX_BODY_BYTES`, each forwarded request
with a timeout; nothing is queued. It only ever dials the 127.0.0.1 endpoints of the
runner's own processes: a Service with nothing Ready behind it answers 503, as a Service
without endpoints refuses connections.
"""

import http.server
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx

from modeldeploy.devenv.endpoints import Endpoint, Published
from modeldeploy.devenv.imagemap import LOOPBACK
from modeldeploy.devenv.pods import ServiceRef
from modeldeploy.devenv.prometheus import is_loopback_address
from modeldeploy.devenv.traffic import choose_uniform

log = logging.getLogger("modeldeploy.podrunner")

MAX_BODY_BYTES = 16 * 1024 * 1024
# Not passed on: they describe one connection, not the request (RFC 9110 7.6.1), or httpx
# sets them for the forwarded one.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def endpoint_behind(
    published: Published, service: ServiceRef, rng: random.Random
) -> Endpoint | None:
    """One Ready local endpoint of the Service, uniformly; None when it has none."""
    return choose_uniform(published.ready_behind(service.namespace, service.name), rng)


def forwarded_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The request's end-to-end headers (the shadow mark and trace context among them)."""
    return {k: v for k, v in headers if k.lower() not in HOP_BY_HOP}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type["_Handler"], forwarder: "ServiceForwarder") -> None:
        self.forwarder = forwarder
        self._slots = threading.BoundedSemaphore(forwarder.max_connections)
        super().__init__((LOOPBACK, 0), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # at the limit: refused at once, never queued
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the mirror reuses its connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Idle or slow connections end (handle_one_request closes on the timeout).
        self.connection.settimeout(self.server.forwarder.idle_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("forwarder %s: " + format, self.server.forwarder.service, *args)

    def do_GET(self) -> None:
        self._forward(b"")

    def do_POST(self) -> None:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._answer(411, b"a Content-Length is required\n", close=True)  # body unread
            return
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._answer(413, b"body too large\n", close=True)
            return
        try:
            body = self.rfile.read(length)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        forwarder = self.server.forwarder
        endpoint = forwarder.choose()
        if endpoint is None:
            self._answer(503, f"no Ready endpoint behind {forwarder.service}\n".encode())
            return
        if not is_loopback_address(endpoint.address):  # the hard network rule, checked again
            self._answer(502, b"refusing a non-loopback endpoint\n")
            return
        headers = forwarded_headers(list(self.headers.items()))
        try:
            response = forwarder.client.request(
                self.command, endpoint.url + self.path, content=body, headers=headers
            )
        except httpx.HTTPError as err:
            self._answer(502, f"{endpoint.address}: {type(err).__name__}\n".encode())
            return
        self._answer(response.status_code, response.content, response.headers.get("content-type"))

    def _answer(
        self, code: int, body: bytes, content_type: str | None = None, close: bool = False
    ) -> None:
        self.send_response(code)
        self.send_header("content-type", content_type or "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client went away: nothing to answer
            self.close_connection = True


class ServiceForwarder:
    """127.0.0.1:<port> standing for one Service, over the endpoints `members()` returns."""

    def __init__(
        self,
        service: ServiceRef,
        members: Callable[[], Published],
        *,
        max_connections: int = 64,  # a mirror opens 4 per stable process
        timeout: float = 2.0,
        idle_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._members = members
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        limits = httpx.Limits(max_connections=max_connections)
        self.client = httpx.Client(timeout=timeout, limits=limits, trust_env=False)
        self._server = _Server(_Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"forwarder {service}",
            daemon=True,
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def choose(self) -> Endpoint | None:
        with self._rng_lock:
            return endpoint_behind(self._members(), self.service, self._rng)

    def start(self) -> "ServiceForwarder":
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.client.close()


class Forwarders:
    """The runner's forwarders, one per Service a served pod's env names; opened when a
    process needs one, closed when no served pod names it any more."""

    def __init__(self, members: Callable[[], Published], say: Callable[[str], None]) -> None:
        self._members = members
        self._say = say
        self._open: dict[ServiceRef, ServiceForwarder] = {}

    def address(self, service: ServiceRef) -> str:
        forwarder = self._open.get(service)
        if forwarder is None:
            forwarder = ServiceForwarder(service, self._members).start()
            self._open[service] = forwarder
            self._say(f"forwarding {forwarder.address} to the Ready endpoints of {service}")
        return forwarder.address

    def retain(self, services: set[ServiceRef]) -> None:
        for service in sorted(set(self._open) - services):
            self._say(f"closing the forwarder of {service} ({self._open[service].address})")
            self._open.pop(service).close()

    def close(self) -> None:
        self.retain(set())
