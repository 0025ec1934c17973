"""The kinds of object the operator writes and the kinds it only reads, with where the API
serves them: the one table that the rollout core (which objects count as its own), the API
client (their paths), the watch cache (Kopf's indexes) and the chart's RBAC tests go by."""

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str  # "" for the core API group
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection(self, namespace: str) -> str:
        """The REST path of this kind's objects in `namespace`."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{prefix}/namespaces/{namespace}/{self.plural}"


def _by_kind(*kinds: Kind) -> Mapping[str, Kind]:
    return {k.kind: k for k in kinds}


# Created and updated by server-side apply, deleted when obsolete; by kind, in apply order.
OWNED_KINDS: Mapping[str, Kind] = _by_kind(
    Kind("Deployment", "apps", "v1", "deployments"),
    Kind("Service", "", "v1", "services"),
    Kind("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers"),
    Kind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets"),
)
# Never written. A revision's pods: their status says why it does not start.
READ_ONLY_KINDS: Mapping[str, Kind] = _by_kind(Kind("Pod", "", "v1", "pods"))
LISTED_KINDS: Mapping[str, Kind] = {**OWNED_KINDS, **READ_ONLY_KINDS}
