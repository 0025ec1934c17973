"""Fixtures shared by the integration modules (the cluster itself is in tests/conftest.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_harness import ClusterReader

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.tools import prometheus_binary


@pytest.fixture(scope="session")
def reader(kube: KwokCluster) -> ClusterReader:
    return ClusterReader(kube)


@pytest.fixture(scope="module")
def private_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A Prometheus of the module's own, for tests that stop it and start it again."""
    server = PrometheusServer(prometheus_binary(), Path(tmp_path_factory.mktemp("prometheus")))
    with server:
        yield server
