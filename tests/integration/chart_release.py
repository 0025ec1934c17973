"""The chart installed with helm on the session cluster, and the credentials of its
ServiceAccount from the TokenRequest API (what the kubelet mounts into the operator's pod).

    with installed_release(kube, "mdo", "chart-op-system", "chart-op-a") as release:
        config = token_kubeconfig(kube, release.token(kube), "chart-op-a", path)
        assert whoami(kube, config) == release.username

Releases share one cluster: their cluster-scoped ClusterRoles are named after the release, so
every test module needs a release name of its own.
"""

import json
import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from operator_harness import kubectl

from modeldeploy.devenv.cluster import KwokCluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modeldeploy"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
# What a ServiceAccount-token client must never see in the operator's log.
# A bare "403" would also match log timestamps' milliseconds (e.g. 23:32:37,403).
DENIAL = re.compile(r"(?<![\d,.:])403(?!\d)|[Ff]orbidden|Not enough permissions")
Body = dict[str, Any]


def denials(log: str) -> list[str]:
    return [line for line in log.splitlines() if DENIAL.search(line)]


def helm_command(kube: KwokCluster, *args: str) -> list[str]:
    return [str(kube.tools.helm), "--kubeconfig", str(kube.kubeconfig), *args]


def helm(kube: KwokCluster, *args: str) -> str:
    """helm on the session cluster; fails with its error message."""
    result = subprocess.run(
        helm_command(kube, *args), cwd=ROOT, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def release_values(watched: str, flags: Sequence[str]) -> list[str]:
    """The values of a release that watches one namespace, plus `flags` (`--set k=v`...)."""
    return ["--set", f"watchNamespaces={{{watched}}}", *flags]


def rendered(
    kube: KwokCluster, release: str, namespace: str, watched: str, *flags: str
) -> list[Body]:
    """`helm template` of the release `installed_release` would install with these flags."""
    out = helm(
        kube, "template", release, str(CHART), "-n", namespace, *release_values(watched, flags)
    )
    return [doc for doc in yaml.safe_load_all(out) if doc]


@dataclass(frozen=True)
class ChartRelease:
    name: str
    namespace: str

    @property
    def service_account(self) -> str:
        return f"{self.name}-modeldeploy"  # the chart's full name for a release without it

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def token(self, kube: KwokCluster, duration: str = "1h") -> str:
        return kubectl(
            kube, "create", "token", self.service_account, "-n", self.namespace,
            f"--duration={duration}",
        ).strip()  # fmt: skip


def restricted_namespace(kube: KwokCluster, name: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": RESTRICTED},
    }
    kubectl(kube, "apply", "-f", "-", input=json.dumps(body))


@contextmanager
def installed_release(
    kube: KwokCluster, release: str, namespace: str, watched: str, *flags: str
) -> Iterator[ChartRelease]:
    """The chart installed as `release` in `namespace`, watching `watched` (both enforcing the
    restricted level); uninstalled afterwards."""
    for name in (namespace, watched):
        restricted_namespace(kube, name)
    helm(
        kube, "install", release, str(CHART), "-n", namespace, *release_values(watched, flags),
        "--wait", "--timeout", "2m",
    )  # fmt: skip
    try:
        yield ChartRelease(release, namespace)
    finally:
        subprocess.run(
            helm_command(kube, "uninstall", release, "-n", namespace, "--timeout", "60s"),
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip


def token_kubeconfig(kube: KwokCluster, token: str, namespace: str, path: Path) -> Path:
    """The test cluster's kubeconfig with `token` as its only user."""
    config = yaml.safe_load(kube.kubeconfig.read_text())
    context = config["contexts"][0]["context"]
    context["user"] = "chart-service-account"
    config["contexts"] = [{"name": "sa", "context": {**context, "namespace": namespace}}]
    config["current-context"] = "sa"
    config["users"] = [{"name": "chart-service-account", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def whoami(kube: KwokCluster, kubeconfig: Path) -> str:
    """The user the apiserver authenticates `kubeconfig` as."""
    answer = kubectl(kube, "--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json")
    return str(json.loads(answer)["status"]["userInfo"]["username"])
