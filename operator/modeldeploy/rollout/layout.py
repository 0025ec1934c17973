"""The desired objects for a decided state, and what it takes to get there from the world.

Deployment `spec.replicas` is always in the applied body (server-side apply would otherwise
drop a field the operator stops sending, and the apiserver would default it to 1); where an
HPA owns the count, the machine passes the observed value back unchanged, so applying never
fights the HPA. An object is written only when its applied-hash annotation or, for a
Deployment, its replica count differs from what is wanted; never when an object of that kind
and name exists that the ModelDeployment does not control (`World.foreign`): a server-side
apply with force would merge into it, add an owner reference, and deleting the
ModelDeployment would then garbage-collect it.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.resources.autoscaling import hpa, pdb
from modeldeploy.resources.common import Body, Owner
from modeldeploy.resources.deployment import (
    ShadowTarget,
    fallback_deployment,
    revision_deployment,
)
from modeldeploy.resources.kinds import OWNED_KINDS
from modeldeploy.resources.names import (
    ANNOTATION_APPLIED_HASH,
    Track,
    canary_name,
    deployment_name,
    fallback_selector,
    revision_selector,
    stable_name,
)
from modeldeploy.resources.revision import RevisionSource
from modeldeploy.resources.service import service
from modeldeploy.rollout.plan import NewObject, ObjectRef
from modeldeploy.rollout.world import ForeignObject, ObservedDeployment, World

# Deleting autoscalers first: an HPA never acts on a Deployment that is about to go.
DELETE_ORDER = ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Deployment", "Service")


@dataclass(frozen=True)
class RevisionLayout:
    source: RevisionSource
    track: Track
    replicas: int
    shadow: ShadowTarget | None = None

    @property
    def revision(self) -> str:
        return self.source.revision


@dataclass(frozen=True)
class Layout:
    """Which revisions run, with how many pods, and where traffic goes."""

    stable: RevisionLayout
    canary: RevisionLayout | None
    previous: RevisionLayout | None
    client_selector: dict[str, str]
    autoscaled: bool
    """The stable's HPA and PDB exist (not while the kill switch scales everything to zero)."""


def build(owner: Owner, spec: ModelDeploymentSpec, layout: Layout) -> list[Body]:
    """Every object that should exist, in the order they are applied: Deployments (stable
    first, so that a promotion never shows no stable Deployment), Services, the stable's
    HPA and PDB."""
    revisions = [r for r in (layout.stable, layout.canary, layout.previous) if r is not None]
    bodies = [
        revision_deployment(
            owner,
            r.source,
            track=r.track,
            replicas=r.replicas,
            warmup=spec.warmup,
            shadow=r.shadow,
        )
        for r in revisions
    ]
    if spec.fallback is not None:
        bodies.append(fallback_deployment(owner, spec.fallback, spec.model, spec.warmup))
    bodies += _track_services(owner, spec, layout)
    bodies.append(service(owner, owner.name, layout.client_selector))
    if layout.autoscaled:
        # Only the stable autoscales. The canary's size is its traffic weight: the machine
        # derives it from the stable's current replicas on every reconcile and sets it on
        # its Deployment (an HPA pinned to that size would be a second writer of the same
        # count, clamping it back to the old size between the operator's two writes).
        bodies.append(
            hpa(
                owner,
                stable_name(owner.name),
                target=deployment_name(owner.name, layout.stable.revision),
                min_replicas=spec.replicas.min_warm,
                max_replicas=spec.replicas.max,
                autoscaling=spec.autoscaling,
            )
        )
        bodies.append(
            pdb(
                owner,
                stable_name(owner.name),
                selector=revision_selector(owner.name, layout.stable.revision),
                min_available=spec.replicas.min_warm,
            )
        )
    return bodies


def _track_services(owner: Owner, spec: ModelDeploymentSpec, layout: Layout) -> list[Body]:
    """`<name>-stable` and `<name>-canary` (one revision each), only where something calls a
    single track: an HTTPRoute's weighted backends (gatewayAPI: both, always; the canary one
    on the stable's pods while there is no canary, so that no backend is without endpoints),
    and the stable's pods mirroring to the canary (`<name>-canary` for as long as a rollout
    that shadows has a canary, so that stable pods still rolling out of the shadow phase
    reach it too)."""
    name, stable = owner.name, layout.stable.revision
    canary = layout.canary.revision if layout.canary is not None else stable
    if spec.rollout.traffic.mode == "gatewayAPI":
        # The kill switch's fallback takes the stable backend's place (no weight moves).
        killed_to_fallback = layout.client_selector == fallback_selector(name)
        stable_pods = layout.client_selector if killed_to_fallback else None
        return [
            service(owner, stable_name(name), stable_pods or revision_selector(name, stable)),
            service(owner, canary_name(name), revision_selector(name, canary)),
        ]
    if layout.canary is not None and spec.rollout.shadow.percent > 0:
        return [service(owner, canary_name(name), revision_selector(name, canary))]
    return []


def _changed(body: Body, world: World) -> bool:
    observed = world.get(body["kind"], body["metadata"]["name"])
    if observed is None:
        return True
    if observed.applied_hash != body["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]:
        return True
    if isinstance(observed, ObservedDeployment):
        return bool(observed.replicas != body["spec"]["replicas"])
    return False


def foreign_in(desired: Sequence[Body], world: World) -> tuple[ForeignObject, ...]:
    """The wanted objects whose name is taken by an object the ModelDeployment does not control."""
    refs = ((body["kind"], body["metadata"]["name"]) for body in desired)
    return tuple(world.foreign[ref] for ref in refs if ref in world.foreign)


def diff(desired: Sequence[Body], world: World) -> tuple[tuple[Body, ...], tuple[ObjectRef, ...]]:
    """(bodies to apply, objects to delete): only what differs from the world, never a
    foreign object (it is not in `world.refs()` either, so it is never deleted); what the
    world does not have at all as a `NewObject`."""
    apply = tuple(
        body if world.get(body["kind"], body["metadata"]["name"]) is not None else NewObject(body)
        for body in desired
        if _changed(body, world) and (body["kind"], body["metadata"]["name"]) not in world.foreign
    )
    wanted = {(body["kind"], body["metadata"]["name"]) for body in desired}
    extra = [(kind, name) for kind, name in world.refs() if (kind, name) not in wanted]
    extra.sort(key=lambda ref: (DELETE_ORDER.index(ref[0]), ref[1]))
    return apply, tuple(
        ObjectRef(OWNED_KINDS[kind].api_version, kind, name) for kind, name in extra
    )
