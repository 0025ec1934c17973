"""Fixtures shared by the integration modules (the cluster itself is in tests/conftest.py)."""

import pytest
from operator_harness import ClusterReader

from modeldeploy.devenv.cluster import KwokCluster


@pytest.fixture(scope="session")
def reader(kube: KwokCluster) -> ClusterReader:
    return ClusterReader(kube)
