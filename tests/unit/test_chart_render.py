"""The Helm chart, rendered: lint, values mapping, schema, least-privilege RBAC derived from
the operator's own API routes, restricted Pod Security, the CRD template and its copy, and the
minimum Kubernetes version.

Pure: `helm` renders locally (no cluster), for the oldest Kubernetes the chart supports
(`--kube-version`: a helm built by `go install` would otherwise assume v1.20). The cached
helm comes from `hack/testenv.sh env`.
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
import typer
import yaml

from modeldeploy.api import GROUP, PLURAL
from modeldeploy.cli import app
from modeldeploy.crd import CRD_FILENAME, render_crd, stale_crd
from modeldeploy.resources.kinds import OWNED_KINDS, READ_ONLY_KINDS
from modeldeploy.watchcache import OWNED

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modeldeploy"
RELEASE = "md"
NAMESPACE = "modeldeploy-system"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
DIGEST = "sha256:" + "ab" * 32
MIN_KUBE_VERSION = "1.30.0"
Body = dict[str, Any]

NAMESPACED_VALUES: Body = {
    "watchNamespaces": ["ml-a", "ml-b"],
    "logLevel": "debug",
    "logFormat": "json",
    "reconcileInterval": 2.5,
    "resync": 600,
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


def helm(
    *args: str, values: Body | None = None, kube_version: str = MIN_KUBE_VERSION
) -> subprocess.CompletedProcess[str]:
    """helm template or lint (`args`) for a cluster of `kube_version`."""
    command = [helm_binary(), *args, "--kube-version", kube_version]
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


def render(values: Body | None = None) -> list[Body]:
    """The chart's objects for `values`; each rendering runs helm once per session."""
    key = json.dumps(values, sort_keys=True)
    if key not in _RENDERED:
        result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values)
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


LEASE_ENV = {
    "MODELDEPLOY_LEADER_ELECT": "true",
    "MODELDEPLOY_LEASE_NAME": f"{RELEASE}-modeldeploy",
    "MODELDEPLOY_LEASE_DURATION": "10",
    "MODELDEPLOY_LEASE_RENEW_DEADLINE": "7",
    "MODELDEPLOY_LEASE_RETRY_PERIOD": "2",
    "POD_NAMESPACE": "",  # from the downward API
    "POD_NAME": "",
}


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
            ("PodDisruptionBudget", full),
            ("Role", f"{full}-leader"),
            ("RoleBinding", f"{full}-leader"),
            ("CustomResourceDefinition", f"{PLURAL}.{GROUP}"),
        ]
    )


def test_every_namespaced_object_is_in_the_release_namespace() -> None:
    for obj in render(NAMESPACED_VALUES):
        if obj["kind"] in ("ServiceAccount", "Deployment", "Service", "ServiceMonitor"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_deployment_two_replicas_one_leader_with_meaningful_probes() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spread[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    operator = container([deployment])
    assert operator["command"] == ["modeldeploy"]
    assert operator["args"] == ["operator", "--liveness=http://0.0.0.0:8080/healthz"]
    rendered = env(objects)
    assert rendered["MODELDEPLOY_LEADER_ELECT"] == "true"
    assert rendered["MODELDEPLOY_LEASE_NAME"] == f"{RELEASE}-modeldeploy"
    fields = {e["name"]: e.get("valueFrom") for e in operator["env"]}
    assert fields["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert fields["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert operator["ports"] == [
        {"name": "health", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8090, "protocol": "TCP"},
    ]
    assert operator["image"] == f"ghcr.io/modeldeploy/operator:{APP_VERSION}"
    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"] == deployment["spec"]["selector"]
    (lease_role,) = [o for o in objects if o["kind"] == "Role"]
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [f"{RELEASE}-modeldeploy"],
            "verbs": ["get", "update"],
        },
    ]


def test_one_replica_without_election_recreates_and_has_no_lease_or_budget() -> None:
    objects = render({"replicas": 1, "leaderElection": {"enabled": False}})
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    assert "MODELDEPLOY_LEADER_ELECT" not in env(objects)
    assert not [o for o in objects if o["kind"] in ("PodDisruptionBudget", "Role")]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"leaderElection": {"enabled": False}}, "replicas > 1 needs leaderElection"),
        ({"leaderElection": {"renewDeadline": 10}}, "retryPeriod < renewDeadline < leaseDuration"),
    ],
)
def test_two_writers_are_refused(values: Body, complaint: str) -> None:
    result = helm("template", RELEASE, str(CHART), values=values)
    assert result.returncode != 0
    assert complaint in result.stderr


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
        "MODELDEPLOY_RESYNC": "600",
        "MODELDEPLOY_RECONCILE_WORKERS": "8",
        "MODELDEPLOY_ALLOW_PRIVILEGED_MODELS": "false",
        "MODELDEPLOY_PROXY_IMAGE": f"registry.example/ml/modeldeploy@{DIGEST}",
        "MODELDEPLOY_LOG_FORMAT": "json",
        "MODELDEPLOY_METRICS_PORT": "8090",
        "MODELDEPLOY_METRICS_ADDRESS": "0.0.0.0",
        "MODELDEPLOY_WATCH_HTTP_ROUTES": "true",
        "MODELDEPLOY_ANALYSIS_WORKERS": "8",
        "MODELDEPLOY_PROMETHEUS_NAMESPACE_LABEL": "namespace",
        "MODELDEPLOY_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
        "MODELDEPLOY_PROMETHEUS_AUTH_TYPE": "bearer",
        "MODELDEPLOY_PROMETHEUS_AUTH_DIR": auth_dir,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        **LEASE_ENV,
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


def test_tracing_sets_the_otlp_endpoint_and_service_name() -> None:
    assert not {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"} & set(env(render()))
    endpoint = "http://otel-collector.observability:4318"
    rendered = env(render({"tracing": {"otlpEndpoint": endpoint}}))
    assert rendered["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    assert rendered["OTEL_SERVICE_NAME"] == "modeldeploy-operator"
    named = {"tracing": {"otlpEndpoint": endpoint, "serviceName": "operator-eu"}}
    assert env(render(named))["OTEL_SERVICE_NAME"] == "operator-eu"


EXTRAS: Body = {
    "extraArgs": ["--prometheus-namespace-label=kubernetes_namespace"],
    "extraEnv": [
        {"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"},
        {"name": "TEAM", "valueFrom": {"configMapKeyRef": {"name": "team", "key": "name"}}},
    ],
    "extraVolumes": [{"name": "trust", "configMap": {"name": "corporate-ca"}}],
    "extraVolumeMounts": [{"name": "trust", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
        },
    ],
    "priorityClassName": "system-cluster-critical",
    "metricsAddress": "::",
    "prometheus": {"namespaceLabel": "kubernetes_namespace"},
}


def test_extra_args_env_volumes_and_scheduling() -> None:
    objects = render(EXTRAS)
    operator = container(objects)
    assert operator["args"][-1] == "--prometheus-namespace-label=kubernetes_namespace"
    assert operator["env"][-2:] == EXTRAS["extraEnv"]
    assert env(objects)["MODELDEPLOY_METRICS_ADDRESS"] == "::"
    assert env(objects)["MODELDEPLOY_PROMETHEUS_NAMESPACE_LABEL"] == "kubernetes_namespace"
    assert operator["volumeMounts"][-1] == EXTRAS["extraVolumeMounts"][0]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"][-1] == EXTRAS["extraVolumes"][0]
    assert pod["topologySpreadConstraints"] == EXTRAS["topologySpreadConstraints"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    # Nothing of the above by default.
    default_pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert not {"topologySpreadConstraints", "priorityClassName"} & set(default_pod)
    assert [v["name"] for v in default_pod["volumes"]] == ["tmp"]


def test_log_level_and_format_reach_the_operator() -> None:
    debug = render({"logLevel": "debug", "logFormat": "json"})
    assert "--verbose" in container(debug)["args"]
    assert env(debug)["MODELDEPLOY_LOG_FORMAT"] == "json"
    assert "--verbose" not in container(render())["args"]
    assert env(render())["MODELDEPLOY_LOG_FORMAT"] == "plain"


CA_DIR = "/var/run/secrets/modeldeploy/prometheus-ca"
CA_ITEMS = [{"key": "ca.crt", "path": "ca.crt"}]


@pytest.mark.parametrize(
    ("source", "volume"),
    [
        ("configMap", {"configMap": {"name": "prometheus-ca", "items": CA_ITEMS}}),
        (
            "secret",
            {"secret": {"secretName": "prometheus-ca", "items": CA_ITEMS, "defaultMode": 0o440}},
        ),
    ],
)
def test_prometheus_ca_bundle_is_mounted_and_named(source: str, volume: Body) -> None:
    values = {
        "prometheus": {
            "url": "https://prometheus.monitoring:9090",
            "tls": {"caBundle": {source: "prometheus-ca"}},
        }
    }
    objects = render(values)
    assert env(objects)["MODELDEPLOY_PROMETHEUS_CA_FILE"] == f"{CA_DIR}/ca.crt"
    assert "MODELDEPLOY_PROMETHEUS_INSECURE_SKIP_VERIFY" not in env(objects)
    mount = {"name": "prometheus-ca", "mountPath": CA_DIR, "readOnly": True}
    assert mount in container(objects)["volumeMounts"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "prometheus-ca", **volume} in pod["volumes"]


def test_prometheus_tls_verification_off_on_request() -> None:
    objects = render({"prometheus": {"tls": {"insecureSkipVerify": True}}})
    assert env(objects)["MODELDEPLOY_PROMETHEUS_INSECURE_SKIP_VERIFY"] == "true"
    assert "MODELDEPLOY_PROMETHEUS_CA_FILE" not in env(objects)
    tls_env = {"MODELDEPLOY_PROMETHEUS_CA_FILE", "MODELDEPLOY_PROMETHEUS_INSECURE_SKIP_VERIFY"}
    assert not tls_env & set(env(render()))


# Set by the chart as an argument (not an env var), and the value that sets it.
FLAGS_AS_ARGS = {
    "namespace": "watchNamespaces",
    "liveness": "healthPort",
    "verbose": "logLevel",
    "prometheus_endpoint": "prometheus.endpoints",
    "webhook_host": "webhooks.allowedHosts",
}


def test_every_operator_flag_is_reachable_from_values() -> None:
    """Each option of `modeldeploy operator` is set by the chart: its env var, or the
    argument a value renders. An option added to the command fails here until the chart
    maps it (extraArgs is the escape hatch, not the mapping)."""
    command = typer.main.get_command(app).commands["operator"]  # type: ignore[attr-defined]
    values = {
        "watchNamespaces": ["ml"],
        "logLevel": "debug",
        "prometheus": {
            "url": "https://prometheus.monitoring:9090",
            "endpoints": {"team-a": "http://prometheus.team-a:9090"},
            "auth": {"type": "bearer", "secretName": "prometheus-token"},
            "tls": {"caBundle": {"configMap": "prometheus-ca"}},
        },
        "webhooks": {"allowedHosts": ["hooks.slack.com"]},
    }
    objects = render(values)
    rendered_env, args = env(objects), container(objects)["args"]
    skipping = env(render({"prometheus": {"tls": {"insecureSkipVerify": True}}}))
    unmapped = []
    for option in command.params:
        if option.name == "help":
            continue
        if option.envvar:
            if option.envvar not in {**rendered_env, **skipping}:
                unmapped.append(f"{option.name}: env {option.envvar}")
        elif option.name in FLAGS_AS_ARGS:
            flag = f"--{option.name.replace('_', '-')}"
            if not any(a == flag or a.startswith(f"{flag}=") for a in args):
                unmapped.append(f"{option.name}: {flag} ({FLAGS_AS_ARGS[option.name]})")
        else:
            unmapped.append(f"{option.name}: neither an env var nor a mapped argument")
    assert not unmapped, unmapped


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
        ({"replicas": 0}, "replicas"),
        ({"leaderElection": {"leaseDuration": "10s"}}, "leaseDuration"),
        ({"crds": {"install": "yes"}}, "/crds/install"),
        ({"extraArgs": ["verbose"]}, "/extraArgs/0"),
        ({"extraEnv": [{"value": "x"}]}, "missing property 'name'"),
        ({"extraEnv": [{"name": "A", "valueFrom": {}, "secret": "x"}]}, "/extraEnv/0"),
        ({"extraVolumes": [{"emptyDir": {}}]}, "/extraVolumes/0"),
        ({"extraVolumeMounts": [{"name": "trust"}]}, "missing property 'mountPath'"),
        ({"topologySpreadConstraints": [{"maxSkew": 1}]}, "topologyKey"),
        ({"priorityClassName": "Critical_Pods"}, "/priorityClassName"),
        ({"metricsAddress": ""}, "/metricsAddress"),
        ({"tracing": {"otlpEndpoint": "collector:4318"}}, "/tracing/otlpEndpoint"),
        ({"tracing": {"endpoint": "http://collector:4318"}}, "'endpoint' not allowed"),
        ({"prometheus": {"namespaceLabel": "k8s-namespace"}}, "/prometheus/namespaceLabel"),
        (
            {"prometheus": {"tls": {"caBundle": {"configMap": "ca", "secret": "ca"}}}},
            "/prometheus/tls/caBundle/secret",
        ),
        (
            {"prometheus": {"tls": {"caBundle": {"secret": "ca"}, "insecureSkipVerify": True}}},
            "/prometheus/tls/caBundle/secret",
        ),
        ({"prometheus": {"tls": {"caBundle": {"key": "../ca"}}}}, "/prometheus/tls/caBundle/key"),
        ({"prometheus": {"tls": {"verify": False}}}, "'verify' not allowed"),
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

OWNED_VERBS = {"list", "watch", "create", "patch", "delete"}


def operator_rules(objects: list[Body], kind: str) -> list[Body]:
    rules: list[Body] = one(objects, kind, f"{RELEASE}-modeldeploy")["rules"]
    return rules


def test_rules_cover_every_kind_the_operator_writes() -> None:
    """Derived from modeldeploy.resources.kinds and modeldeploy.watchcache.OWNED: a kind
    added there fails here until the chart grants it. Listing and watching by label (the
    cache), server-side apply (create + patch), delete. What it only reads (READ_ONLY_KINDS:
    pods) is list/watch, never a write."""
    rules = operator_rules(render(), "ClusterRole")
    for kind in OWNED_KINDS.values():
        assert verbs(rules, kind.group, kind.plural) == OWNED_VERBS, kind.kind
    for kind in READ_ONLY_KINDS.values():
        assert verbs(rules, kind.group, kind.plural) == {"list", "watch"}, kind.kind
    for watched in OWNED:
        assert {"list", "watch"} <= verbs(rules, watched.group, watched.plural), watched.kind
    for subresource in ("status", "exec", "eviction", "log", "ephemeralcontainers"):
        assert verbs(rules, "", f"pods/{subresource}") == set(), subresource
    assert verbs(rules, GROUP, PLURAL) == {"get", "list", "watch", "patch"}
    assert verbs(rules, GROUP, f"{PLURAL}/status") == {"update"}
    assert verbs(rules, GROUP, f"{PLURAL}/finalizers") == {"update"}
    assert verbs(rules, "", "events") == {"create"}
    assert verbs(rules, "", "secrets") == {"get"}
    # The user's route: read, watched and patched, never created or deleted.
    assert verbs(rules, "gateway.networking.k8s.io", "httproutes") == {
        "get", "list", "watch", "patch"
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
    assert env(objects)["MODELDEPLOY_WATCH_HTTP_ROUTES"] == "false"  # nothing to watch with
    assert not [o for o in objects if o["metadata"]["name"].endswith("-observer")]


def test_namespaced_mode_has_roles_only_in_watched_namespaces() -> None:
    objects = render(NAMESPACED_VALUES)
    roles = [o for o in objects if o["kind"] == "Role"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-a", "ml-b", NAMESPACE]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml-a", "ml-b", NAMESPACE]
    roles = [r for r in roles if not r["metadata"]["name"].endswith("-leader")]
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


# --- CRD --------------------------------------------------------------------------------

CHART_CRD = CHART / "files" / CRD_FILENAME


def test_chart_crd_is_the_generated_one() -> None:
    """files/ holds a copy of crds/ (a chart cannot read outside itself, and Helm packages
    symlinks poorly). Regenerate both with
    `modeldeploy crd && modeldeploy crd --output charts/modeldeploy/files`."""
    assert CHART_CRD.read_bytes() == (ROOT / "crds" / CRD_FILENAME).read_bytes(), (
        "the chart's CRD differs from crds/: "
        "run `modeldeploy crd --output charts/modeldeploy/files`"
    )
    assert stale_crd(CHART_CRD.parent) is None
    # No crds/: Helm would install that copy once, never upgrade it, and clash with the
    # template's.
    assert not (CHART / "crds").exists()


def rendered_crd(values: Body | None = None) -> Body:
    return one(render(values), "CustomResourceDefinition")


def test_crd_template_is_the_generated_crd_with_labels_and_keep() -> None:
    crd = rendered_crd()
    generated = render_crd()
    metadata = crd.pop("metadata")
    assert crd == {k: v for k, v in generated.items() if k != "metadata"}
    assert metadata["name"] == generated["metadata"]["name"]
    assert generated["metadata"]["labels"].items() <= metadata["labels"].items()
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    # Uninstalling must not delete every ModelDeployment: Helm, and Argo CD (prune, app
    # deletion) leave it alone.
    assert metadata["annotations"] == {
        "helm.sh/resource-policy": "keep",
        "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
    }


def test_crd_is_left_out_or_not_kept_on_request() -> None:
    assert "annotations" not in rendered_crd({"crds": {"keep": False}})["metadata"]
    kinds = {o["kind"] for o in render({"crds": {"install": False}})}
    assert "CustomResourceDefinition" not in kinds
    assert "Deployment" in kinds


# --- minimum Kubernetes version ---------------------------------------------------------


@pytest.mark.parametrize("version", ["1.29.9", "v1.29.4-eks.1", "1.20.0"])
def test_clusters_older_than_1_30_are_refused_with_the_reason(version: str) -> None:
    result = helm("template", RELEASE, str(CHART), kube_version=version)
    assert result.returncode != 0
    assert "modeldeploy needs Kubernetes 1.30 or later" in result.stderr, result.stderr
    assert "CEL" in result.stderr
    # The release part (-eks.1) is Helm's to drop.
    assert f"this cluster is v{version.removeprefix('v').split('-')[0]}" in result.stderr
    assert "--kube-version" in result.stderr  # what `helm template` needs


@pytest.mark.parametrize("version", ["1.30.0", "v1.30.2-gke.1587003", "1.36.3"])
def test_clusters_from_1_30_render(version: str) -> None:
    result = helm("template", RELEASE, str(CHART), kube_version=version)
    assert result.returncode == 0, result.stderr
