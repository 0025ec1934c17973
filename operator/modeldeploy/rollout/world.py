"""The observed world: what the operator's own objects look like right now.

Built from the raw objects listed by label; only objects whose controller owner reference is
the ModelDeployment count as its own. Any other Deployment, Service, HPA or PDB is recorded as
foreign: the machine never writes one it would otherwise create or update (a server-side
apply with force would take it over). Pods are owned by ReplicaSets, not by the
ModelDeployment: a pod counts by its revision label, for the revisions whose Deployment the
ModelDeployment controls; running pods of any other revision are strays (a deleted
Deployment's pods until the garbage collector removes them). Odd objects (missing labels,
unreadable annotations or pod status) are kept as notes for a log line and an Event, never a
crash.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.resources.kinds import OWNED_KINDS
from modeldeploy.resources.names import (
    ANNOTATION_APPLIED_HASH,
    ANNOTATION_REVISION_SOURCE,
    LABEL_REVISION,
    LABEL_TRACK,
)
from modeldeploy.resources.revision import RevisionSource
from modeldeploy.rollout.podstatus import ObservedPod, observe_pod
from modeldeploy.routing.gateway_api import HTTP_ROUTE, ObservedRoute, observe_route

Body = dict[str, Any]
POD_KIND = "Pod"


@dataclass(frozen=True)
class ObservedDeployment:
    name: str
    revision: str | None
    track: str | None
    replicas: int
    """spec.replicas (what the HPA or the operator asked for)."""
    ready: int
    """status.readyReplicas: pods whose readiness probe passes (the model is warm)."""
    applied_hash: str | None
    source: RevisionSource | None
    """How to rebuild it exactly (None for the fallback or an unreadable annotation)."""
    timed_out: bool = False
    """Progressing=False, ProgressDeadlineExceeded: pods did not turn Ready within
    progressDeadlineSeconds (= warmup.timeout) since the Deployment last made progress."""


@dataclass(frozen=True)
class ObservedObject:
    kind: str
    name: str
    applied_hash: str | None


@dataclass(frozen=True)
class ForeignObject:
    """An object with a name the ModelDeployment uses that it does not control."""

    kind: str
    name: str
    controller: str | None
    """`Kind/name` of its controller owner, if it has one."""

    def __str__(self) -> str:
        held = f"controlled by {self.controller}" if self.controller else "with no controller"
        return f"{self.kind}/{self.name} ({held})"


@dataclass(frozen=True)
class World:
    deployments: Mapping[str, ObservedDeployment] = field(default_factory=dict)
    objects: Mapping[tuple[str, str], ObservedObject] = field(default_factory=dict)
    """Services, HPAs and PDBs by (kind, name)."""
    notes: tuple[str, ...] = ()
    pods: tuple[ObservedPod, ...] = ()
    """Pods of the revisions whose Deployment is ours, by name."""
    foreign: Mapping[tuple[str, str], ForeignObject] = field(default_factory=dict)
    """Objects of the owned kinds not controlled by this ModelDeployment, by (kind, name)."""
    strays: frozenset[str] = frozenset()
    """Revisions with running pods but no Deployment of ours."""
    route: ObservedRoute | None = None
    """The HTTPRoute of `traffic.httpRoute` (the user's: read by name, never owned)."""

    def deployment(self, name: str) -> ObservedDeployment | None:
        return self.deployments.get(name)

    def pods_of(self, revision: str) -> tuple[ObservedPod, ...]:
        return tuple(pod for pod in self.pods if pod.revision == revision)

    def get(self, kind: str, name: str) -> ObservedDeployment | ObservedObject | None:
        if kind == "Deployment":
            return self.deployments.get(name)
        return self.objects.get((kind, name))

    def refs(self) -> Iterable[tuple[str, str]]:
        yield from (("Deployment", name) for name in self.deployments)
        yield from self.objects


def _controlled_by(body: Body, uid: str) -> bool:
    refs = body.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def _controller(body: Body) -> str | None:
    refs = body.get("metadata", {}).get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), None)
    return f"{ref.get('kind')}/{ref.get('name')}" if ref else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _timed_out(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Progressing"
        and c.get("status") == "False"
        and c.get("reason") == "ProgressDeadlineExceeded"
        for c in status.get("conditions") or []
    )


def _deployment(body: Body, notes: list[str]) -> ObservedDeployment:
    meta = body.get("metadata", {})
    name = meta.get("name", "")
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    source = None
    raw_source = annotations.get(ANNOTATION_REVISION_SOURCE)
    if raw_source is not None:
        try:
            source = RevisionSource.parse(raw_source)
        except ValueError as err:
            notes.append(f"Deployment {name}: unreadable {ANNOTATION_REVISION_SOURCE}: {err}")
    if source is not None and source.revision != labels.get(LABEL_REVISION):
        notes.append(f"Deployment {name}: {ANNOTATION_REVISION_SOURCE} does not match its label")
        source = None
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return ObservedDeployment(
        name=name,
        revision=labels.get(LABEL_REVISION),
        track=labels.get(LABEL_TRACK),
        replicas=_int(spec.get("replicas", 1)),
        ready=_int(status.get("readyReplicas", 0)),
        applied_hash=annotations.get(ANNOTATION_APPLIED_HASH),
        source=source,
        timed_out=_timed_out(status),
    )


KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "labels",
    "annotations",
    "ownerReferences",
    "deletionTimestamp",
)


def essentials(body: Body) -> Body:
    """The parts of an owned object or pod that `observe` reads (plus its resourceVersion):
    what the operator's watch cache keeps of it, so that thousands of pods cost little
    memory (no managedFields, pod specs or Deployment templates)."""
    meta = body.get("metadata") or {}
    kept: Body = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in KEPT_METADATA if k in meta},
    }
    if body.get("kind") == "Deployment":
        kept["spec"] = {k: v for k, v in (body.get("spec") or {}).items() if k == "replicas"}
        kept["status"] = body.get("status") or {}
    elif body.get("kind") == POD_KIND:
        kept["status"] = body.get("status") or {}
    return kept


def observe(owner_uid: str, bodies: Iterable[Body]) -> World:
    deployments: dict[str, ObservedDeployment] = {}
    objects: dict[tuple[str, str], ObservedObject] = {}
    foreign: dict[tuple[str, str], ForeignObject] = {}
    notes: list[str] = []
    pods: list[ObservedPod] = []
    route = None
    for body in bodies:
        kind = body.get("kind")
        if kind == HTTP_ROUTE.kind:
            route = observe_route(body)
            continue
        if kind == POD_KIND:
            pod = observe_pod(body, notes)
            if pod is not None:
                pods.append(pod)
            continue
        name = body.get("metadata", {}).get("name")
        if not isinstance(kind, str) or kind not in OWNED_KINDS or not isinstance(name, str):
            continue
        if not _controlled_by(body, owner_uid):
            foreign[(kind, name)] = ForeignObject(kind, name, _controller(body))
            continue
        if kind == "Deployment":
            deployments[name] = _deployment(body, notes)
        else:
            annotations = body.get("metadata", {}).get("annotations") or {}
            objects[(kind, name)] = ObservedObject(
                kind, name, annotations.get(ANNOTATION_APPLIED_HASH)
            )
    ours = {d.revision for d in deployments.values() if d.revision}
    attributed = sorted((p for p in pods if p.revision in ours), key=lambda p: p.name)
    strays = frozenset(p.revision for p in pods if p.revision not in ours)
    return World(deployments, objects, tuple(notes), tuple(attributed), foreign, strays, route)
