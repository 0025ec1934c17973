"""Reads come from watches: with the periodic pass an hour apart, every reaction here can only
come from a watch event. A ModelDeployment turns Ready when its pods do (a Deployment status
change), and an owned object deleted behind the operator's back is put back; the operator's
only API reads are of a name right before it creates that object (someone else's object may
hold the name without the label its watches select by: a list by field selector)."""

from collections.abc import Iterator

import pytest
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    apply_object,
    ensure_crd,
    ensure_namespace,
    kubectl,
    model_deployment,
    wait_for,
)

from modeldeploy import kopf_transform
from modeldeploy.devenv.cluster import KwokCluster

pytestmark = pytest.mark.integration

NAMESPACE = "op-watch"
NAME = "churn"
HOUR = 3600.0


def reads_but_before_creates(operator: OperatorProcess) -> list[str]:
    """The operator's API reads other than the list (by name) of a kind it then creates an
    object of."""
    lines = operator.requests()
    found = []
    for i, line in enumerate(lines):
        if " read GET " in line:
            collection = line.split(" read GET ", 1)[1].strip()
            if not any(f" write PATCH {collection}/" in later for later in lines[i + 1 :]):
                found.append(line)
    return found


@pytest.fixture(scope="module")
def operator(
    kube: KwokCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    ensure_crd(kube)
    ensure_namespace(kube, NAMESPACE)
    with OperatorProcess(kube, NAMESPACE, tmp_path_factory.mktemp(NAMESPACE), interval=HOUR) as op:
        yield op


def test_ready_from_events_alone(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    apply_object(kube, model_deployment(NAME, NAMESPACE, "registry.example/churn:1"))
    # The first reconcile (the ModelDeployment's event) creates the Deployment with 0 Ready
    # pods; only the Deployment's status events can bring Ready within the hour.
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, what="Ready")
    assert reads_but_before_creates(operator) == []
    # ... on slimmed objects: Kopf's watch streams were wrapped (`kopf_transform`).
    assert kopf_transform.CHANGED not in operator.log()


def test_an_owned_object_deleted_behind_its_back_is_put_back(
    kube: KwokCluster, operator: OperatorProcess, reader: ClusterReader
) -> None:
    wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, what="Ready")
    before = reader.services(NAMESPACE, NAME)[NAME]["metadata"]["uid"]
    kubectl(kube, "delete", "service", NAME, "-n", NAMESPACE)

    def recreated() -> bool:
        service = reader.services(NAMESPACE, NAME).get(NAME)
        return service is not None and service["metadata"]["uid"] != before

    wait_for(recreated, timeout=30, what="Service recreated")
    assert reads_but_before_creates(operator) == []
