"""The pod runner's kwok Stage, made from kwok's own pod-ready Stage (pure)."""

import re
from pathlib import Path

import pytest
import yaml

from modeldeploy.devenv.containers import LOOPBACK_REGISTRY
from modeldeploy.devenv.kwokstages import (
    RUNNER_WEIGHT,
    ImageRule,
    default_stages,
    served_pods_stage,
)

# kwok v0.8.0's kustomize/stage/pod/fast/pod-ready.yaml, cut to what the rewrite touches.
POD_READY = yaml.safe_load("""
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.status.phase', operator: 'In', values: ['Pending']}
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        ready: true
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        ready: true
      {{ end }}
      phase: Running
""")
LABELS = ("modeldeploy.io/name", "modeldeploy.io/fallback")

pytestmark = pytest.mark.unit


def test_the_runners_pods_start_running_but_not_ready() -> None:
    stage = served_pods_stage(POD_READY, "runner-x", "ml", LABELS, ImageRule.listed(["b", "a"]))
    assert stage["kind"] == "Stage"
    assert stage["metadata"]["name"] == "runner-x"
    assert stage["spec"]["weight"] == RUNNER_WEIGHT > 0  # wins over kwok's (weightless) default
    template = stage["spec"]["next"]["statusTemplate"]
    for condition in ("Ready", "ContainersReady"):
        unready = rf'status: "False"\s+reason: ContainersNotReady\s+type: {condition}\n'
        assert re.search(unready, template), condition
    assert re.search(r'status: "True"\s+type: Initialized', template)
    containers, init = template.split("initContainerStatuses:")
    assert "ready: false" in containers
    assert "ready: true" not in containers
    assert "ready: true" in init  # init containers completed, as kwok says
    assert "phase: Running" in template
    expressions = stage["spec"]["selector"]["matchExpressions"]
    assert expressions[0] == POD_READY["spec"]["selector"]["matchExpressions"][0]  # kwok's own
    images = {"key": ".spec.containers[].image", "operator": "In", "values": ["a", "b"]}
    assert images in expressions
    assert {"key": ".metadata.namespace", "operator": "In", "values": ["ml"]} in expressions
    labels = next(e for e in expressions if "labels" in e["key"])
    assert labels["key"] == (
        '(.metadata.labels // {}) | (has("modeldeploy.io/name") or has("modeldeploy.io/fallback"))'
    )
    # The source Stage is left as it was.
    assert POD_READY["spec"].get("weight") is None
    assert len(POD_READY["spec"]["selector"]["matchExpressions"]) == 1


def test_all_namespaces_and_container_images_by_pattern() -> None:
    stage = served_pods_stage(POD_READY, "r", None, LABELS, ImageRule.matching(LOOPBACK_REGISTRY))
    expressions = stage["spec"]["selector"]["matchExpressions"]
    assert not any(e["key"] == ".metadata.namespace" for e in expressions)
    (images,) = (e for e in expressions if "image" in e["key"])
    assert images["values"] == ["true"]
    assert images["key"].startswith(".spec.containers[].image | test(")
    assert '"^(127\\\\.0\\\\.0\\\\.1|localhost)' in images["key"]  # a jq string literal


@pytest.mark.parametrize("condition", ["Ready", "ContainersReady"])
def test_an_unexpected_pod_ready_template_is_refused(condition: str) -> None:
    changed = yaml.safe_load(yaml.safe_dump(POD_READY))
    template = changed["spec"]["next"]["statusTemplate"]
    changed["spec"]["next"]["statusTemplate"] = template.replace(f"type: {condition}\n", "")
    with pytest.raises(ValueError, match=f"no {condition} condition"):
        served_pods_stage(changed, "r", None, LABELS, ImageRule.listed(["a"]))


def test_default_stages_need_pod_ready(tmp_path: Path) -> None:
    (tmp_path / "pod-ready.yaml").write_text(yaml.safe_dump(POD_READY))
    assert [s["metadata"]["name"] for s in default_stages(tmp_path)] == ["pod-ready"]
    (tmp_path / "pod-ready.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="no pod-ready Stage"):
        default_stages(tmp_path)
