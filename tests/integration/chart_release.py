"""The chart installed with helm on the session cluster, and the credentials of its
ServiceAccount from the TokenRequest API (what the kubelet mounts into the operator's pod).

    with installed_release(kube, "mdo", "chart-op-system", "chart-op-a") as release:
        config = token_kubeconfig(kube, release.token(kube), "chart-op-a", path)
        assert whoami(kube, config) == release.username

Releases share one cluster: their cluster-scoped ClusterRoles are named after the release, so
every test module needs a release name of its own. The session's CRD is the repository's
crds/ (applied by `ensure_crd`), so these releases leave it alone (`crds.install=false`, as
every release but one does in a cluster); test_chart_oci.py tests the chart's own.
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
from operator_harness import ensure_crd, kubectl

from modeldeploy.devenv.cluster import KwokCluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modeldeploy"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# What a ServiceAccount-token client must never see in the operator's log.
# A bare "403" would also match log timestamps' milliseconds (e.g. 23:32:37,403).
# A 403 as a status, not inside a number or an id (a uid such as ...-2831f403e5ff matched).
DENIAL = re.compile(r"(?<![\w,.:-])403(?![\w-])|[Ff]orbidden|Not enough permissions")
Body = dict[str, Any]


def denials(log: str) -> list[str]:
    return [line for line in log.splitlines() if DENIAL.search(line)]


def helm_command(kube: KwokCluster, *args: str) -> list[str]:
    return [str(kube.tools.helm), "--kubeconfig", str(kube.kubeconfig), *args]


def helm(kube: KwokCluster, *args: str, values: Body | None = None) -> str:
    """helm on the session cluster, `values` given as a values file; fails with its error
    message."""
    command = helm_command(kube, *args)
    if values is not None:
        command += ["--values", "-"]
    result = subprocess.run(
        command, cwd=ROOT, input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def release_values(watched: str | None, flags: Sequence[str]) -> list[str]:
    """The values of a release that watches one namespace (None: every namespace) and leaves
    the CRD alone, plus `flags` (`--set k=v`...)."""
    watching = ["--set", f"watchNamespaces={{{watched}}}"] if watched is not None else []
    return ["--set", "crds.install=false", *watching, *flags]


def kube_version(kube: KwokCluster) -> str:
    """The apiserver's version, e.g. v1.36.3: what `helm template` must be told (helm
    install asks the apiserver itself)."""
    answer = json.loads(kubectl(kube, "version", "-o", "json"))
    return str(answer["serverVersion"]["gitVersion"])


def rendered(
    kube: KwokCluster, release: str, namespace: str, watched: str | None, *flags: str
) -> list[Body]:
    """`helm template` of the release `installed_release` would install with these flags."""
    out = helm(
        kube, "template", release, str(CHART), "-n", namespace, "--kube-version",
        kube_version(kube), *release_values(watched, flags),
    )  # fmt: skip
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
    """A namespace whose pods must meet the restricted Pod Security level."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": RESTRICTED},
    }
    kubectl(kube, "apply", "-f", "-", input=json.dumps(body))


def uninstall(kube: KwokCluster, release: str, namespace: str) -> None:
    """`helm uninstall` that never fails (cleanup: the release may be gone already)."""
    subprocess.run(
        helm_command(kube, "uninstall", release, "-n", namespace, "--wait", "--timeout", "60s"),
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip


@contextmanager
def installed_release(
    kube: KwokCluster, release: str, namespace: str, watched: str | None, *flags: str
) -> Iterator[ChartRelease]:
    """The chart installed as `release` in `namespace`, watching `watched` (None: every
    namespace; each enforcing the restricted level) with the session's CRD; uninstalled
    afterwards."""
    ensure_crd(kube)
    for name in (namespace, *([watched] if watched is not None else [])):
        restricted_namespace(kube, name)
    helm(
        kube, "install", release, str(CHART), "-n", namespace, *release_values(watched, flags),
        "--wait", "--timeout", "2m",
    )  # fmt: skip
    try:
        yield ChartRelease(release, namespace)
    finally:
        uninstall(kube, release, namespace)


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
