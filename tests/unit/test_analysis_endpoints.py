"""Which Prometheus a spec may name: the operator's allow-list, legacy URLs, Secret labels,
and the fair query pool."""

import threading

import pytest

from modeldeploy.analysis.endpoints import (
    SECRET_ENDPOINT_LABEL,
    Endpoint,
    EndpointRefused,
    choose_endpoint,
    endpoint_table,
    endpoint_url,
    parse_endpoint,
    secret_allowed,
)
from modeldeploy.analysis.fairpool import FairPool
from modeldeploy.api import ModelDeploymentSpec, Prometheus

pytestmark = pytest.mark.unit

TABLE = {"default": "http://prometheus:9090", "team-a": "https://prom.team-a:9443/prom"}


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@prometheus:9090",
        "http://prometheus:9090?x=1",
        "http://prometheus:9090/#frag",
        "http://prome\ttheus:9090",
        "http://prometheus:9090/a\r\nb",
        "ftp://prometheus",
        "http://prometheus:99999",
        "http:///nohost",
    ],
)
def test_only_plain_base_urls_are_endpoints(url: str) -> None:
    with pytest.raises(ValueError, match="Prometheus URL"):
        endpoint_url(url)


def test_endpoint_flags_and_table() -> None:
    assert parse_endpoint("team-a=https://prom.team-a:9443/prom/") == (
        "team-a",
        "https://prom.team-a:9443/prom",
    )
    assert endpoint_url("http://[::1]:9090") == "http://[::1]:9090"
    for bad in ("Team=http://x", "team", "=http://x"):
        with pytest.raises(ValueError, match="NAME=URL"):
            parse_endpoint(bad)
    assert endpoint_table("http://prometheus:9090/", {"team-a": TABLE["team-a"]}) == TABLE
    with pytest.raises(ValueError, match="name the other one differently"):
        endpoint_table("http://a:1", {"default": "http://b:1"})


def test_a_spec_picks_among_the_endpoints_only() -> None:
    assert choose_endpoint(None, TABLE) == Endpoint("default", TABLE["default"])
    assert choose_endpoint(None, {}) is None
    assert choose_endpoint(Prometheus(endpoint="team-a"), TABLE) == Endpoint(
        "team-a", TABLE["team-a"]
    )
    legacy = Prometheus(url="https://prom.team-a:9443/prom/")
    assert choose_endpoint(legacy, TABLE) == Endpoint("team-a", TABLE["team-a"])
    with pytest.raises(EndpointRefused, match=r"'team-b' is not one of .* \(default, team-a\)"):
        choose_endpoint(Prometheus(endpoint="team-b"), TABLE)
    with pytest.raises(EndpointRefused, match=r"name one with spec\.prometheus\.endpoint"):
        choose_endpoint(Prometheus(url="http://elsewhere:9090"), TABLE)


@pytest.mark.parametrize(
    "prometheus",
    [
        {},
        {"endpoint": "a", "url": "http://a:1"},
        {"endpoint": "A"},
        {"url": "http://u:p@a:1"},
        {"url": "http://a:1/x?y"},
        {"url": "http://a:1/\tx"},
    ],
)
def test_the_api_refuses_ambiguous_or_odd_prometheus(prometheus: dict[str, str]) -> None:
    body = {"model": {"name": "m", "version": "1"}, "image": "r/m:1", "prometheus": prometheus}
    with pytest.raises(ValueError, match="prometheus"):
        ModelDeploymentSpec.model_validate(body)


def test_a_secret_goes_only_to_the_endpoint_its_label_names() -> None:
    team = Endpoint("team-a", TABLE["team-a"])
    secret_allowed({SECRET_ENDPOINT_LABEL: "team-a"}, team, "Secret ml/p")
    for labels in ({}, {SECRET_ENDPOINT_LABEL: "default"}):
        with pytest.raises(EndpointRefused, match="Secret ml/p may not be sent"):
            secret_allowed(labels, team, "Secret ml/p")


def test_a_stuck_owner_holds_only_its_share_of_the_pool() -> None:
    pool = FairPool(workers=4, per_owner=1)
    stuck = threading.Event()
    try:
        blocked = [pool.submit("bad", stuck.wait) for _ in range(10)]
        healthy = [pool.submit(("ml", f"n{i}"), lambda i=i: i) for i in range(6)]
        assert [f.result(timeout=30) for f in healthy] == list(range(6))
        assert pool.running("bad") == 1
        for future in blocked[1:]:
            assert future.cancel()  # never started: the round that asked gave up on them
    finally:
        stuck.set()
        pool.close()
    assert blocked[0].result(timeout=30) is True
