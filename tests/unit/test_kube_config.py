"""Where the operator's API client gets its cluster and credentials: an explicit kubeconfig,
else the in-cluster service account, else $KUBECONFIG; the order Kopf logs in with, so the
watches and the writes act as one identity.

Only files are read: building the client dials nothing.
"""

from pathlib import Path

import pytest
import yaml
from kubernetes.config import incluster_config, kube_config

from modeldeploy.kube import Kube

pytestmark = pytest.mark.unit

IN_CLUSTER_SERVER = "https://127.0.0.1:6443"
KUBECONFIG_SERVER = "https://127.0.0.1:7443"


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "kubeconfig-token"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def default_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$KUBECONFIG as the kubernetes client read it at import."""
    path = write_kubeconfig(tmp_path / "config", KUBECONFIG_SERVER)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


@pytest.fixture
def service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the kubelet gives a pod: token and CA files, the apiserver's host and port."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("service-account-token")
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")


@pytest.fixture
def outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


@pytest.mark.usefixtures("service_account", "default_kubeconfig")
def test_in_a_pod_the_service_account_wins_over_kubeconfig() -> None:
    kube = Kube()
    assert (kube.server, kube.source) == (IN_CLUSTER_SERVER, "in-cluster service account")


@pytest.mark.usefixtures("outside_a_pod", "default_kubeconfig")
def test_outside_a_pod_the_default_kubeconfig() -> None:
    kube = Kube()
    assert (kube.server, kube.source) == (KUBECONFIG_SERVER, "kubeconfig")


@pytest.mark.usefixtures("service_account")
def test_an_explicit_kubeconfig_always_wins(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "explicit", KUBECONFIG_SERVER)
    kube = Kube(str(path))
    assert (kube.server, kube.source) == (KUBECONFIG_SERVER, f"kubeconfig {path}")
