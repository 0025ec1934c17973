"""The chart's default, cluster-wide mode (`watchNamespaces: []`, a ClusterRole), with the
real operator authenticated as the chart's ServiceAccount (a TokenRequest token, not
impersonation) and started without --namespace, as the chart's pod runs it.

One operator takes a ModelDeployment in each of two namespaces to Ready, and nothing it
asks for is refused. The cluster is the session's: the operator also sees whatever
ModelDeployments earlier modules left, and must not be refused anything for those either.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chart_release import (
    ChartRelease,
    denials,
    installed_release,
    restricted_namespace,
    token_kubeconfig,
    whoami,
)
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    apply_object,
    model_deployment,
    printed,
    wait_for,
)

from modeldeploy.api import GROUP, PLURAL
from modeldeploy.devenv.cluster import KwokCluster

pytestmark = pytest.mark.integration

RELEASE = "mdwide"  # cluster-scoped roles are named after it: unique among the test modules
SYSTEM_NS = "chart-wide-system"
NAMESPACES = ("chart-wide-a", "chart-wide-b")
NAME = "churn"


@pytest.fixture(scope="module")
def release(kube: KwokCluster) -> Iterator[ChartRelease]:
    for namespace in NAMESPACES:
        restricted_namespace(kube, namespace)
    with installed_release(kube, RELEASE, SYSTEM_NS, None) as chart:
        yield chart


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, release: ChartRelease, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    workdir = Path(tmp_path_factory.mktemp(RELEASE))
    path = workdir / "service-account.kubeconfig"
    config = token_kubeconfig(kube, release.token(kube), SYSTEM_NS, path)
    assert whoami(kube, config) == release.username
    with OperatorProcess(kube, None, workdir, env={"KUBECONFIG": str(config)}) as process:
        yield process
        # Deleted while the operator runs: it removes Kopf's finalizer from each.
        for namespace in NAMESPACES:
            kube.kubectl(
                "delete", f"{PLURAL}.{GROUP}", NAME, "-n", namespace, "--timeout=60s",
                check=False,
            )  # fmt: skip


def test_the_release_has_a_cluster_role_and_no_roles(
    kube: KwokCluster, release: ChartRelease
) -> None:
    full = release.service_account  # the chart's full name
    assert kube.kubectl("get", "clusterrole", full, check=False).returncode == 0
    assert kube.kubectl("get", "clusterrolebinding", full, check=False).returncode == 0
    for namespace in NAMESPACES:
        assert kube.kubectl("get", "role", full, "-n", namespace, check=False).returncode != 0


def test_one_operator_reconciles_both_namespaces_without_a_denial(
    kube: KwokCluster, operator: OperatorProcess
) -> None:
    reader = ClusterReader(kube)
    start = time.monotonic()
    for namespace in NAMESPACES:
        apply_object(kube, model_deployment(NAME, namespace, "registry.example/churn:1"))
    for namespace in NAMESPACES:
        wait_for(
            lambda namespace=namespace: reader.is_true(namespace, NAME, "Ready"),
            timeout=90, what=f"{namespace}/{NAME} Ready",
        )  # fmt: skip
    printed("two namespaces, created -> Ready", time.monotonic() - start)
    denied = denials(operator.log())
    assert not denied, "\n".join(denied[:20])
    writes = operator.writes()
    for namespace in NAMESPACES:
        assert any(f"/namespaces/{namespace}/" in line for line in writes), namespace
