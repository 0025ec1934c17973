"""The Helm chart on the real apiserver: every rendering validated server-side (default,
namespaced + monitoring), `helm install` creating the CRD and the operator's objects with
its pod admitted under the restricted Pod Security level, upgrade and uninstall, and the
chart's RBAC checked call by call with SubjectAccessReviews for its ServiceAccount: every
call the operator makes is allowed, a list of calls it must never make is denied.

The operator's pod is a kwok pod (admitted and scheduled, not run); test_chart_operator.py
runs the real operator process as the chart's ServiceAccount.
"""

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import GROUP, PLURAL
from modeldeploy.crd import CRD_NAME
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.kube import READ_ONLY_ROUTES, ROUTES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = str(ROOT / "charts" / "modeldeploy")
Body = dict[str, Any]

CLUSTER_NS = "chart-cluster-system"  # release of the cluster-wide install
CLUSTER_RELEASE = "mdc"
SYSTEM_NS = "chart-ns-system"  # release of the namespaced install
NS_RELEASE = "mdn"
WATCHED = ("chart-ns-a", "chart-ns-b")
OTHER_NS = "chart-ns-other"  # not watched by the namespaced install
NAMESPACED_VALUES: Body = {
    "watchNamespaces": list(WATCHED),
    "logFormat": "json",
    "prometheus": {
        "url": "http://prometheus.monitoring:9090",
        "auth": {"type": "basic", "secretName": "prometheus-auth"},
    },
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
}
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def helm(kube: KwokCluster, *args: str, values: Body | None = None) -> str:
    command = [str(kube.tools.helm), "--kubeconfig", str(kube.kubeconfig), *args]
    if values is not None:
        command += ["--values", "-"]
    result = subprocess.run(
        command,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def kubectl(kube: KwokCluster, *args: str, input: str | None = None) -> str:
    result = kube.kubectl(*args, input=input, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def restricted_namespace(kube: KwokCluster, name: str) -> None:
    """A namespace whose pods must meet the restricted Pod Security level."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": RESTRICTED},
    }
    kubectl(kube, "apply", "-f", "-", input=json.dumps(body))


def monitoring_crds() -> list[Body]:
    """ServiceMonitor, PodMonitor and PrometheusRule CRDs with the schema of the fields the
    chart uses (the prometheus-operator ones are not in the test cluster); unknown fields are
    refused by strict field validation, so a misspelt field fails the dry run."""

    def crd(kind: str, plural: str, spec: Body) -> Body:
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "required": ["spec"],
                                "properties": {"spec": spec},
                            }
                        },
                    }
                ],
            },
        }

    duration = {"type": "string", "pattern": "^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"}
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    selector = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    pod_monitor = {
        "type": "object",
        "required": ["selector"],
        "properties": {
            "selector": selector,
            "namespaceSelector": {
                "type": "object",
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
            "podMetricsEndpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "interval": duration,
                        "scrapeTimeout": duration,
                    },
                },
            },
        },
    }
    rule = {
        "type": "object",
        "required": ["expr"],
        "properties": {
            "record": {"type": "string"},
            "alert": {"type": "string"},
            "expr": {"x-kubernetes-int-or-string": True},
            "for": duration,
            "labels": string_map,
            "annotations": string_map,
        },
    }
    prometheus_rule = {
        "type": "object",
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": duration,
                        "rules": {"type": "array", "items": rule},
                    },
                },
            }
        },
    }
    service_monitor = {
        "type": "object",
        "required": ["selector"],
        "properties": {
            "selector": selector,
            "namespaceSelector": pod_monitor["properties"]["namespaceSelector"],
            "endpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "interval": duration,
                        "honorLabels": {"type": "boolean"},
                    },
                },
            },
        },
    }
    return [
        crd("ServiceMonitor", "servicemonitors", service_monitor),
        crd("PodMonitor", "podmonitors", pod_monitor),
        crd("PrometheusRule", "prometheusrules", prometheus_rule),
    ]


@pytest.fixture(scope="module")
def installed(kube: KwokCluster) -> Iterator[dict[str, bool]]:
    """Both installs; tells whether the ModelDeployment CRD existed before (another module
    of the session may have applied it)."""
    crd_before = kube.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0
    kube.apply_objects(monitoring_crds())
    for namespace in (CLUSTER_NS, SYSTEM_NS, *WATCHED):
        restricted_namespace(kube, namespace)
    restricted_namespace(kube, OTHER_NS)
    helm(kube, "install", CLUSTER_RELEASE, CHART, "-n", CLUSTER_NS, "--wait", "--timeout", "2m")
    helm(
        kube, "install", NS_RELEASE, CHART, "-n", SYSTEM_NS, "--wait", "--timeout", "2m",
        values=NAMESPACED_VALUES,
    )  # fmt: skip
    try:
        yield {"crd_before": crd_before}
    finally:
        for release, namespace in ((CLUSTER_RELEASE, CLUSTER_NS), (NS_RELEASE, SYSTEM_NS)):
            subprocess.run(
                [str(kube.tools.helm), "--kubeconfig", str(kube.kubeconfig), "uninstall",
                 release, "-n", namespace, "--wait", "--timeout", "60s"],
                capture_output=True, timeout=120, check=False,
            )  # fmt: skip


@pytest.mark.parametrize("values", [None, NAMESPACED_VALUES], ids=["default", "namespaced"])
def test_rendered_objects_pass_server_side_validation(
    kube: KwokCluster, installed: dict[str, bool], values: Body | None
) -> None:
    rendered = helm(kube, "template", "dry", CHART, "-n", "default", values=values)
    result = kube.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=rendered, check=False
    )
    assert result.returncode == 0, result.stderr
    kinds = {line.split()[0].split("/")[0] for line in result.stdout.splitlines()}
    assert "deployment.apps" in kinds, result.stdout
    if values is not None:
        monitors = {f"{k}.monitoring.coreos.com" for k in ("servicemonitor", "podmonitor")}
        assert {*monitors, "prometheusrule.monitoring.coreos.com", "service"} <= kinds


def test_gitops_example_model_deployment_is_accepted(
    kube: KwokCluster, installed: dict[str, bool]
) -> None:
    body = yaml.safe_load((ROOT / "examples" / "gitops" / "models" / "churn.yaml").read_text())
    body["metadata"]["namespace"] = OTHER_NS
    kubectl(
        kube, "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=json.dumps(body)
    )


def test_install_creates_the_crd_and_the_operator_objects(
    kube: KwokCluster, installed: dict[str, bool]
) -> None:
    crd = kube.get_json("crd", CRD_NAME)
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established.get("Established") == "True"
    if not installed["crd_before"]:
        # Installed by helm from the chart's crds/: no Helm ownership, never deleted by it.
        assert "meta.helm.sh/release-name" not in (crd["metadata"].get("annotations") or {})
    name = f"{CLUSTER_RELEASE}-modeldeploy"
    for kind in ("serviceaccount", "deployment"):
        kubectl(kube, "get", kind, name, "-n", CLUSTER_NS)
    for kind in ("clusterrole", "clusterrolebinding"):
        kubectl(kube, "get", kind, name, f"{name}-observer")
    release = json.loads(helm(kube, "status", CLUSTER_RELEASE, "-n", CLUSTER_NS, "-o", "json"))
    assert release["info"]["status"] == "deployed"


def test_operator_pod_is_admitted_as_restricted(
    kube: KwokCluster, installed: dict[str, bool]
) -> None:
    """The release namespaces enforce the restricted level: the pod exists, so it passed."""
    for namespace, release in ((CLUSTER_NS, CLUSTER_RELEASE), (SYSTEM_NS, NS_RELEASE)):
        pods = kube.get_json(
            "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
        )["items"]
        assert len(pods) == 1, namespace
        deployment = kube.get_json("deployment", f"{release}-modeldeploy", "-n", namespace)
        assert deployment["status"].get("readyReplicas") == 1


def test_namespaced_install_objects(kube: KwokCluster, installed: dict[str, bool]) -> None:
    name = f"{NS_RELEASE}-modeldeploy"
    for namespace in WATCHED:
        kubectl(kube, "get", "role", name, "-n", namespace)
        kubectl(kube, "get", "rolebinding", name, "-n", namespace)
    assert kube.kubectl("get", "role", name, "-n", OTHER_NS, check=False).returncode != 0
    assert kube.kubectl("get", "clusterrole", name, check=False).returncode != 0
    kubectl(kube, "get", "podmonitor", f"{name}-models", "-n", SYSTEM_NS)
    kubectl(kube, "get", "servicemonitor", name, "-n", SYSTEM_NS)
    kubectl(kube, "get", "service", f"{name}-metrics", "-n", SYSTEM_NS)
    kubectl(kube, "get", "prometheusrule", name, "-n", SYSTEM_NS)
    dashboard = kube.get_json("configmap", f"{name}-dashboard", "-n", SYSTEM_NS)
    assert json.loads(dashboard["data"]["modeldeploy.json"])["uid"] == "modeldeploy-models"


# --- RBAC, call by call ---------------------------------------------------------------------

Call = tuple[str, str, str, str | None, str | None]  # verb, group, resource, subresource, ns


def operator_calls(namespace: str) -> list[Call]:
    """Every API call the operator makes on a ModelDeployment's namespace (modeldeploy.kube
    and Kopf's watch), plus the Prometheus Secret and Gateway API routes it is granted."""
    calls: list[Call] = [
        ("get", GROUP, PLURAL, None, namespace),
        ("list", GROUP, PLURAL, None, namespace),
        ("watch", GROUP, PLURAL, None, namespace),
        ("patch", GROUP, PLURAL, None, namespace),
        ("update", GROUP, PLURAL, "status", namespace),
        ("update", GROUP, PLURAL, "finalizers", namespace),
        ("create", "", "events", None, namespace),
        ("get", "", "secrets", None, namespace),
    ]
    for api_version, _, plural in ROUTES.values():
        group = api_version.rpartition("/")[0]
        calls += [
            (verb, group, plural, None, namespace) for verb in ("list", "create", "patch", "delete")
        ]
    for api_version, _, plural in READ_ONLY_ROUTES.values():
        group = api_version.rpartition("/")[0]
        calls += [(verb, group, plural, None, namespace) for verb in ("get", "list", "watch")]
    calls += [
        (verb, "gateway.networking.k8s.io", "httproutes", None, namespace)
        for verb in ("get", "list", "create", "patch", "delete")
    ]
    return calls


KOPF_OBSERVERS: list[Call] = [
    ("list", "apiextensions.k8s.io", "customresourcedefinitions", None, None),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions", None, None),
]


def forbidden_calls(namespace: str) -> list[Call]:
    """What the operator never does, in a namespace it manages."""
    return [
        ("list", "", "secrets", None, namespace),  # one named get, never a bulk read
        ("watch", "", "secrets", None, namespace),
        ("create", "", "pods", "exec", namespace),
        ("create", "", "pods", None, namespace),
        ("patch", "", "pods", None, namespace),  # pods are read, never written
        ("update", "", "pods", None, namespace),
        ("delete", "", "pods", None, namespace),
        ("deletecollection", "", "pods", None, namespace),
        ("patch", "", "pods", "status", namespace),
        ("update", "", "pods", "status", namespace),
        ("create", "", "pods", "eviction", namespace),
        ("get", "", "pods", "log", namespace),
        ("get", "", "configmaps", None, namespace),
        ("create", "", "serviceaccounts", "token", namespace),
        ("create", "rbac.authorization.k8s.io", "rolebindings", None, namespace),
        ("create", GROUP, PLURAL, None, namespace),
        ("delete", GROUP, PLURAL, None, namespace),
        ("update", GROUP, PLURAL, None, namespace),
        ("watch", "apps", "deployments", None, namespace),
        ("update", "apps", "deployments", None, namespace),
        ("patch", "apps", "deployments", "scale", namespace),
        ("patch", "", "events", None, namespace),
        # Cluster-scoped
        ("patch", "", "nodes", None, None),
        ("delete", "", "nodes", None, None),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles", None, None),
        ("bind", "rbac.authorization.k8s.io", "clusterroles", None, None),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings", None, None),
        ("impersonate", "", "serviceaccounts", None, None),
        ("create", "apiextensions.k8s.io", "customresourcedefinitions", None, None),
        ("update", "apiextensions.k8s.io", "customresourcedefinitions", None, None),
        ("delete", "apiextensions.k8s.io", "customresourcedefinitions", None, None),
        ("get", "apiextensions.k8s.io", "customresourcedefinitions", None, None),
    ]


def allowed(kube: KwokCluster, user: str, calls: list[Call]) -> dict[Call, bool]:
    """SubjectAccessReviews for the ServiceAccount `user` (with the groups a ServiceAccount
    token carries), all in one request."""
    namespace_group = "system:serviceaccounts:" + user.split(":")[2]
    reviews = []
    for verb, group, resource, subresource, namespace in calls:
        attributes = {"verb": verb, "group": group, "resource": resource}
        if subresource is not None:
            attributes["subresource"] = subresource
        if namespace is not None:
            attributes["namespace"] = namespace
        reviews.append(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": ["system:serviceaccounts", namespace_group, "system:authenticated"],
                    "resourceAttributes": attributes,
                },
            }
        )
    out = kubectl(
        kube, "create", "-o", "yaml", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": reviews}),
    )  # fmt: skip
    answers = list(yaml.safe_load_all(out))
    return {call: bool(a["status"].get("allowed")) for call, a in zip(calls, answers, strict=True)}


def service_account(namespace: str, release: str) -> str:
    return f"system:serviceaccount:{namespace}:{release}-modeldeploy"


def refused(verdicts: dict[Call, bool], want: bool) -> list[Call]:
    return [call for call, allowed_ in verdicts.items() if allowed_ != want]


def test_cluster_install_allows_every_operator_call(
    kube: KwokCluster, installed: dict[str, bool]
) -> None:
    user = service_account(CLUSTER_NS, CLUSTER_RELEASE)
    calls = operator_calls("any-namespace") + operator_calls(OTHER_NS) + KOPF_OBSERVERS
    assert refused(allowed(kube, user, calls), want=True) == []


def test_cluster_install_denies_what_the_operator_never_does(
    kube: KwokCluster, installed: dict[str, bool]
) -> None:
    user = service_account(CLUSTER_NS, CLUSTER_RELEASE)
    assert refused(allowed(kube, user, forbidden_calls("any-namespace")), want=False) == []


def test_namespaced_install_allows_only_the_watched_namespaces(
    kube: KwokCluster, installed: dict[str, bool]
) -> None:
    user = service_account(SYSTEM_NS, NS_RELEASE)
    namespaces_observer: list[Call] = [
        ("list", "", "namespaces", None, None),
        ("watch", "", "namespaces", None, None),
    ]
    calls = [c for ns in WATCHED for c in operator_calls(ns)] + KOPF_OBSERVERS + namespaces_observer
    assert refused(allowed(kube, user, calls), want=True) == []
    elsewhere = [*operator_calls(OTHER_NS), *operator_calls(SYSTEM_NS)]
    # Not even the Secrets or the Events of a namespace it does not watch.
    elsewhere.append(("get", "", "secrets", None, None))
    assert refused(allowed(kube, user, elsewhere), want=False) == []
    assert refused(allowed(kube, user, forbidden_calls(WATCHED[0])), want=False) == []


def test_upgrade_and_uninstall_keep_the_crd(kube: KwokCluster, installed: dict[str, bool]) -> None:
    release = "mdu"
    namespace = "chart-upgrade"
    restricted_namespace(kube, namespace)
    values: Body = {"rbac": {"aggregateToDefaultRoles": False}, "watchNamespaces": [namespace]}
    helm(kube, "install", release, CHART, "-n", namespace, values=values)
    helm(
        kube, "upgrade", release, CHART, "-n", namespace, "--wait", "--timeout", "2m",
        values={**values, "reconcileInterval": 30},
    )  # fmt: skip
    deployment = kube.get_json("deployment", f"{release}-modeldeploy", "-n", namespace)
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["MODELDEPLOY_RECONCILE_INTERVAL"] == "30"
    helm(kube, "uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
    deadline = time.monotonic() + 30
    while (
        kube.kubectl(
            "get", "role", f"{release}-modeldeploy", "-n", namespace, check=False
        ).returncode
        == 0
    ):
        assert time.monotonic() < deadline, "the Role outlived the release"
        time.sleep(0.5)
    kubectl(kube, "get", "crd", CRD_NAME)  # Helm never deletes crds/
