"""Session fixtures: a real kwokctl cluster and a real Prometheus, both on 127.0.0.1.

They start only when an integration test asks for them and are torn down at the end of the
session, also when tests fail.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.tools import Toolchain, prometheus_binary, toolchain


@pytest.fixture(scope="session")
def tools() -> Toolchain:
    return toolchain()


@pytest.fixture(scope="session")
def kube(tools: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KwokCluster]:
    cluster = KwokCluster(
        name=f"md-test-{os.getpid()}", workdir=tmp_path_factory.mktemp("kwok"), tools=tools
    )
    try:
        cluster.create(nodes=3)
        yield cluster
    finally:
        cluster.delete()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(prometheus_binary(), Path(tmp_path_factory.mktemp("prometheus")))
    try:
        server.start()
        yield server
    finally:
        server.stop()
