"""The GitOps examples: every manifest parses, the ModelDeployment is valid, the paths they
point at exist in this repository, the chart values they carry pass the chart's schema, and
Flux's health expressions name only phases and conditions the operator writes."""

import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from test_chart_render import CHART, render

from modeldeploy.api import API_VERSION, KIND, ConditionType, ModelDeployment, Phase

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "gitops"
Body = dict[str, Any]


def documents(path: Path) -> list[Body]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def objects(kind: str) -> list[Body]:
    return [
        doc
        for path in sorted(EXAMPLES.rglob("*.yaml"))
        for doc in documents(path)
        if doc["kind"] == kind
    ]


def test_every_manifest_parses_and_has_a_kind() -> None:
    paths = sorted(EXAMPLES.rglob("*.yaml"))
    assert len(paths) >= 7
    for path in paths:
        for doc in documents(path):
            assert doc.get("apiVersion"), path
            assert doc.get("kind"), path


def test_model_deployment_is_valid() -> None:
    (body,) = objects(KIND)
    assert body["apiVersion"] == API_VERSION
    ModelDeployment.model_validate(body)


def test_kustomizations_list_files_that_exist() -> None:
    for path in EXAMPLES.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(path.read_text())["resources"]:
            assert (path.parent / resource).is_file(), (path, resource)


def test_argocd_applications_point_at_this_repository() -> None:
    applications = {a["metadata"]["name"]: a for a in objects("Application")}
    assert sorted(applications) == ["modeldeploy", "models"]
    for app in applications.values():
        assert (ROOT / app["spec"]["source"]["path"]).is_dir()
        assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    chart = applications["modeldeploy"]["spec"]["source"]
    assert ROOT / chart["path"] == CHART
    render(chart["helm"]["valuesObject"])  # passes values.schema.json


def test_flux_helm_release_values_pass_the_chart_schema() -> None:
    (release,) = objects("HelmRelease")
    spec = release["spec"]
    assert ROOT / spec["chart"]["spec"]["chart"] == CHART
    # The CRD is a template of the chart: no crds/ policy to set.
    assert "install" not in spec
    assert "upgrade" not in spec
    assert release["metadata"]["namespace"] not in spec["values"]["watchNamespaces"]
    render(spec["values"])


def test_flux_kustomizations() -> None:
    kustomizations = {k["metadata"]["name"]: k for k in objects("Kustomization") if "spec" in k}
    assert sorted(kustomizations) == ["modeldeploy-operator", "models"]
    for kustomization in kustomizations.values():
        assert (ROOT / kustomization["spec"]["path"]).is_dir()
    models = kustomizations["models"]["spec"]
    assert models["dependsOn"] == [{"name": "modeldeploy-operator"}]
    assert models["wait"] is True
    (check,) = models["healthCheckExprs"]
    assert (check["apiVersion"], check["kind"]) == (API_VERSION, KIND)
    text = " ".join(check[key] for key in ("inProgress", "failed", "current"))
    quoted = set(re.findall(r"'([A-Za-z]+)'", text))
    assert quoted <= set(get_args(Phase)) | set(get_args(ConditionType)) | {"True", "False"}
    # Every phase is decided by inProgress or current (failed reads the Degraded condition).
    decided = set(re.findall(r"'([A-Za-z]+)'", check["inProgress"] + check["current"]))
    assert decided >= set(get_args(Phase)) - {"RolledBack", "Degraded"}
