"""The local control plane behaves like a real cluster: workloads, GC, HPAs, CRD CEL rules."""

import json
import subprocess
from typing import Any

import pytest
import yaml
from operator_harness import wait_for

from modeldeploy.devenv.cluster import KwokCluster

pytestmark = pytest.mark.integration


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "example.invalid/app:1"}]},
            },
        },
    }


def test_apiserver_reports_its_real_version(kube: KwokCluster) -> None:
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"] == kube.tools.kube_version
    assert version["major"] == "1"
    assert kube.tools.kube_version.startswith(f"v1.{version['minor']}.")


def test_apiserver_listens_on_loopback_only(kube: KwokCluster) -> None:
    server = yaml.safe_load(kube.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    assert server.startswith(("https://127.0.0.1:", "http://127.0.0.1:"))


def test_nodes_are_kwok_fakes_and_ready(kube: KwokCluster) -> None:
    nodes = kube.get_json("nodes")["items"]
    assert len(nodes) == 3
    for node in nodes:
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"


def test_deployment_reaches_ready_replicas_and_is_garbage_collected(kube: KwokCluster) -> None:
    kube.apply_objects([deployment("gc-check", 3)])
    wait_for(
        lambda: kube.get_json("deployment", "gc-check").get("status", {}).get("readyReplicas") == 3
    )
    pods = kube.get_json("pods", "-l", "app=gc-check")["items"]
    assert len(pods) == 3
    assert all(p["status"]["phase"] == "Running" for p in pods)
    assert len(kube.get_json("replicasets", "-l", "app=gc-check")["items"]) == 1

    kube.kubectl("delete", "deployment", "gc-check", "--wait=false")
    # The garbage collector (controller-manager) removes the ReplicaSet, then its pods.
    wait_for(lambda: not kube.get_json("replicasets", "-l", "app=gc-check")["items"])
    wait_for(lambda: not kube.get_json("pods", "-l", "app=gc-check")["items"])


def test_autoscaling_v2_hpa_is_accepted(kube: KwokCluster) -> None:
    kube.apply_objects([deployment("hpa-target", 1)])
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "hpa-target", "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hpa-target"},
            "minReplicas": 2,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    kube.apply_objects([hpa])
    stored = kube.get_json("hpa.v2.autoscaling", "hpa-target")
    assert stored["spec"]["minReplicas"] == 2
    assert stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    kube.kubectl("delete", "hpa/hpa-target", "deployment/hpa-target")


CEL_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.celcheck.example.com"},
    "spec": {
        "group": "celcheck.example.com",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "min": {"type": "integer"},
                                    "max": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "min must not exceed max",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, low: int, high: int) -> dict[str, Any]:
    return {
        "apiVersion": "celcheck.example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"min": low, "max": high},
    }


def test_crd_cel_rule_rejects_invalid_object_with_its_message(kube: KwokCluster) -> None:
    kube.apply_objects([CEL_CRD])
    kube.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.celcheck.example.com", "--timeout=30s"
    )
    kube.apply_objects([widget("good", 1, 2)])
    bad = kube.kubectl("apply", "-f", "-", input=json.dumps(widget("bad", 3, 2)), check=False)
    assert bad.returncode != 0
    assert "min must not exceed max" in bad.stderr
    assert "spec" in bad.stderr
    kube.kubectl("delete", "crd", "widgets.celcheck.example.com")


CLUSTER_PROCESSES = ("kube-apiserver", "kube-controller", "kube-scheduler", "etcd", "kwok")


def test_cluster_components_listen_on_loopback_only(kube: KwokCluster) -> None:
    listening = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    ours = [line for line in listening if any(f'"{p}' in line for p in CLUSTER_PROCESSES)]
    assert ours, "no cluster component found listening"
    for line in ours:
        local_address = line.split()[3]
        assert local_address.startswith(("127.0.0.1:", "[::1]:")), line
