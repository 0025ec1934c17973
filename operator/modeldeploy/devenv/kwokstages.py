"""kwok Stages served from the API: kwok's own defaults, and one per pod runner.

A kubelet marks a pod Ready only once its readiness probe passes. kwok's default `pod-ready`
Stage marks every pod Ready the moment it runs; for a pod whose server a pod runner starts,
that is false for the few hundred milliseconds until the runner sets Ready back to False,
long enough for a ReplicaSet to count the pod ready and the operator to act on it. So test
clusters serve Stages from the API (kwokctl's `enableCRDs: [Stage]`; kwok then loads none of
its built-in ones): kwok's defaults, applied at creation, and, while a runner runs, a Stage
of its own that starts the pods it serves Running but not Ready. Their Ready then comes from
the runner alone, as from a kubelet's probe. Where both match a pod, the runner's Stage wins:
kwok picks among matching Stages by weight, and the defaults have none.

    stage = served_pods_stage(default_pod_ready, name, namespace, ImageRule.listed(images))
"""

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

STAGE_GROUP, STAGE_VERSION, STAGE_PLURAL = "kwok.x-k8s.io", "v1alpha1", "stages"
DEFAULT_POD_READY = "pod-ready"
"""The name of kwok's default Stage that starts a pod (phase Running, Ready)."""
RUNNER_WEIGHT = 1

Body = dict[str, Any]


def default_stages(directory: Path) -> list[Body]:
    """kwok's default Stages, as hack/testenv.sh copied them from its module."""
    stages = [yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.yaml"))]
    if not any(s["metadata"]["name"] == DEFAULT_POD_READY for s in stages):
        raise FileNotFoundError(f"no {DEFAULT_POD_READY} Stage in {directory}")
    return stages


@dataclass(frozen=True)
class ImageRule:
    """Which pods a runner serves, by image, as a kwok selector requirement: a jq `key`
    whose result must be one of `values`."""

    key: str
    values: tuple[str, ...]

    @classmethod
    def listed(cls, images: Iterable[str]) -> "ImageRule":
        return cls(".spec.containers[].image", tuple(sorted(set(images))))

    @classmethod
    def matching(cls, pattern: re.Pattern[str]) -> "ImageRule":
        # A JSON string is a jq string literal; Go's RE2 reads the project's patterns alike.
        return cls(f".spec.containers[].image | test({json.dumps(pattern.pattern)})", ("true",))


def _not_ready(template: str) -> str:
    """kwok's pod-ready status template with Ready, ContainersReady and the containers'
    `ready` False, as a kubelet reports a started pod whose probe has not passed yet."""
    changed = template
    for condition in ("Ready", "ContainersReady"):
        changed, count = re.subn(
            rf'status: "True"(\s+)type: {condition}\b',
            rf'status: "False"\1reason: ContainersNotReady\1type: {condition}',
            changed,
        )
        if count != 1:
            raise ValueError(f"kwok's {DEFAULT_POD_READY} template has no {condition} condition")
    start = changed.find("{{ range .spec.containers }}")
    end = changed.find("{{ end }}", start)
    if start < 0 or end < 0 or "ready: true" not in changed[start:end]:
        raise ValueError(f"kwok's {DEFAULT_POD_READY} template has no containers' ready")
    containers = changed[start:end].replace("ready: true", "ready: false")
    return changed[:start] + containers + changed[end:]


def served_pods_stage(
    pod_ready: Mapping[str, Any],
    name: str,
    namespace: str | None,
    labels: Iterable[str],
    images: ImageRule,
) -> Body:
    """The Stage that starts the pods a runner serves Running but not Ready: kwok's
    `pod-ready` (as the cluster has it) narrowed to the pods in `namespace` (None: all)
    carrying one of `labels` with an image `images` accepts, and weighted above it."""
    wanted = " or ".join(f"has({json.dumps(label)})" for label in labels)
    narrowed = [
        {"key": f"(.metadata.labels // {{}}) | ({wanted})", "operator": "In", "values": ["true"]},
        {"key": images.key, "operator": "In", "values": list(images.values)},
    ]
    if namespace is not None:
        narrowed.append({"key": ".metadata.namespace", "operator": "In", "values": [namespace]})
    spec = copy.deepcopy(dict(pod_ready["spec"]))
    spec["weight"] = RUNNER_WEIGHT
    spec["selector"]["matchExpressions"] = [*spec["selector"]["matchExpressions"], *narrowed]
    spec["next"]["statusTemplate"] = _not_ready(spec["next"]["statusTemplate"])
    return {
        "apiVersion": f"{STAGE_GROUP}/{STAGE_VERSION}",
        "kind": "Stage",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "modeldeploy"}},
        "spec": spec,
    }
