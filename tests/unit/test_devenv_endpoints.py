"""The pod runner's endpoints file and Prometheus target files: round trips, loopback only,
selection of a ModelDeployment's Ready endpoints, periodic re-reading."""

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from modeldeploy.devenv.endpoints import (
    Endpoint,
    Published,
    ServiceMembers,
    read_endpoints,
    read_published,
    write_published,
)
from modeldeploy.devenv.loadgen import EndpointSource
from modeldeploy.devenv.prometheus import write_targets

pytestmark = pytest.mark.unit

A = Endpoint("ml", "churn-a", "churn", "r1", "churn", "127.0.0.1:4001", True, 11, "img:1")
B = replace(A, pod="churn-b", address="127.0.0.1:4002", ready=False, pid=12)
C = replace(A, namespace="dev", pod="churn-c", address="127.0.0.1:4003", pid=13)
D = replace(A, name="fraud", pod="fraud-d", address="localhost:4004", pid=14)


SERVICES = [
    ServiceMembers("ml", "churn", ("churn-a", "churn-b")),
    ServiceMembers("ml", "churn-canary", ("churn-b",)),
    ServiceMembers("dev", "churn", ("churn-c",)),
]
EVERYTHING = Published([A, B, C, D], SERVICES)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    assert read_published(path) == Published()  # no runner yet
    write_published(path, EVERYTHING)
    assert read_published(path) == EVERYTHING
    assert read_endpoints(path) == [A, B, C, D]
    assert A.url == "http://127.0.0.1:4001"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("address", ["10.244.0.7:8080", "churn.ml.svc:80", "127.0.0.1"])
def test_only_loopback_is_written_or_read(tmp_path: Path, address: str) -> None:
    path = tmp_path / "endpoints.json"
    with pytest.raises(ValueError, match="non-loopback"):
        write_published(path, Published([replace(A, address=address)]))
    write_published(path, Published([A]))
    document = json.loads(path.read_text())
    document["endpoints"][0]["address"] = address
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="non-loopback"):
        read_endpoints(path)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"format": 99, "endpoints": []}))
    with pytest.raises(ValueError, match="unknown endpoints format"):
        read_endpoints(path)


def test_ready_pods_of_one_model_deployment() -> None:
    assert EVERYTHING.ready_pods("ml", "churn") == [A]
    assert EVERYTHING.ready_pods(None, "churn") == [A, C]
    assert EVERYTHING.ready_pods("ml", "fraud") == [D]
    assert EVERYTHING.ready_pods("ml", "other") == []


def test_ready_pods_behind_a_service_like_kube_proxy() -> None:
    assert EVERYTHING.ready_behind("ml", "churn") == [A]  # churn-b is not ready
    assert EVERYTHING.ready_behind("ml", "churn-canary") == []
    assert EVERYTHING.ready_behind("dev", "churn") == [C]
    assert EVERYTHING.ready_behind(None, "churn") == [A, C]
    assert EVERYTHING.ready_behind("ml", "fraud") == []  # no such Service: no endpoints


def test_endpoint_source_rereads_the_file_to_follow_rollouts(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    source = EndpointSource(path, "ml", "churn", refresh=0.05)
    pods = EndpointSource(path, "ml", "fraud", via="pods", refresh=0.05)
    assert source() == []
    write_published(path, EVERYTHING)
    assert pods() == [D]
    time.sleep(0.06)
    assert source() == [A]
    path.write_text("{half a file")
    time.sleep(0.06)
    assert source() == [A]  # a broken read keeps the last good set
    write_published(path, Published([A], []))  # the Service is gone
    time.sleep(0.06)
    assert source() == []


def test_targets_file_is_file_sd_with_the_job_label(tmp_path: Path) -> None:
    path = write_targets(tmp_path, "pods", [("127.0.0.1:4001", {"pod": "churn-a"})])
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:4001"], "labels": {"job": "pods", "pod": "churn-a"}}
    ]
    with pytest.raises(ValueError, match="non-loopback"):
        write_targets(tmp_path, "pods", [("10.0.0.7:8080", {})])
