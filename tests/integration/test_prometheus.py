"""A real Prometheus scrapes a real 127.0.0.1 target and answers PromQL about it."""

from collections.abc import Iterator

import pytest
from operator_harness import wait_for
from prometheus_client import CollectorRegistry, Counter, start_http_server

from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.tools import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def exporter() -> Iterator[tuple[str, Counter]]:
    registry = CollectorRegistry()
    counter = Counter("testenv_probe", "A counter the test scrapes", ["kind"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", counter
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_loopback_target_is_scraped_and_queryable(
    prometheus: PrometheusServer, exporter: tuple[str, Counter]
) -> None:
    address, counter = exporter
    counter.labels(kind="probe").inc(42)
    prometheus.set_targets("probe", [(address, {"pod": "probe-0", "revision": "abc123"})])
    result: list[dict[str, object]] = wait_for(
        lambda: prometheus.query('testenv_probe_total{job="probe", kind="probe"}'),
        timeout=30,
        interval=0.5,
        what="a scrape of the loopback target",
    )
    sample = result[0]
    assert sample["value"][1] == "42"  # type: ignore[index]
    assert sample["metric"]["pod"] == "probe-0"  # type: ignore[index]
    assert sample["metric"]["revision"] == "abc123"  # type: ignore[index]
    prometheus.set_targets("probe", [])


@pytest.mark.parametrize("address", ["10.0.0.7:8080", "192.168.1.2:9090", "example.com:80"])
def test_non_loopback_targets_are_refused(prometheus: PrometheusServer, address: str) -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        prometheus.set_targets("forbidden", [(address, {})])
