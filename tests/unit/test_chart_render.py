"""The Helm chart, rendered: lint, values mapping, schema, least-privilege RBAC derived from
the operator's own API routes, restricted Pod Security, and the CRD copy.

Pure: `helm` renders locally (no cluster). The cached helm comes from `hack/testenv.sh env`.
"""

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import GROUP, PLURAL
from modeldeploy.crd import CRD_FILENAME, stale_crd
from modeldeploy.kube import READ_ONLY_ROUTES, ROUTES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modeldeploy"
RELEASE = "md"
NAMESPACE = "modeldeploy-system"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
DIGEST = "sha256:" + "ab" * 32
Body = dict[str, Any]

NAMESPACED_VALUES: Body = {
    "watchNamespaces": ["ml-a", "ml-b"],
    "logLevel": "debug",
    "logFormat": "json",
    "reconcileInterval": 2.5,
    "image": {"registry": "registry.example", "repository": "ml/modeldeploy", "digest": DIGEST},
    "prometheus": {
        "url": "http://prometheus.monitoring:9090",
        "auth": {"type": "bearer", "secretName": "prometheus-token"},
    },
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True, "labels": {"release": "kps"}},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
}


def helm_binary() -> str:
    """The cached helm of `hack/testenv.sh env`, else one on PATH."""
    cached = os.environ.get("MODELDEPLOY_HELM_BIN")
    found = str(Path(cached) / "helm") if cached else shutil.which("helm")
    if not found or not Path(found).exists():
        pytest.fail('helm not found: run `eval "$(hack/testenv.sh env)"` (or make test)')
    return found


def helm(*args: str, values: Body | None = None) -> subprocess.CompletedProcess[str]:
    command = [helm_binary(), *args]
    if values is not None:
        command += ["--values", "-"]
    return subprocess.run(
        command,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_RENDERED: dict[str, list[Body]] = {}


def render(values: Body | None = None, *, crds: bool = False) -> list[Body]:
    """The chart's objects for `values` (CRDs too with `crds`); each rendering runs helm once
    per session."""
    key = json.dumps([values, crds], sort_keys=True)
    if key not in _RENDERED:
        flags = ["--include-crds"] if crds else []
        result = helm(
            "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *flags, values=values
        )
        assert result.returncode == 0, result.stderr
        _RENDERED[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return copy.deepcopy(_RENDERED[key])


def one(objects: Iterable[Body], kind: str, name: str | None = None) -> Body:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def container(objects: list[Body]) -> Body:
    (operator,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    result: Body = operator
    return result


def env(objects: list[Body]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(objects).get("env", [])}


def verbs(rules: list[Body], group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in rules
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


# --- lint and render ------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, NAMESPACED_VALUES], ids=["default", "namespaced"])
def test_lint_strict_is_clean(values: Body | None) -> None:
    result = helm("lint", "--strict", str(CHART), values=values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout


def test_default_install_objects() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render())
    full = f"{RELEASE}-modeldeploy"
    assert kinds == sorted(
        [
            ("ServiceAccount", full),
            ("ClusterRole", full),
            ("ClusterRoleBinding", full),
            ("ClusterRole", f"{full}-observer"),
            ("ClusterRoleBinding", f"{full}-observer"),
            ("ClusterRole", f"{full}-view"),
            ("ClusterRole", f"{full}-edit"),
            ("Deployment", full),
        ]
    )


def test_every_namespaced_object_is_in_the_release_namespace() -> None:
    for obj in render(NAMESPACED_VALUES):
        if obj["kind"] in ("ServiceAccount", "Deployment", "Service", "ServiceMonitor"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_deployment_single_recreate_with_meaningful_probes() -> None:
    deployment = one(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    operator = container([deployment])
    assert operator["command"] == ["modeldeploy"]
    assert operator["args"] == ["operator", "--liveness=http://0.0.0.0:8080/healthz"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert operator["ports"] == [
        {"name": "health", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8090, "protocol": "TCP"},
    ]
    assert operator["image"] == f"ghcr.io/modeldeploy/operator:{APP_VERSION}"


def test_values_map_to_args_env_and_mounts() -> None:
    objects = render(NAMESPACED_VALUES)
    operator = container(objects)
    assert operator["image"] == f"registry.example/ml/modeldeploy@{DIGEST}"
    assert operator["args"] == [
        "operator",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--namespace=ml-a",
        "--namespace=ml-b",
        "--verbose",
    ]
    auth_dir = "/var/run/secrets/modeldeploy/prometheus"
    assert env(objects) == {
        "MODELDEPLOY_RECONCILE_INTERVAL": "2.5",
        "MODELDEPLOY_LOG_FORMAT": "json",
        "MODELDEPLOY_METRICS_PORT": "8090",
        "MODELDEPLOY_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
        "MODELDEPLOY_PROMETHEUS_AUTH_TYPE": "bearer",
        "MODELDEPLOY_PROMETHEUS_AUTH_DIR": auth_dir,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    mount = next(m for m in operator["volumeMounts"] if m["name"] == "prometheus-auth")
    assert mount == {"name": "prometheus-auth", "mountPath": auth_dir, "readOnly": True}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "prometheus-auth")
    assert volume["secret"]["secretName"] == "prometheus-token"


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        ({}, f"ghcr.io/modeldeploy/operator:{APP_VERSION}"),
        # A local registry: overriding the registry alone is enough (`make images` pushes the
        # appVersion tag too).
        ({"registry": "127.0.0.1:5000"}, f"127.0.0.1:5000/modeldeploy/operator:{APP_VERSION}"),
        ({"tag": "0.2.0-rc.1"}, "ghcr.io/modeldeploy/operator:0.2.0-rc.1"),
        ({"tag": "0.2.0", "digest": DIGEST}, f"ghcr.io/modeldeploy/operator@{DIGEST}"),
        (
            {"registry": "127.0.0.1:5000", "digest": DIGEST},
            f"127.0.0.1:5000/modeldeploy/operator@{DIGEST}",
        ),
        ({"registry": ""}, f"modeldeploy/operator:{APP_VERSION}"),
        ({"registry": None, "repository": "operator"}, f"operator:{APP_VERSION}"),
    ],
    ids=["defaults", "registry", "tag", "digest-wins", "registry+digest", "no-registry", "null"],
)
def test_image_reference_from_registry_repository_tag_digest(image: Body, reference: str) -> None:
    assert container(render({"image": image}))["image"] == reference


def test_metrics_port_off() -> None:
    values = {"metricsPort": 0, "monitoring": {"serviceMonitor": {"enabled": True}}}
    objects = render(values)
    assert [p["name"] for p in container(objects)["ports"]] == ["health"]
    assert env(objects)["MODELDEPLOY_METRICS_PORT"] == "0"
    assert not {"Service", "ServiceMonitor"} & {o["kind"] for o in objects}


def test_restricted_pod_security() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["enableServiceLinks"] is False
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert not any("hostPath" in v for v in pod["volumes"])


# --- values.schema.json -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"logFormat": "xml"}, "logFormat"),
        ({"logLevel": "trace"}, "logLevel"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"reconcileInterval": 0}, "reconcileInterval"),
        ({"prometheus": {"auth": {"type": "bearer"}}}, "secretName"),
        ({"prometheus": {"url": "prometheus:9090"}}, "url"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        # The old single-value form: the registry host belongs in image.registry.
        ({"image": {"repository": "ghcr.io/modeldeploy/operator"}}, "/image/repository"),
        ({"image": {"repository": "ModelDeploy"}}, "/image/repository"),
        ({"image": {"registry": "https://ghcr.io"}}, "/image/registry"),
        ({"image": {"registry": "ghcr.io/modeldeploy"}}, "/image/registry"),
        ({"image": {"tag": "0.1.0:latest"}}, "/image/tag"),
        ({"monitoring": {"prometheusRule": {"driftWindow": "one hour"}}}, "driftWindow"),
        ({"metricsPort": 80}, "metricsPort"),
        ({"replicas": 2}, "replicas"),  # not a value: one instance, always
    ],
)
def test_schema_rejects_bad_values(values: Body, complaint: str) -> None:
    result = helm("template", RELEASE, str(CHART), values=values)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_schema_is_valid_json_and_covers_every_top_level_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) == set(schema["properties"])
    assert schema["additionalProperties"] is False


# --- RBAC: exactly what the operator calls ------------------------------------------------

OWNED_VERBS = {"list", "create", "patch", "delete"}


def operator_rules(objects: list[Body], kind: str) -> list[Body]:
    rules: list[Body] = one(objects, kind, f"{RELEASE}-modeldeploy")["rules"]
    return rules


def test_rules_cover_every_kind_the_operator_writes() -> None:
    """Derived from modeldeploy.kube.ROUTES: a kind added there fails here until the chart
    grants it. Listing by label, server-side apply (create + patch), delete; never watch.
    What it only reads (READ_ONLY_ROUTES: pods) is get/list/watch, never a write."""
    rules = operator_rules(render(), "ClusterRole")
    for kind, (api_version, _, plural) in ROUTES.items():
        group = api_version.rpartition("/")[0]
        assert verbs(rules, group, plural) == OWNED_VERBS, kind
    for kind, (api_version, _, plural) in READ_ONLY_ROUTES.items():
        group = api_version.rpartition("/")[0]
        assert verbs(rules, group, plural) == {"get", "list", "watch"}, kind
    for subresource in ("status", "exec", "eviction", "log", "ephemeralcontainers"):
        assert verbs(rules, "", f"pods/{subresource}") == set(), subresource
    assert verbs(rules, GROUP, PLURAL) == {"get", "list", "watch", "patch"}
    assert verbs(rules, GROUP, f"{PLURAL}/status") == {"update"}
    assert verbs(rules, GROUP, f"{PLURAL}/finalizers") == {"update"}
    assert verbs(rules, "", "events") == {"create"}
    assert verbs(rules, "", "secrets") == {"get"}
    assert verbs(rules, "gateway.networking.k8s.io", "httproutes") == {
        "get", "list", "create", "patch", "delete",
    }  # fmt: skip


def test_no_wildcards_and_nothing_dangerous() -> None:
    objects = render()
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert not {"pods/exec", "nodes", "clusterroles", "roles"} & set(rule["resources"])
    rules = operator_rules(objects, "ClusterRole")
    assert verbs(rules, "", "secrets") == {"get"}  # never list: no bulk read of Secrets
    assert verbs(rules, "apiextensions.k8s.io", "customresourcedefinitions") == set()


def test_toggles_remove_secrets_gateway_and_observers() -> None:
    values = {"rbac": {"readSecrets": False, "gatewayAPI": False, "kopfObservers": False}}
    objects = render(values)
    rules = operator_rules(objects, "ClusterRole")
    assert verbs(rules, "", "secrets") == set()
    assert verbs(rules, "gateway.networking.k8s.io", "httproutes") == set()
    assert not [o for o in objects if o["metadata"]["name"].endswith("-observer")]


def test_namespaced_mode_has_roles_only_in_watched_namespaces() -> None:
    objects = render(NAMESPACED_VALUES)
    roles = [o for o in objects if o["kind"] == "Role"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-a", "ml-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml-a", "ml-b"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"{RELEASE}-modeldeploy", "namespace": NAMESPACE}
        ]
    assert roles[0]["rules"] == operator_rules(render(), "ClusterRole")
    cluster_roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
    # Cluster-wide: only Kopf's read-only observers and the aggregated roles for people.
    assert sorted(cluster_roles) == [
        f"{RELEASE}-modeldeploy-{s}" for s in ("edit", "observer", "view")
    ]
    observer = cluster_roles[f"{RELEASE}-modeldeploy-observer"]["rules"]
    assert verbs(observer, "", "namespaces") == {"list", "watch"}
    assert verbs(observer, "apiextensions.k8s.io", "customresourcedefinitions") == {"list", "watch"}


def test_aggregated_roles_for_people() -> None:
    objects = render()
    view = one(objects, "ClusterRole", f"{RELEASE}-modeldeploy-view")
    edit = one(objects, "ClusterRole", f"{RELEASE}-modeldeploy-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    assert verbs(view["rules"], GROUP, PLURAL) == {"get", "list", "watch"}


# --- CRDs --------------------------------------------------------------------------------


def test_chart_crd_is_the_generated_one() -> None:
    """charts/modeldeploy/crds/ is a copy (Helm packages symlinks poorly). Regenerate both
    with `modeldeploy crd && modeldeploy crd --output charts/modeldeploy/crds`."""
    chart_crd = CHART / "crds" / CRD_FILENAME
    assert chart_crd.read_bytes() == (ROOT / "crds" / CRD_FILENAME).read_bytes(), (
        "the chart's CRD differs from crds/: run `modeldeploy crd --output charts/modeldeploy/crds`"
    )
    assert stale_crd(CHART / "crds") is None
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [CRD_FILENAME]


def test_crds_render_with_include_crds() -> None:
    crds = [o for o in render(crds=True) if o["kind"] == "CustomResourceDefinition"]
    assert [c["metadata"]["name"] for c in crds] == [f"{PLURAL}.{GROUP}"]
