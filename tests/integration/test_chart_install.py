"""The Helm chart on the real apiserver: every rendering validated server-side (default,
with the CRD, and namespaced + monitoring), `helm install` creating the operator's objects
with its pod admitted under the restricted Pod Security level, upgrade and uninstall, and the
chart's RBAC checked call by call with SubjectAccessReviews for its ServiceAccount: every
call the operator makes is allowed, a list of calls it must never make is denied.

The operator's pod is a kwok pod (admitted and scheduled, not run); test_chart_operator.py
runs the real operator process as the chart's ServiceAccount; test_chart_oci.py installs the
chart from an OCI registry and upgrades its CRD.
"""

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from chart_release import CHART, ROOT, helm, kube_version, restricted_namespace, uninstall
from operator_harness import ensure_crd, kubectl

from modeldeploy.api import GROUP, PLURAL
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.resources.kinds import OWNED_KINDS, READ_ONLY_KINDS

pytestmark = pytest.mark.integration

Body = dict[str, Any]

CLUSTER_NS = "chart-cluster-system"  # release of the cluster-wide install
CLUSTER_RELEASE = "mdc"
SYSTEM_NS = "chart-ns-system"  # release of the namespaced install
NS_RELEASE = "mdn"
WATCHED = ("chart-ns-a", "chart-ns-b")
OTHER_NS = "chart-ns-other"  # not watched by the namespaced install
# The session's CRD is the repository's crds/: these releases leave it alone, as every
# release but one does in a cluster (test_chart_oci.py installs and upgrades the chart's).
CLUSTER_VALUES: Body = {"crds": {"install": False}}
NAMESPACED_VALUES: Body = {
    **CLUSTER_VALUES,
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
def installed(kube: KwokCluster) -> Iterator[None]:
    """Both installs, over the session's CRD."""
    ensure_crd(kube)
    kube.apply_objects(monitoring_crds())
    for namespace in (CLUSTER_NS, SYSTEM_NS, *WATCHED):
        restricted_namespace(kube, namespace)
    restricted_namespace(kube, OTHER_NS)
    helm(
        kube, "install", CLUSTER_RELEASE, str(CHART), "-n", CLUSTER_NS, "--wait", "--timeout",
        "2m", values=CLUSTER_VALUES,
    )  # fmt: skip
    helm(
        kube, "install", NS_RELEASE, str(CHART), "-n", SYSTEM_NS, "--wait", "--timeout", "2m",
        values=NAMESPACED_VALUES,
    )  # fmt: skip
    try:
        yield
    finally:
        for release, namespace in ((CLUSTER_RELEASE, CLUSTER_NS), (NS_RELEASE, SYSTEM_NS)):
            uninstall(kube, release, namespace)


@pytest.mark.parametrize("values", [None, NAMESPACED_VALUES], ids=["default", "namespaced"])
def test_rendered_objects_pass_server_side_validation(
    kube: KwokCluster, installed: None, values: Body | None
) -> None:
    """The default rendering includes the CRD: the apiserver validates it too."""
    rendered = helm(
        kube, "template", "dry", str(CHART), "-n", "default", "--kube-version",
        kube_version(kube), values=values,
    )  # fmt: skip
    result = kube.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=rendered, check=False
    )
    assert result.returncode == 0, result.stderr
    kinds = {line.split()[0].split("/")[0] for line in result.stdout.splitlines()}
    assert "deployment.apps" in kinds, result.stdout
    if values is None:
        assert "customresourcedefinition.apiextensions.k8s.io" in kinds, result.stdout
    if values is not None:
        monitors = {f"{k}.monitoring.coreos.com" for k in ("servicemonitor", "podmonitor")}
        assert {*monitors, "prometheusrule.monitoring.coreos.com", "service"} <= kinds


def test_gitops_example_model_deployment_is_accepted(kube: KwokCluster, installed: None) -> None:
    body = yaml.safe_load((ROOT / "examples" / "gitops" / "models" / "churn.yaml").read_text())
    body["metadata"]["namespace"] = OTHER_NS
    kubectl(
        kube, "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=json.dumps(body)
    )


def test_install_creates_the_operator_objects(kube: KwokCluster, installed: None) -> None:
    name = f"{CLUSTER_RELEASE}-modeldeploy"
    for kind in ("serviceaccount", "deployment"):
        kubectl(kube, "get", kind, name, "-n", CLUSTER_NS)
    for kind in ("clusterrole", "clusterrolebinding"):
        kubectl(kube, "get", kind, name, f"{name}-observer")
    release = json.loads(helm(kube, "status", CLUSTER_RELEASE, "-n", CLUSTER_NS, "-o", "json"))
    assert release["info"]["status"] == "deployed"


def test_operator_pod_is_admitted_as_restricted(kube: KwokCluster, installed: None) -> None:
    """The release namespaces enforce the restricted level: the pods exist, so they passed
    (two replicas, one leader, by default), and one PodDisruptionBudget keeps one of them."""
    for namespace, release in ((CLUSTER_NS, CLUSTER_RELEASE), (SYSTEM_NS, NS_RELEASE)):
        pods = kube.get_json(
            "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
        )["items"]
        assert len(pods) == 2, namespace
        deployment = kube.get_json("deployment", f"{release}-modeldeploy", "-n", namespace)
        assert deployment["status"].get("readyReplicas") == 2
        budget = kube.get_json("pdb", f"{release}-modeldeploy", "-n", namespace)
        assert budget["spec"]["minAvailable"] == 1


def test_namespaced_install_objects(kube: KwokCluster, installed: None) -> None:
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
    and Kopf's watches of it and its owned kinds), plus the Prometheus Secret and Gateway
    API routes it is granted."""
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
    for kind in OWNED_KINDS.values():
        calls += [
            (verb, kind.group, kind.plural, None, namespace)
            for verb in ("list", "watch", "create", "patch", "delete")
        ]
    for kind in READ_ONLY_KINDS.values():
        calls += [(verb, kind.group, kind.plural, None, namespace) for verb in ("list", "watch")]
    calls += [
        (verb, "gateway.networking.k8s.io", "httproutes", None, namespace)
        for verb in ("get", "list", "watch", "patch")
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
        ("get", "coordination.k8s.io", "leases", None, namespace),  # its own namespace only
        ("create", "", "serviceaccounts", "token", namespace),
        ("create", "rbac.authorization.k8s.io", "rolebindings", None, namespace),
        ("create", GROUP, PLURAL, None, namespace),
        ("delete", GROUP, PLURAL, None, namespace),
        ("update", GROUP, PLURAL, None, namespace),
        ("get", "apps", "deployments", None, namespace),  # read from the watch cache
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


def test_cluster_install_allows_every_operator_call(kube: KwokCluster, installed: None) -> None:
    user = service_account(CLUSTER_NS, CLUSTER_RELEASE)
    calls = operator_calls("any-namespace") + operator_calls(OTHER_NS) + KOPF_OBSERVERS
    assert refused(allowed(kube, user, calls), want=True) == []


def test_cluster_install_denies_what_the_operator_never_does(
    kube: KwokCluster, installed: None
) -> None:
    user = service_account(CLUSTER_NS, CLUSTER_RELEASE)
    assert refused(allowed(kube, user, forbidden_calls("any-namespace")), want=False) == []


def test_namespaced_install_allows_only_the_watched_namespaces(
    kube: KwokCluster, installed: None
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


def test_upgrade_applies_values_and_uninstall_removes_the_release(
    kube: KwokCluster, installed: None
) -> None:
    release = "mdu"
    namespace = "chart-upgrade"
    restricted_namespace(kube, namespace)
    values: Body = {
        **CLUSTER_VALUES,
        "rbac": {"aggregateToDefaultRoles": False},
        "watchNamespaces": [namespace],
    }
    helm(kube, "install", release, str(CHART), "-n", namespace, values=values)
    helm(
        kube, "upgrade", release, str(CHART), "-n", namespace, "--wait", "--timeout", "2m",
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
