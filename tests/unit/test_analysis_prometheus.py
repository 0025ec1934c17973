"""The provider never raises and says why it has no answer.

Unreachable cases use real sockets on 127.0.0.1 (a closed port, a port that accepts but
never answers); TLS uses a CA and a server certificate made by openssl for the test; answers
from a real Prometheus are covered by tests/integration/test_prometheus_provider.py.
"""

import base64
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modeldeploy.analysis.data import QueryResult, QueryStatus
from modeldeploy.analysis.prometheus import PrometheusAuth, PrometheusProvider, parse_answer
from modeldeploy.devenv.tools import free_port
from modeldeploy.measure import AnalysisSettings, prometheus_connector, tls_verification

pytestmark = pytest.mark.unit


def test_a_closed_port_is_unreachable_quickly() -> None:
    started = time.monotonic()
    with PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout=1, retries=1) as provider:
        result = provider.query("up", ("job",))
    assert result.status is QueryStatus.UNREACHABLE
    assert "ConnectionError" in result.error
    assert not result.values
    assert time.monotonic() - started < 5


def test_a_server_that_never_answers_is_unreachable_within_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts connections in the backlog, never replies
        port = listener.getsockname()[1]
        started = time.monotonic()
        with PrometheusProvider(f"http://127.0.0.1:{port}", timeout=0.5) as provider:
            result = provider.query("up")
        elapsed = time.monotonic() - started
    assert result.status is QueryStatus.UNREACHABLE
    assert "Timeout" in result.error
    assert elapsed < 3


def test_parse_vector_and_scalar_answers() -> None:
    vector = [
        {"metric": {"code": "200"}, "value": [1, "41.5"]},
        {"metric": {"code": "500"}, "value": [1, "NaN"]},
        {"metric": {}, "value": [1, "+Inf"]},
    ]
    assert parse_answer(vector, ("code",)).values == {("200",): 41.5, ("",): float("inf")}
    assert parse_answer([1700000000.0, "0.93"], ()).values == {(): 0.93}


@pytest.mark.parametrize(
    ("answer", "by", "status", "error"),
    [
        ([], ("code",), QueryStatus.NO_DATA, "no series"),
        ([{"metric": {}, "value": [1, "NaN"]}], (), QueryStatus.NO_DATA, "only NaN"),
        (
            [{"metric": {"a": "1"}, "value": [1, "1"]}, {"metric": {"a": "2"}, "value": [1, "2"]}],
            (),
            QueryStatus.BAD_QUERY,
            "several series",
        ),
        ([1.0, "2"], ("code",), QueryStatus.BAD_QUERY, "scalar answer"),
        ("surprise", (), QueryStatus.BAD_QUERY, "unexpected answer"),
        ([{"metric": {}, "value": [1, "abc"]}], (), QueryStatus.BAD_QUERY, "not a number"),
    ],
)
def test_odd_answers_are_classified(
    answer: Any, by: tuple[str, ...], status: QueryStatus, error: str
) -> None:
    result = parse_answer(answer, by)
    assert result.status is status
    assert error in result.error


class _Recorder(BaseHTTPRequestHandler):
    """Answers /api/v1/query like Prometheus' HTTP API would, after checking credentials."""

    expected_authorization: ClassVar[str] = ""
    status_code: ClassVar[int] = 200
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        if self.headers.get("Authorization", "") != self.expected_authorization:
            self._reply(401, {"status": "error", "error": "unauthorized"})
        elif self.status_code != 200:
            self._reply(
                self.status_code,
                {
                    "status": "error",
                    "errorType": "bad_data",
                    "error": 'parse error: unexpected "}"',
                },
            )
        else:
            self._reply(
                200,
                {
                    "status": "success",
                    "data": {
                        "resultType": "vector",
                        "result": [{"metric": {"le": "+Inf"}, "value": [1, "7"]}],
                    },
                },
            )

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def served(context: ssl.SSLContext | None = None) -> Iterator[str]:
    """The recorder on 127.0.0.1 (HTTPS with `context`); its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        _Recorder.seen.clear()
        _Recorder.status_code = 200
        _Recorder.expected_authorization = ""


@pytest.fixture
def http_api() -> Iterator[str]:
    with served() as url:
        yield url


@dataclass(frozen=True)
class Certificates:
    ca: Path
    """The CA's certificate: what `--prometheus-ca-file` names."""
    server: ssl.SSLContext
    """A server context with a certificate for 127.0.0.1 signed by the CA."""


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, capture_output=True, check=True)

    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=modeldeploy test CA")  # fmt: skip
    openssl("req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1",
            "-extfile", "san.ext")  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.crt", directory / "server.key")
    return Certificates(directory / "ca.crt", context)


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        (PrometheusAuth(bearer_token="s3cr3t"), "Bearer s3cr3t"),
        (
            PrometheusAuth(username="ops", password="pa:ss"),
            "Basic " + base64.b64encode(b"ops:pa:ss").decode(),
        ),
    ],
)
def test_credentials_are_sent_and_a_refusal_is_unreachable(
    http_api: str, auth: PrometheusAuth, header: str
) -> None:
    _Recorder.expected_authorization = header
    with PrometheusProvider(http_api, auth=auth) as provider:
        assert provider.query("x", ("le",)).values == {("+Inf",): 7.0}
    with PrometheusProvider(http_api) as anonymous:
        refused = anonymous.query("x", ("le",))
    assert refused.status is QueryStatus.UNREACHABLE
    assert refused.error == "HTTP 401"  # the body is never repeated
    assert "s3cr3t" not in repr(auth)
    assert "pa:ss" not in repr(auth)


@pytest.mark.parametrize(
    ("code", "status"),
    [(400, QueryStatus.BAD_QUERY), (422, QueryStatus.BAD_QUERY), (503, QueryStatus.UNREACHABLE)],
)
def test_http_errors_are_classified(http_api: str, code: int, status: QueryStatus) -> None:
    _Recorder.expected_authorization = ""
    _Recorder.status_code = code
    with PrometheusProvider(http_api, retries=0) as provider:
        result = provider.query("x{")
    assert result.status is status
    expected = (
        f"HTTP {code}: Prometheus refused the query (bad_data); the operator's log has why"
        if status is QueryStatus.BAD_QUERY
        else f"HTTP {code} (bad_data)"
    )
    assert result.error == expected
    assert _Recorder.seen[-1].get("Authorization") is None


def test_auth_is_either_bearer_or_basic() -> None:
    with pytest.raises(ValueError, match="not both"):
        PrometheusAuth(bearer_token="t", username="u")
    with pytest.raises(ValueError, match="username"):
        PrometheusAuth(password="p")


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verified_with_the_ca_file_refused_without_and_skipped_on_request(
    certificates: Certificates,
) -> None:
    """The operator's TLS options reach the provider of its default Prometheus: a server
    whose CA only the CA file knows answers with it, is unreachable (TLS) against the system
    CAs, and answers unverified when verification is skipped."""

    def query(settings: AnalysisSettings) -> QueryResult:
        assert settings.prometheus_url is not None
        provider = prometheus_connector(settings)(settings.prometheus_url, None)
        try:
            return provider.query("x", ("le",))
        finally:
            provider.close()

    with served(certificates.server) as url:
        trusting = query(AnalysisSettings(prometheus_url=url, ca_file=certificates.ca))
        skipping = query(AnalysisSettings(prometheus_url=url, insecure_skip_verify=True))
        strict = query(AnalysisSettings(prometheus_url=url))
    assert trusting.values == skipping.values == {("+Inf",): 7.0}
    assert strict.status is QueryStatus.UNREACHABLE
    assert "SSLError" in strict.error, strict.error


def test_tls_options_apply_to_the_default_prometheus_only(tmp_path: Path) -> None:
    default = "https://prometheus.monitoring:9090"
    own = "https://prometheus.team-a:9090"  # a ModelDeployment's spec.prometheus.url
    ca = tmp_path / "ca.crt"
    with_ca = AnalysisSettings(prometheus_url=default, ca_file=ca)
    assert tls_verification(with_ca, default) == str(ca)
    assert tls_verification(with_ca, own) is True
    skipping = AnalysisSettings(prometheus_url=default, insecure_skip_verify=True)
    assert tls_verification(skipping, default) is False
    assert tls_verification(skipping, own) is True
    assert tls_verification(AnalysisSettings(prometheus_url=default), default) is True
    with pytest.raises(ValueError, match="not both"):
        AnalysisSettings(prometheus_url=default, ca_file=ca, insecure_skip_verify=True)
