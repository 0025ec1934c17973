"""HorizontalPodAutoscalers (autoscaling/v2), one per track, and the stable's PDB."""

from typing import Any

from modeldeploy.api import Autoscaling
from modeldeploy.resources.common import Body, Owner, metadata, with_applied_hash


def hpa(
    owner: Owner,
    name: str,
    *,
    target: str,
    min_replicas: int,
    max_replicas: int,
    autoscaling: Autoscaling,
) -> Body:
    """An HPA of Deployment `target` between `min_replicas` and `max_replicas`."""
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": autoscaling.target_cpu_utilization,
                },
            },
        },
        *autoscaling.metrics,
    ]
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "minReplicas": min_replicas,
        "maxReplicas": max(min_replicas, max_replicas),
        "metrics": metrics,
    }
    if autoscaling.behavior is not None:
        spec["behavior"] = autoscaling.behavior
    return with_applied_hash(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(owner, name),
            "spec": spec,
        }
    )


def pdb(owner: Owner, name: str, *, selector: dict[str, str], min_available: int) -> Body:
    """Voluntary evictions (drains) never take the selected pods below `min_available`."""
    return with_applied_hash(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(owner, name),
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": dict(selector)}},
        }
    )
