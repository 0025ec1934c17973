"""Session fixtures: a real kwokctl cluster and a real Prometheus, both on 127.0.0.1.

They start only when an integration test asks for them and are torn down at the end of the
session, also when tests fail.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeploy.devenv import testruns
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.images import BuiltImage, ensure_images
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.registry import RegistryServer, registry_binary, storage_dir
from modeldeploy.devenv.tools import Toolchain, prometheus_binary, toolchain

# MLflow (the mlflow format's tests, and every process they start) reports nothing anywhere.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Nor does it leave a tracking store (./mlruns, which older mlflow-skinny releases create in the
# working directory, the checkout) behind: it goes to a directory removed at the end.
_MLRUNS = tempfile.TemporaryDirectory(prefix="modeldeploy-mlruns-")
os.environ.setdefault("MLFLOW_TRACKING_URI", Path(_MLRUNS.name).as_uri())

# pytest-xdist's workers (hack/run-tests.sh) have COLUMNS=80 and LINES=24 in their environment,
# which a serial session has not: the CLI's tables would wrap at 80 columns there instead of
# taking the width any pipe gets (console.render.PLAIN_WIDTH).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def tools() -> Toolchain:
    return toolchain()


@pytest.fixture(scope="session")
def kube(tools: Toolchain) -> Iterator[KwokCluster]:
    testruns.reap_stale_runs(tools)
    cluster = testruns.test_cluster(tools)
    try:
        testruns.create_cluster(cluster)
        yield cluster
    finally:
        cluster.delete()


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    server = PrometheusServer(prometheus_binary(), testruns.run_dir() / "prometheus")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """The local OCI registry over the cache's storage (what `make images` pushed), on a
    port of this session's own."""
    server = RegistryServer(registry_binary(), storage_dir(), testruns.run_dir() / "registry")
    with server:
        yield server


@pytest.fixture(scope="session")
def images(registry: RegistryServer) -> dict[str, BuiltImage]:
    """Every image of the project in the registry, by digest (built when missing: `make test`
    has built them already, so this only checks)."""
    return ensure_images(registry, print)
