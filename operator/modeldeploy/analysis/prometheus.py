"""Prometheus provider: instant queries with bounded time, answers as plain data.

`PrometheusProvider.query` never raises. Every failure becomes a `QueryResult` that says
why: `unreachable` (connection refused or reset, timeout, TLS, authentication, HTTP 5xx),
`bad_query` (HTTP 400/422: PromQL syntax or execution error, or an answer the caller cannot
key uniquely), `no_data` (no series, or only NaN values). Credentials come in as plain
values; reading them from a Secret is the operator's business.

Messages end up in status and Events, which every reader of the ModelDeployment sees: they
never carry the server's response body (only the HTTP status and, from a Prometheus-shaped
error, its `errorType` out of a fixed list; the `error` text goes to the operator's log), and
redirects are refused, never followed (a redirect would carry the credentials elsewhere).
"""

import ast
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from modeldeploy.analysis.data import LabelValues, QueryResult, QueryStatus

log = logging.getLogger("modeldeploy.analysis")

_STATUS_IN_MESSAGE = re.compile(r"HTTP Status Code (\d{3})")
PROMETHEUS_ERROR_TYPES = frozenset(
    {"bad_data", "execution", "timeout", "canceled", "internal", "unavailable", "not_found"}
)
"""`errorType` values of Prometheus' HTTP API: the only part of an error body a message
repeats."""


@dataclass(frozen=True)
class PrometheusAuth:
    """Either a bearer token or basic-auth credentials (or nothing)."""

    bearer_token: str = ""
    username: str = ""
    password: str = ""

    def __post_init__(self) -> None:
        if self.bearer_token and (self.username or self.password):
            raise ValueError("use either a bearer token or basic auth, not both")
        if self.password and not self.username:
            raise ValueError("basic auth needs a username")

    def __repr__(self) -> str:  # never print credentials
        kind = "bearer" if self.bearer_token else "basic" if self.username else "none"
        return f"PrometheusAuth({kind})"


class PrometheusProvider:
    """Queries one Prometheus. Each query takes at most about
    ``(connect_timeout + timeout) * (retries + 1)`` seconds, and asks Prometheus itself to
    give up after `timeout` seconds."""

    def __init__(
        self,
        url: str,
        *,
        auth: PrometheusAuth | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        retries: int = 1,
        verify_tls: bool | str = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = (connect_timeout, timeout)
        self._server_timeout = f"{max(1, math.floor(timeout))}s"
        headers: dict[str, str] = {}
        basic: tuple[str, str] | None = None
        if auth is not None and auth.bearer_token:
            headers["Authorization"] = f"Bearer {auth.bearer_token}"
        elif auth is not None and auth.username:
            basic = (auth.username, auth.password)
        session = requests.Session()
        session.verify = verify_tls
        # A 3xx raises TooManyRedirects instead of being followed.
        session.max_redirects = 0
        session.trust_env = False  # no proxy or netrc credentials from the environment
        self._client = PrometheusConnect(
            url=self.url,
            headers=headers,
            auth=basic,
            session=session,
            # requests takes a (connect, read) pair.
            timeout=self._timeout,
            # Retry briefly on refused connections and on a restarting server; the analysis
            # loop itself is the long-term retry.
            retry=Retry(
                total=retries,
                read=0,
                redirect=0,
                backoff_factor=0.2,
                status_forcelist=(502, 503, 504),
                raise_on_status=False,
            ),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "PrometheusProvider":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, promql: str, by: Sequence[str] = (), at: float | None = None) -> QueryResult:
        """Instant query, evaluated now or at Unix time `at`; values keyed by the values of
        the `by` labels ("" when absent). A scalar answer needs ``by=()``."""
        params = {"timeout": self._server_timeout}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            answer = self._client.custom_query(
                promql,
                params=params,
                timeout=self._timeout,
            )
        except PrometheusApiClientException as error:
            return _classify_http_error(str(error), self.url)
        except requests.exceptions.RequestException as error:
            return QueryResult.failed(QueryStatus.UNREACHABLE, self._describe(error))
        except Exception as error:  # a provider must never raise into the reconcile loop
            log.info("Prometheus %s: %s", self.url, _short(repr(error)))
            why = f"{type(error).__name__}: no usable answer from {self.url}"
            return QueryResult.failed(QueryStatus.UNREACHABLE, why)
        return parse_answer(answer, tuple(by))

    def _describe(self, error: requests.exceptions.RequestException) -> str:
        """One short line: these end up in status and Events, once per check."""
        kind = type(error).__name__
        # A read timeout after retries arrives as a ConnectionError that says so.
        if isinstance(error, requests.exceptions.Timeout) or "timed out" in str(error):
            return f"Timeout: no answer from {self.url} within {self._timeout[1]:g}s"
        if isinstance(error, requests.exceptions.ConnectionError):
            return f"{kind}: cannot connect to {self.url}"
        if isinstance(error, requests.exceptions.TooManyRedirects):
            return f"Redirect: {self.url} answered with a redirect, which is not followed"
        return f"{kind}: no answer from {self.url}"


def parse_answer(answer: Any, by: tuple[str, ...]) -> QueryResult:
    """`data.result` of an instant query (vector or scalar) as label values -> float."""
    if (
        isinstance(answer, list)
        and len(answer) == 2
        and not isinstance(answer[0], dict)
        and isinstance(answer[1], str)
    ):
        return _values({(): answer[1]}) if not by else _bad(f"scalar answer, but keyed by {by}")
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        return _bad("unexpected answer (not an instant vector or scalar)")
    raw: dict[LabelValues, str] = {}
    for item in answer:
        labels: Mapping[str, str] = item.get("metric", {})
        key = tuple(labels.get(name, "") for name in by)
        if key in raw:
            return _bad(
                f"several series share the labels {dict(zip(by, key, strict=True))}; "
                f"aggregate by ({', '.join(by)})"
            )
        raw[key] = item.get("value", [0, "NaN"])[1]
    return _values(raw)


def _values(raw: Mapping[LabelValues, str]) -> QueryResult:
    values: dict[LabelValues, float] = {}
    for key, text in raw.items():
        try:
            value = float(text)
        except (TypeError, ValueError):
            return _bad("an answer's value is not a number")
        if not math.isnan(value):
            values[key] = value
    if raw and not values:
        return QueryResult.failed(QueryStatus.NO_DATA, "the query returned only NaN")
    return QueryResult.of(values)


def _bad(error: str) -> QueryResult:
    return QueryResult.failed(QueryStatus.BAD_QUERY, error)


def _classify_http_error(message: str, url: str) -> QueryResult:
    match = _STATUS_IN_MESSAGE.search(message)
    code = int(match.group(1)) if match else 0
    error_type, error = _prometheus_error(message)
    if error:
        log.info("Prometheus %s: HTTP %s %s: %s", url, code or "?", error_type, _short(error))
    detail = f" ({error_type})" if error_type in PROMETHEUS_ERROR_TYPES else ""
    if code in (400, 422):
        why = f"HTTP {code}: Prometheus refused the query{detail}; the operator's log has why"
        return QueryResult.failed(QueryStatus.BAD_QUERY, why)
    return QueryResult.failed(QueryStatus.UNREACHABLE, f"HTTP {code or '?'}{detail}")


def _prometheus_error(message: str) -> tuple[str, str]:
    """`errorType` and `error` of Prometheus' JSON error body, which the client library puts
    into its message as a bytes literal: ``HTTP Status Code 400 (b'{"status":"error",...}')``."""
    start, end = message.find("(b"), message.rfind(")")
    if start < 0 or end < start:
        return "", ""
    try:
        body = json.loads(ast.literal_eval(message[start + 1 : end]))
    except (ValueError, SyntaxError, TypeError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("errorType", "")), str(body.get("error", ""))


def _short(text: str, limit: int = 300) -> str:
    printable = "".join(char if char.isprintable() else " " for char in text)
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"
