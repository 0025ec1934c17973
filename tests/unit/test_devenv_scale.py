"""The scale bench's pure parts: its workload, readiness, and reading audit events, apiserver
metrics and /proc."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.devenv.scale import (
    Milestones,
    apiserver_requests,
    count_audit,
    deployment_ready,
    first_children,
    latencies,
    model_deployment,
    model_name,
    nodes_for,
    process_sample,
    scaled_to_zero,
    table,
    token_kubeconfig,
)
from modeldeploy.resources.names import LABEL_NAME

pytestmark = pytest.mark.unit

OPERATOR = "system:serviceaccount:scale:modeldeploy-operator"


def test_first_children_are_the_operators_objects_without_owner() -> None:
    children = first_children(model_deployment("m-1", "scale"))
    assert [c["kind"] for c in children] == [
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
    ]  # fmt: skip
    assert all("ownerReferences" not in c["metadata"] for c in children)
    assert all(c["metadata"]["labels"][LABEL_NAME] == "m-1" for c in children)
    assert children[0]["spec"]["replicas"] == 2  # the default minWarm


def test_nodes_for_leaves_room_and_keeps_three() -> None:
    assert nodes_for(0) == 3
    assert nodes_for(2000) == 23  # 110 pods a node, filled to 80%


def deployment(replicas: int, ready: int, *, generation: int = 1, observed: int = 1) -> Any:
    return {
        "kind": "Deployment",
        "metadata": {"name": "m-1-abc", "generation": generation, "labels": {LABEL_NAME: "m-1"}},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": ready,
            "updatedReplicas": ready,
            "readyReplicas": ready,
        },
    }


def test_deployment_ready_wants_every_pod_of_the_seen_spec() -> None:
    assert deployment_ready(deployment(2, 2))
    assert not deployment_ready(deployment(2, 1))
    assert not deployment_ready(deployment(2, 2, generation=2))
    assert not deployment_ready(deployment(0, 0))
    assert scaled_to_zero(deployment(0, 0))
    assert not scaled_to_zero(deployment(0, 1))


def test_milestones_keep_the_first_moment() -> None:
    ready = Milestones(deployment_ready)
    ready.observe(deployment(2, 1), 1.0)
    ready.observe(deployment(2, 2), 2.0)
    ready.observe(deployment(2, 2), 3.0)
    assert ready.times == {"m-1": 2.0}
    assert model_name(model_deployment("m-1", "scale")) == "m-1"
    assert latencies({"m-1": 0.5, "m-2": 0.0}, ready.times) == [1.5]


def audit_event(audit_id: str, user: str, verb: str, received: str, stage: str) -> str:
    return json.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": audit_id, "stage": stage, "verb": verb,
        "requestURI": "/apis/apps/v1/namespaces/scale/deployments",
        "user": {"username": user, "groups": ["system:serviceaccounts"]},
        "userAgent": "OpenAPI-Generator/37.0.2/python",
        "requestReceivedTimestamp": received, "stageTimestamp": received,
    })  # fmt: skip


def test_count_audit_counts_one_users_requests_in_the_window_once_each() -> None:
    lines = [
        audit_event("a", OPERATOR, "list", "2026-12-01T12:00:00.500000Z", "ResponseComplete"),
        audit_event("b", OPERATOR, "watch", "2026-12-01T12:00:01.000000Z", "ResponseStarted"),
        audit_event("b", OPERATOR, "watch", "2026-12-01T12:00:01.000000Z", "ResponseComplete"),
        audit_event("c", OPERATOR, "patch", "2026-12-01T12:00:02.000000Z", "ResponseComplete"),
        audit_event("d", "kubernetes-admin", "get", "2026-12-01T12:00:02Z", "ResponseComplete"),
        audit_event("e", OPERATOR, "get", "2026-12-01T11:59:59.999999Z", "ResponseComplete"),
        audit_event("f", OPERATOR, "get", "2026-12-01T12:00:10.000000Z", "ResponseComplete"),
        "",
    ]
    start = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    end = datetime(2026, 12, 1, 12, 0, 10, tzinfo=UTC)
    counted = count_audit(lines, OPERATOR, start, end)
    assert counted.by_verb == {"list": 1, "watch": 1, "patch": 1}
    assert (counted.requests, counted.writes) == (3, 1)


METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",group="",resource="pods",verb="LIST"} 12
apiserver_request_total{code="201",group="apps",resource="deployments",verb="PATCH"} 30
# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{verb="LIST",le="0.005"} 7
apiserver_request_duration_seconds_count{verb="LIST"} 9
"""


def test_apiserver_requests_sums_every_label_set() -> None:
    assert apiserver_requests(METRICS) == 42


def test_process_sample_reads_cpu_and_memory() -> None:
    stat = "4242 (python3 (x) y) S 1 4242 4242 0 -1 4194560 9 0 0 0 250 50 0 0 20 0 3 0 9 0 0"
    status = "Name:\tpython3\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n"
    sampled = process_sample(stat, status, clock_ticks=100)
    assert sampled.cpu_seconds == 3.0
    assert (sampled.rss_bytes, sampled.peak_rss_bytes) == (100 * 2**20, 200 * 2**20)
    proc = Path("/proc/self")
    if proc.exists():  # the real format too
        mine = process_sample(
            (proc / "stat").read_text(), (proc / "status").read_text(), os.sysconf("SC_CLK_TCK")
        )
        assert mine.cpu_seconds > 0
        assert mine.peak_rss_bytes >= mine.rss_bytes > 0


def test_token_kubeconfig_keeps_the_cluster_only() -> None:
    admin = {
        "clusters": [{"name": "kwok", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "admin", "user": {"client-certificate": "admin.crt"}}],
    }
    config = token_kubeconfig(admin, "op", "secret")
    assert config["clusters"] == admin["clusters"]
    assert config["users"] == [{"name": "op", "user": {"token": "secret"}}]
    assert config["contexts"][0]["context"] == {"cluster": "kwok", "user": "op"}


def test_table_aligns_text_left_and_figures_right() -> None:
    printed = table(["N", "path", "s"], [["10", "raw", "1.5"], ["300", "operator", "12.0"]],
                    text_columns=2)  # fmt: skip
    assert printed.splitlines() == [
        "N    path         s",
        "---  --------  ----",
        "10   raw        1.5",
        "300  operator  12.0",
    ]
