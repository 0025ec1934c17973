"""Which Prometheus a ModelDeployment's analysis may ask, and with which credentials (pure).

Prometheus endpoints are the operator's decision, not the author's: the operator's
configuration names them (``--prometheus-endpoint NAME=URL``, chart ``prometheus.endpoints``)
and a spec only picks one by name (`spec.prometheus.endpoint`). The legacy free
`spec.prometheus.url` is honoured only when it is exactly the URL of one of them. A Secret a
spec names for credentials must carry the label ``modeldeploy.io/prometheus-endpoint`` with
the endpoint's name: an admin's statement that this Secret may go to that endpoint.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from modeldeploy.api import Prometheus

SECRET_ENDPOINT_LABEL = "modeldeploy.io/prometheus-endpoint"
"""Label on a Secret: the name of the one endpoint its credentials may be sent to."""
DEFAULT_ENDPOINT = "default"
"""Name of the operator's `--prometheus-url` among the endpoints."""
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HOST = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_PATH = re.compile(r"(/[-A-Za-z0-9._~%]*)*")


def endpoint_url(url: str) -> str:
    """`url` without a trailing slash, if it is a plain http(s) base URL: a host, an optional
    port and path; no credentials, query, fragment, spaces or control characters (a ``?``
    would swallow the ``/api/v1/query`` appended to it). Raises ValueError otherwise."""
    # urlsplit drops TAB, CR and LF silently: refuse anything but visible ASCII first.
    odd = any(not "!" <= char <= "~" for char in url)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"Prometheus URL {url!r}: bad port") from err
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if (
        odd
        or parts.scheme not in ("http", "https")
        or not _HOST.fullmatch(host)
        or not _PATH.fullmatch(parts.path)
        or "?" in url
        or "#" in url
    ):
        raise ValueError(
            f"Prometheus URL {url!r} must be http(s)://host[:port][/path], without "
            "credentials, query, fragment or spaces"
        )
    return url.rstrip("/")


def parse_endpoint(text: str) -> tuple[str, str]:
    """``NAME=URL`` (the `--prometheus-endpoint` flag) -> (name, url)."""
    name, sep, url = text.partition("=")
    if not sep or not _NAME.fullmatch(name):
        raise ValueError(
            f"--prometheus-endpoint {text!r}: expected NAME=URL with NAME a DNS label "
            "(lower case letters, digits, '-'; at most 63)"
        )
    return name, endpoint_url(url)


def endpoint_table(default_url: str | None, endpoints: Mapping[str, str]) -> dict[str, str]:
    """All endpoints by name, the default one as `default`; URLs validated."""
    table = {name: endpoint_url(url) for name, url in endpoints.items()}
    for name in table:
        if not _NAME.fullmatch(name):
            raise ValueError(f"Prometheus endpoint name {name!r} is not a DNS label")
    if default_url:
        url = endpoint_url(default_url)
        if table.get(DEFAULT_ENDPOINT, url) != url:
            raise ValueError(
                f"endpoint {DEFAULT_ENDPOINT!r} is the --prometheus-url; name the other one "
                "differently"
            )
        table[DEFAULT_ENDPOINT] = url
    return table


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str

    @property
    def is_default(self) -> bool:
        """The operator's own Prometheus: its credentials and TLS options apply."""
        return self.name == DEFAULT_ENDPOINT


class EndpointRefused(ValueError):
    """The spec names a Prometheus it may not use; the message says what to do instead."""


def choose_endpoint(spec: Prometheus | None, table: Mapping[str, str]) -> Endpoint | None:
    """The endpoint of a ModelDeployment (None: no Prometheus at all, analysis is off).
    Raises EndpointRefused for a name or URL the operator's configuration does not list."""
    names = ", ".join(sorted(table)) or "none"
    if spec is None:
        url = table.get(DEFAULT_ENDPOINT)
        return Endpoint(DEFAULT_ENDPOINT, url) if url is not None else None
    if spec.endpoint is not None:
        url = table.get(spec.endpoint)
        if url is None:
            raise EndpointRefused(
                f"spec.prometheus.endpoint {spec.endpoint!r} is not one of the operator's "
                f"Prometheus endpoints ({names})"
            )
        return Endpoint(spec.endpoint, url)
    given = (spec.url or "").rstrip("/")
    for name, url in sorted(table.items()):
        if url == given:
            return Endpoint(name, url)
    raise EndpointRefused(
        "spec.prometheus.url is not the URL of one of the operator's Prometheus endpoints "
        f"({names}): name one with spec.prometheus.endpoint"
    )


def secret_allowed(labels: Mapping[str, str], endpoint: Endpoint, where: str) -> None:
    """Raises EndpointRefused unless an admin labelled the Secret for this endpoint."""
    if labels.get(SECRET_ENDPOINT_LABEL) != endpoint.name:
        raise EndpointRefused(
            f"{where} may not be sent to Prometheus endpoint {endpoint.name!r}: an admin "
            f"allows it with the label {SECRET_ENDPOINT_LABEL}={endpoint.name}"
        )
