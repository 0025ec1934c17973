"""Keep-alive HTTP/1.1 connections over the standard library's `http.client`, for the
runtime's own outgoing requests: the shadow mirror's (shadow.py) and the proxy's to its
upstream server (upstream.py). Not httpx: a sixth of the CPU per request (about 50 against
300 us), which the caller's process pays under its GIL.
"""

import http.client
import queue
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

# What a kept-alive connection the server closed meanwhile fails with: sent again, once, on
# a new connection (servers close idle ones: uvicorn after 5 s).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
FAILURES = (OSError, http.client.HTTPException)
"""What a request that got no answer raises (refused, reset, timed out, malformed)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


class KeepAliveConnection:
    """One keep-alive connection to the server at `url` (its path prefixes every request's),
    opened when first needed and after a failure; not thread-safe (one user at a time)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self._secure = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port
        self._base = parts.path.rstrip("/")
        self._timeout = timeout_s  # of each connect, send and read
        self._connection: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """The server's reply; raises one of `FAILURES` when it gives none."""
        reused = self._connection is not None
        try:
            return self._request(method, path, body, headers or {})
        except _STALE:
            self.close()
            if not reused:
                raise
            return self._request(method, path, body, headers or {})
        except FAILURES:
            self.close()
            raise

    def _request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Reply:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self._timeout)
        self._connection.request(method, self._base + path, body=body, headers=dict(headers))
        response = self._connection.getresponse()
        data = response.read()  # read whole, so that the connection can be reused
        if response.will_close:
            self.close()
        return Reply(response.status, data)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class ConnectionPool:
    """At most `size` keep-alive connections to one server, shared by threads: a request
    takes an idle one (or waits for one), so concurrency towards the server is bounded."""

    def __init__(self, url: str, *, size: int, timeout_s: float) -> None:
        self._idle: queue.LifoQueue[KeepAliveConnection] = queue.LifoQueue()
        for _ in range(size):
            self._idle.put(KeepAliveConnection(url, timeout_s))

    @contextmanager
    def connection(self) -> Iterator[KeepAliveConnection]:
        connection = self._idle.get()
        try:
            yield connection
        finally:
            self._idle.put(connection)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        with self.connection() as connection:
            return connection.request(method, path, body, headers)

    def close(self) -> None:
        """Closes the idle connections (a later request opens one again)."""
        with self._idle.mutex:
            idle = list(self._idle.queue)
        for connection in idle:
            connection.close()
