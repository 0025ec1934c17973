"""The chart as an OCI artifact, and the upgrade path of its CRD, on the session cluster.

`helm package` and `helm push` put two versions of the chart into the session's registry
(plain HTTP on 127.0.0.1): A, the chart as it is, and B, a copy whose CRD has one more
printer column. A release installed from `oci://.../charts/modeldeploy --version A` and
upgraded to B changes the CRD in the cluster; a ModelDeployment created under A keeps its
spec; `helm uninstall` keeps the CRD and the object (helm.sh/resource-policy: keep).

The session's CRD exists before (the repository's crds/, applied by other modules without
Helm's ownership), as on a cluster upgraded from a chart that still had crds/: the release
adopts it with --take-ownership, the path the chart README documents. Afterwards the
session's CRD is put back (`ensure_crd`).
"""

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_release import CHART, helm, restricted_namespace, uninstall
from operator_harness import ClusterReader, apply_object, ensure_crd, kubectl, model_deployment

from modeldeploy.api import GROUP, PLURAL
from modeldeploy.crd import CRD_FILENAME, CRD_NAME
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.registry import RegistryServer

pytestmark = pytest.mark.integration

RELEASE = "mdoci"  # cluster-scoped roles are named after it: unique among the test modules
SYSTEM_NS = "chart-oci-system"
MODELS_NS = "chart-oci-models"
NAME = "churn"
VERSION_A = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["version"])
# Only version B has it: its CRD change.
NEW_COLUMN = {
    "name": "Model",
    "type": "string",
    "jsonPath": ".spec.model.name",
    "description": "Model name",
    "priority": 1,
}
Body = dict[str, Any]


def next_version(version: str) -> str:
    """A later version than `version` that no release will ever have: its next patch, as a
    pre-release of this test."""
    release = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    assert release is not None, version
    major, minor, patch = release.groups()
    return f"{major}.{minor}.{int(patch) + 1}-crd-upgrade-test"


def chart_with_new_column(workdir: Path, version: str) -> Path:
    """A copy of the chart as `version`, its CRD with NEW_COLUMN added."""
    chart = workdir / "modeldeploy"
    shutil.copytree(CHART, chart)
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    (chart / "Chart.yaml").write_text(yaml.safe_dump({**metadata, "version": version}))
    crd_file = chart / "files" / CRD_FILENAME
    crd = yaml.safe_load(crd_file.read_text())
    (served,) = crd["spec"]["versions"]
    served["additionalPrinterColumns"].append(NEW_COLUMN)
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


@dataclass(frozen=True)
class Published:
    repository: str
    """oci://127.0.0.1:PORT/charts/modeldeploy"""
    version_b: str


@pytest.fixture(scope="module")
def published(
    kube: KwokCluster, registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory
) -> Published:
    workdir = Path(tmp_path_factory.mktemp("chart-oci"))
    version_b = next_version(VERSION_A)
    for chart in (CHART, chart_with_new_column(workdir, version_b)):
        helm(kube, "package", str(chart), "--destination", str(workdir))
    for version in (VERSION_A, version_b):
        package = workdir / f"modeldeploy-{version}.tgz"
        helm(kube, "push", str(package), f"oci://{registry.host}/charts", "--plain-http")
    return Published(f"oci://{registry.host}/charts/modeldeploy", version_b)


def crd_columns(kube: KwokCluster) -> list[str]:
    (served,) = kube.get_json("crd", CRD_NAME)["spec"]["versions"]
    return [column["name"] for column in served["additionalPrinterColumns"]]


@dataclass(frozen=True)
class Lifecycle:
    chart_installed: str
    """The chart of the release as installed, `modeldeploy-<version>`."""
    owner_after_install: str | None
    """meta.helm.sh/release-name of the CRD once installed."""
    columns: dict[str, list[str]]
    """The CRD's printer columns: before, after the install of A, the upgrade to B, the
    uninstall, and once the session's CRD is applied again."""
    specs: dict[str, Body]
    """The ModelDeployment's spec when created, after the upgrade and after the uninstall."""
    chart_upgraded: str


@pytest.fixture(scope="module")
def lifecycle(kube: KwokCluster, published: Published) -> Iterator[Lifecycle]:
    """install A from the registry -> a ModelDeployment -> upgrade to B -> uninstall."""
    ensure_crd(kube)  # the session's, without Helm's ownership
    reader = ClusterReader(kube)
    for namespace in (SYSTEM_NS, MODELS_NS):
        restricted_namespace(kube, namespace)
    columns = {"before": crd_columns(kube)}

    def release_chart() -> str:
        status = json.loads(helm(kube, "list", "-n", SYSTEM_NS, "-o", "json"))
        (release,) = [r for r in status if r["name"] == RELEASE]
        return str(release["chart"])

    oci = (published.repository, "--plain-http", "--wait", "--timeout", "2m")
    try:
        helm(
            kube, "install", RELEASE, *oci, "--version", VERSION_A, "-n", SYSTEM_NS,
            "--take-ownership",
        )  # fmt: skip
        installed = release_chart()
        crd = kube.get_json("crd", CRD_NAME)
        owner = (crd["metadata"].get("annotations") or {}).get("meta.helm.sh/release-name")
        columns["installed"] = crd_columns(kube)
        apply_object(kube, model_deployment(NAME, MODELS_NS, "registry.example/churn:1"))
        specs = {"created": reader.model_deployment(MODELS_NS, NAME)["spec"]}

        helm(kube, "upgrade", RELEASE, *oci, "--version", published.version_b, "-n", SYSTEM_NS)
        upgraded = release_chart()
        columns["upgraded"] = crd_columns(kube)
        specs["upgraded"] = reader.model_deployment(MODELS_NS, NAME)["spec"]

        helm(kube, "uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "60s")
        columns["uninstalled"] = crd_columns(kube)
        specs["uninstalled"] = reader.model_deployment(MODELS_NS, NAME)["spec"]
        ensure_crd(kube)  # the session's CRD again, for the modules that follow
        columns["restored"] = crd_columns(kube)
        yield Lifecycle(installed, owner, columns, specs, upgraded)
    finally:
        uninstall(kube, RELEASE, SYSTEM_NS)
        kube.kubectl("delete", f"{PLURAL}.{GROUP}", NAME, "-n", MODELS_NS, check=False)
        ensure_crd(kube)  # also when a step failed


def test_the_chart_is_installed_and_upgraded_from_the_registry(
    published: Published, lifecycle: Lifecycle
) -> None:
    assert lifecycle.chart_installed == f"modeldeploy-{VERSION_A}"
    assert lifecycle.chart_upgraded == f"modeldeploy-{published.version_b}"


def test_install_adopts_the_existing_crd(lifecycle: Lifecycle) -> None:
    assert lifecycle.owner_after_install == RELEASE
    assert lifecycle.columns["installed"] == lifecycle.columns["before"]


def test_upgrade_changes_the_crd_and_keeps_the_objects(lifecycle: Lifecycle) -> None:
    assert lifecycle.columns["upgraded"] == [*lifecycle.columns["before"], NEW_COLUMN["name"]]
    assert lifecycle.specs["upgraded"] == lifecycle.specs["created"]


def test_uninstall_keeps_the_crd_and_the_objects(kube: KwokCluster, lifecycle: Lifecycle) -> None:
    assert lifecycle.columns["uninstalled"] == lifecycle.columns["upgraded"]
    assert lifecycle.specs["uninstalled"] == lifecycle.specs["created"]
    # The release itself is gone.
    assert kube.kubectl("get", "clusterrole", f"{RELEASE}-modeldeploy", check=False).returncode
    kubectl(kube, "get", "crd", CRD_NAME)


def test_the_session_crd_is_restored(lifecycle: Lifecycle) -> None:
    """kubectl's server-side apply takes the printer columns back whole (an atomic list):
    the modules that follow see the repository's CRD."""
    assert lifecycle.columns["restored"] == lifecycle.columns["before"]
