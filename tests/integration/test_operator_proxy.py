"""An external V2 server behind the operator's `modeldeploy proxy`, on the real cluster: MLServer
(hack/mlserver-env.sh) serving the churn model, the proxy beside it in every pod as the
operator builds it (spec.externalServer), the real operator with a proxy image, the pod
runner running each pod's two processes, client traffic through the `<name>` Service, the
session Prometheus.

- the stable's pods carry the server, the proxy and the init copy of the profile, and turn
  Ready only once the profile's golden requests passed through the proxy to MLServer;
- a canary trained on charges in cents (examples/churn/build_mlserver.py `skewed`) is rolled
  back on the feature drift the proxy measures against its own profile (time printed);
- a healthy canary is promoted.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from analysis_stack import (
    ANALYSIS,
    EXAMPLE,
    NAME,
    AnalysisStack,
    Traffic,
    breach_timing,
    printed_section,
    rolled_back,
)
from operator_harness import wait_for

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.imagemap import ImageMap
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.resources.deployment import CONTAINER_NAME, PROXY_CONTAINER_NAME

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

NAMESPACE = "operator-proxy"
RATE = 30.0
PROXY_IMAGE = "registry.example/modeldeploy/operator:dev"  # run from this checkout locally


def _images() -> dict[tuple[str, str], str]:
    """(variant, version) -> image, as examples/churn/mlserver.yaml names them."""
    document = yaml.safe_load((EXAMPLE / "mlserver.yaml").read_text())
    found = {}
    for image, entry in document["images"].items():
        args = entry["build"]["args"]
        found[(args[args.index("--variant") + 1], args[args.index("--version") + 1])] = image
    return found


IMAGES = _images()
V1, SKEWED, V3 = IMAGES[("healthy", "1")], IMAGES[("skewed", "2")], IMAGES[("healthy", "3")]
# A proxy in front of MLServer answers in milliseconds, not the built-in runtime's tenths
# of one: the latency bound is not what this test is about (drift is).
SPEC: dict[str, Any] = {
    "externalServer": {"port": 8080, "modelName": "churn"},
    "warmup": {"timeout": "4m", "maxLatencyMs": 3000},
    "analysis": {**ANALYSIS, "latency": {"p95Ms": 2000}},
}


@pytest.fixture(scope="module")
def stack(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnalysisStack]:
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with AnalysisStack(
        kube, prometheus.url, prometheus.targets_dir, NAMESPACE, workdir,
        operator_args=["--proxy-image", PROXY_IMAGE],
        images=ImageMap.load(EXAMPLE / "mlserver.yaml"),
        data_image=V1,
        profile="modeldeploy/profile.json",
    ) as s:  # fmt: skip
        s.deploy(V1, "1", **SPEC)
        s.wait_stable(timeout=300)
        yield s


@pytest.fixture(scope="module")
def traffic(stack: AnalysisStack) -> Iterator[Traffic]:
    with stack.traffic(RATE) as load:
        yield load
    assert load.report is not None
    print(f"\nclient traffic: {load.report.summary()}")


def test_pods_are_ready_only_after_golden_requests_passed_through_the_proxy(
    stack: AnalysisStack,
) -> None:
    stable = stack.status()["stableRevision"]
    pods = stack.reader.api.get(
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        {"labelSelector": f"modeldeploy.io/revision={stable}"},
    )["items"]
    assert pods
    for pod in pods:
        spec = pod["spec"]
        assert [c["name"] for c in spec["containers"]] == [CONTAINER_NAME, PROXY_CONTAINER_NAME]
        (copy,) = spec["initContainers"]
        assert copy["image"] == V1  # the profile comes out of the model's own image
        assert spec["containers"][1]["image"] == PROXY_IMAGE
    served = [e for e in stack.runner.endpoints() if e.revision == stable and e.ready]
    assert len(served) >= 2
    for endpoint in served:
        # The pod's address is the proxy's; its readiness says the golden requests passed,
        # which they can only do through MLServer (the proxy has no model of its own).
        ready = httpx.get(f"http://{endpoint.address}/v2/models/churn/ready", timeout=5).json()
        assert ready["ready"] is True
        assert "golden requests passed" in ready["reason"]


def test_skewed_canary_rolls_back_on_drift_seen_through_the_proxy(
    stack: AnalysisStack, traffic: Traffic
) -> None:
    stable = stack.status()["stableRevision"]
    what = "skewed MLServer canary (trained on charges in cents)"
    with printed_section(what) as lines, stack.timeline() as timeline:
        stack.deploy(SKEWED, "2", **SPEC)
        started = timeline.wait(lambda s: s.canary is not None, 60, "a canary")
        canary = started.canary
        assert canary is not None
        back = timeline.wait(rolled_back, 400, "rollback", after=started.t)
        assert traffic.first(canary) is not None, "the canary never took live traffic"
        lines.extend(breach_timing(stack, traffic, timeline, canary, after=started.t).lines(what))
        lines.append(f"  failing checks: {sorted(back.checks('fail'))}")
    assert back.status["failedRevision"] == canary
    assert back.stable == stable
    assert "feature-psi/monthly_charges" in back.checks("fail")
    assert "monthly_charges" in back.last_history["reason"]


def test_healthy_canary_is_promoted(stack: AnalysisStack, traffic: Traffic) -> None:
    with printed_section("healthy MLServer canary") as lines, stack.timeline() as timeline:
        stack.deploy(V3, "3", **SPEC)
        started, promoted = timeline.canary_promoted(timeout=600)
        lines.append(f"  promoted {promoted.t - started.t:.1f}s after the canary appeared")
    assert promoted.stable == started.canary
    wait_for(lambda: stack.reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, what="Ready again")
