"""The pod runner's endpoints file and Prometheus target files: round trips, loopback only,
selection of a ModelDeployment's Ready endpoints, periodic re-reading."""

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from modeldeploy.devenv.endpoints import Endpoint, read_endpoints, select, write_endpoints
from modeldeploy.devenv.loadgen import EndpointSource
from modeldeploy.devenv.prometheus import write_targets

pytestmark = pytest.mark.unit

A = Endpoint("ml", "churn-a", "churn", "r1", "churn", "127.0.0.1:4001", True, 11, "img:1")
B = replace(A, pod="churn-b", address="127.0.0.1:4002", ready=False, pid=12)
C = replace(A, namespace="dev", pod="churn-c", address="127.0.0.1:4003", pid=13)
D = replace(A, name="fraud", pod="fraud-d", address="localhost:4004", pid=14)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    assert read_endpoints(path) == []  # no runner yet
    write_endpoints(path, [A, B, C, D])
    assert read_endpoints(path) == [A, B, C, D]
    assert A.url == "http://127.0.0.1:4001"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("address", ["10.244.0.7:8080", "churn.ml.svc:80", "127.0.0.1"])
def test_only_loopback_is_written_or_read(tmp_path: Path, address: str) -> None:
    path = tmp_path / "endpoints.json"
    with pytest.raises(ValueError, match="non-loopback"):
        write_endpoints(path, [replace(A, address=address)])
    write_endpoints(path, [A])
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


def test_select_ready_endpoints_of_one_model_deployment() -> None:
    every = [A, B, C, D]
    assert select(every, "ml", "churn") == [A]
    assert select(every, None, "churn") == [A, C]
    assert select(every, "ml", "fraud") == [D]
    assert select(every, "ml", "other") == []


def test_endpoint_source_rereads_the_file_to_follow_rollouts(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    source = EndpointSource(path, "ml", "churn", refresh=0.05)
    assert source() == []
    write_endpoints(path, [A])
    time.sleep(0.06)
    assert source() == [A]
    path.write_text("{half a file")
    time.sleep(0.06)
    assert source() == [A]  # a broken read keeps the last good set
    write_endpoints(path, [])
    time.sleep(0.06)
    assert source() == []


def test_targets_file_is_file_sd_with_the_job_label(tmp_path: Path) -> None:
    path = write_targets(tmp_path, "pods", [("127.0.0.1:4001", {"pod": "churn-a"})])
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:4001"], "labels": {"job": "pods", "pod": "churn-a"}}
    ]
    with pytest.raises(ValueError, match="non-loopback"):
        write_targets(tmp_path, "pods", [("10.0.0.7:8080", {})])
