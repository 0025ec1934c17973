"""The generated CRD on a real kube-apiserver: it is accepted, the examples are accepted, every
spec in examples/modeldeployments/rejected.yaml is refused with a message that names the field
and the rule, every edge case in accepted.yaml is accepted, objects read back parse into the
models unchanged, and kubectl explain works."""

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import ModelDeployment, ModelDeploymentStatus, to_wire
from modeldeploy.crd import CRD_FILENAME, CRD_NAME
from modeldeploy.devenv.cluster import KwokCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "modeldeployments"
CASES: list[dict[str, Any]] = yaml.safe_load((EXAMPLES / "rejected.yaml").read_text())
ACCEPTED: list[dict[str, Any]] = yaml.safe_load((EXAMPLES / "accepted.yaml").read_text())
NAMESPACE = "crd-apply"


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return data


def eventually(check: Any, timeout: float = 60, interval: float = 1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


@pytest.fixture(scope="module")
def cluster(kube: KwokCluster) -> Iterator[KwokCluster]:
    """The cluster with the CRD installed and a namespace of our own."""
    applied = kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / CRD_FILENAME),
        check=False,
    )  # fmt: skip
    assert applied.returncode == 0, f"the apiserver refused the CRD:\n{applied.stderr}"

    def established() -> bool:
        crd = json.loads(kube.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
        # Null until the apiextensions controller has looked at a just-created CRD.
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    assert eventually(established, timeout=60, interval=0.5), "the CRD never became Established"
    kube.kubectl("create", "namespace", NAMESPACE)
    try:
        yield kube
    finally:
        kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def apply(cluster: KwokCluster, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(obj), check=False)


def read_back(cluster: KwokCluster, name: str) -> dict[str, Any]:
    got: dict[str, Any] = json.loads(
        cluster.kubectl("get", "modeldeployment", name, "-n", NAMESPACE, "-o", "json").stdout
    )
    return got


def test_crd_is_established_with_its_names(cluster: KwokCluster) -> None:
    resources = cluster.kubectl("api-resources", "--api-group=modeldeploy.io", "-o", "wide")
    assert "modeldeployments" in resources.stdout
    assert "mdep,modeldeploy" in resources.stdout
    assert "ModelDeployment" in resources.stdout


@pytest.mark.parametrize("name", ["minimal.yaml", "complete.yaml"])
def test_example_is_accepted_and_reads_back_unchanged(cluster: KwokCluster, name: str) -> None:
    written = example(name)
    written["metadata"]["name"] = Path(name).stem
    result = apply(cluster, written)
    assert result.returncode == 0, result.stderr

    stored = read_back(cluster, written["metadata"]["name"])
    # Nothing pruned: every field written is stored as written (the apiserver only adds
    # defaults), and the stored spec is exactly the models' wire form of what was written.
    parsed = ModelDeployment.model_validate(written)
    assert stored["spec"] == to_wire(parsed.spec)
    assert ModelDeployment.model_validate(stored).spec == parsed.spec


def test_switching_from_the_default_canary_to_steps_is_a_plain_apply(
    cluster: KwokCluster,
) -> None:
    obj = example("minimal.yaml")
    obj["metadata"]["name"] = "to-steps"
    assert apply(cluster, obj).returncode == 0
    assert "canary" not in read_back(cluster, "to-steps")["spec"]["rollout"]
    obj["spec"]["rollout"] = {"canary": {"steps": [1, 5, 25]}}
    result = apply(cluster, obj)  # client-side apply: a merge patch that only adds steps
    assert result.returncode == 0, result.stderr
    assert read_back(cluster, "to-steps")["spec"]["rollout"]["canary"] == {"steps": [1, 5, 25]}


def test_printer_columns_show(cluster: KwokCluster) -> None:
    assert apply(cluster, example("minimal.yaml")).returncode == 0
    table = cluster.kubectl("get", "mdep", "-n", NAMESPACE)
    header = table.stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "REQUESTED", "AGE"]
    wide = cluster.kubectl("get", "mdep", "-n", NAMESPACE, "-o", "wide").stdout.splitlines()[0]
    assert wide.split()[-5:] == ["VERSION", "STEP", "COHORT", "OWNER", "MESSAGE"]


def test_status_written_by_the_operator_reads_back_unchanged(cluster: KwokCluster) -> None:
    obj = example("minimal.yaml")
    obj["metadata"]["name"] = "with-status"
    assert apply(cluster, obj).returncode == 0
    status = ModelDeploymentStatus.model_validate(example("status.yaml")["status"])
    cluster.kubectl(
        "patch", "modeldeployment", "with-status", "-n", NAMESPACE, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": to_wire(status)}),
    )  # fmt: skip
    stored = read_back(cluster, "with-status")
    assert stored["status"] == to_wire(status)
    assert ModelDeploymentStatus.model_validate(stored["status"]) == status
    row = cluster.kubectl("get", "mdep", "with-status", "-n", NAMESPACE, "--no-headers").stdout
    assert row.split()[1:5] == ["Progressing", "5d8f7c9b2a", "9a1b2c3d4e", "5"]


def patched_minimal(cluster: KwokCluster, patch: dict[str, Any], name: str) -> dict[str, Any]:
    """minimal.yaml with the JSON merge patch applied by kubectl itself, offline; named `name`
    unless the patch names it (a fresh object each: updates merge differently)."""
    patched = cluster.kubectl(
        "patch", "--local", "-f", str(EXAMPLES / "minimal.yaml"), "--type=merge",
        "-p", json.dumps(patch), "-o", "json",
    )  # fmt: skip
    obj: dict[str, Any] = json.loads(patched.stdout)
    if obj["metadata"]["name"] == "churn":
        obj["metadata"]["name"] = name
    return obj


@pytest.mark.parametrize("case", ACCEPTED, ids=[c["case"] for c in ACCEPTED])
def test_edge_case_is_accepted_and_reads_back_unchanged(
    cluster: KwokCluster, case: dict[str, Any]
) -> None:
    obj = patched_minimal(cluster, case["patch"], f"accepted-{ACCEPTED.index(case)}")
    result = apply(cluster, obj)
    assert result.returncode == 0, result.stderr
    stored = read_back(cluster, obj["metadata"]["name"])
    assert ModelDeployment.model_validate(stored).spec == ModelDeployment.model_validate(obj).spec


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_invalid_spec_is_refused_with_a_plain_message(
    cluster: KwokCluster, case: dict[str, Any]
) -> None:
    obj = patched_minimal(cluster, case["patch"], f"rejected-{CASES.index(case)}")
    result = apply(cluster, obj)
    assert result.returncode != 0, f"accepted: {json.dumps(obj)}"
    message = result.stderr
    assert case["field"] in message, message
    assert case["error"] in message, message


@pytest.mark.parametrize("resource", ["modeldeploy", "modeldeployment", "mdep"])
def test_kubectl_explain_shows_descriptions(cluster: KwokCluster, resource: str) -> None:
    def explained() -> str:
        result = cluster.kubectl("explain", f"{resource}.spec.analysis", check=False)
        return result.stdout if "minSamples" in result.stdout else ""

    # The apiserver publishes a new CRD's OpenAPI a few seconds after it is established.
    text = " ".join(eventually(explained).split())
    assert "How a new revision is judged: checks on its metrics" in text
    assert "An optional floor: no verdict before the new revision served" in text
    assert "falsePositiveRate" in text
    assert "Defaults to 0.01." in text
    assert "onNoData" in text
