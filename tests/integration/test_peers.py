"""The peers of bench/bench_vs_peers.py on a real kube-apiserver: Argo Rollouts' and
Flagger's CRDs (from their modules) apply, and every object the bench renders in their terms
passes their schemas. Skipped unless `hack/testenv.sh peers` has built them: the default
suite never pays for these builds."""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.peers import (
    Rules,
    argo_analysis_template,
    argo_rollout,
    client_service,
    flagger_canary,
    flagger_deployment,
    flagger_metric_templates,
    parse_exports,
)

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.example/ml/churn@sha256:" + "2" * 64
NAMESPACE = "peers-schemas"
PROMETHEUS = "http://127.0.0.1:9090"


def _peers() -> dict[str, Path]:
    printed = subprocess.run(
        [str(ROOT / "hack" / "testenv.sh"), "peers-env"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    return {name: Path(value) for name, value in parse_exports(printed).items()}


PEERS = _peers()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (
            PEERS["MODELDEPLOY_ARGO_ROLLOUTS"].is_file()
            and PEERS["MODELDEPLOY_FLAGGER"].is_file()
            and (PEERS["MODELDEPLOY_PEER_CRDS"] / ".stamp").is_file()
        ),
        reason="the peers are not built (hack/testenv.sh peers)",
    ),
]


@pytest.mark.parametrize("variable", ["MODELDEPLOY_ARGO_ROLLOUTS", "MODELDEPLOY_FLAGGER"])
def test_the_controllers_run(variable: str) -> None:
    binary = PEERS[variable]
    flag = "--version" if "ARGO" in variable else "-version"
    shown = subprocess.run(
        [str(binary), flag], check=False, capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    assert binary.parent.name.rsplit("-v", 1)[1] in shown.stdout + shown.stderr


def _dry_run(kube: KwokCluster, body: dict[str, Any]) -> None:
    applied = kube.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False
    )
    assert applied.returncode == 0, f"{body['kind']} refused:\n{applied.stderr}"


def test_crds_apply_and_the_bench_objects_pass_their_schemas(kube: KwokCluster) -> None:
    applied = kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(PEERS["MODELDEPLOY_PEER_CRDS"]),
        check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    for crd in ("rollouts.argoproj.io", "analysistemplates.argoproj.io", "canaries.flagger.app",
                "metrictemplates.flagger.app"):  # fmt: skip
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    if kube.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
        kube.kubectl("create", "namespace", NAMESPACE)
    rules = Rules()
    for body in [
        client_service(NAMESPACE),
        argo_rollout(NAMESPACE, IMAGE, "2", rules),
        argo_analysis_template(NAMESPACE, PROMETHEUS, rules),
        flagger_deployment(NAMESPACE, IMAGE, "2", rules),
        flagger_canary(NAMESPACE, rules),
        *flagger_metric_templates(NAMESPACE, PROMETHEUS, rules),
    ]:
        _dry_run(kube, body)
