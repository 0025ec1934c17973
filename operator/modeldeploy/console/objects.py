"""What a ModelDeployment owns, as plain data for `status`'s tree (like `kubectl argo
rollouts get rollout`): revisions with their Deployment (Ready/total pods), pods, HPA and
PDB; the Services with their selectors; the traffic split, requested and effective, and the
HTTPRoute's weights when there is one.

Pure and forgiving: objects as the apiserver returns them (dicts), any of them missing or
odd; a kind that could not be read (no permission) is None and shown as such.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from modeldeploy.console.views import Body, rollout_of
from modeldeploy.resources.names import LABEL_FALLBACK, LABEL_REVISION, LABEL_TRACK

Listed = Mapping[str, Sequence[Body] | None]
"""Objects by kind (Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, Pod);
None: that kind could not be read."""
KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Pod")
MAX_PODS_SHOWN = 10
"""Pods listed by name under one revision; more are counted."""
TRACK_ORDER = ("stable", "canary", "previous", "fallback")


def _m(value: Any) -> Body:
    return value if isinstance(value, dict) else {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_m(obj.get("metadata")).get("name", ""))


def _labels(obj: Mapping[str, Any]) -> Body:
    return _m(_m(obj.get("metadata")).get("labels"))


def _controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = _m(obj.get("metadata")).get("ownerReferences") or []
    return any(_m(r).get("controller") and _m(r).get("uid") == uid for r in refs)


def pod_view(pod: Mapping[str, Any]) -> Body:
    status = _m(pod.get("status"))
    containers = [_m(c) for c in status.get("containerStatuses") or []]
    conditions = {_m(c).get("type"): _m(c).get("status") for c in status.get("conditions") or []}
    waiting = next(
        (
            _m(_m(c.get("state")).get("waiting")).get("reason")
            for c in containers
            if _m(c.get("state")).get("waiting")
        ),
        None,
    )
    return {
        "name": _name(pod),
        "phase": waiting or status.get("phase") or "Pending",
        "ready": conditions.get("Ready") == "True",
        "restarts": sum(int(c.get("restartCount") or 0) for c in containers),
        "created": _m(pod.get("metadata")).get("creationTimestamp"),
    }


def _pod_of(pod: Mapping[str, Any], name: str, revision: str, *, fallback: bool) -> bool:
    """Fallback pods carry `modeldeploy.io/fallback=<name>` instead of the name label."""
    labels = _labels(pod)
    if fallback:
        return labels.get(LABEL_FALLBACK) == name
    return labels.get(LABEL_REVISION) == revision and LABEL_FALLBACK not in labels


def _hpa_view(hpa: Mapping[str, Any]) -> Body:
    spec, status = _m(hpa.get("spec")), _m(hpa.get("status"))
    return {
        "name": _name(hpa),
        "current": status.get("currentReplicas"),
        "desired": status.get("desiredReplicas"),
        "min": spec.get("minReplicas"),
        "max": spec.get("maxReplicas"),
    }


def _pdb_view(pdb: Mapping[str, Any]) -> Body:
    spec, status = _m(pdb.get("spec")), _m(pdb.get("status"))
    return {
        "name": _name(pdb),
        "minAvailable": spec.get("minAvailable"),
        "currentHealthy": status.get("currentHealthy"),
        "disruptionsAllowed": status.get("disruptionsAllowed"),
    }


def _revision_view(
    deployment: Mapping[str, Any], listed: Listed, name: str, tracks: Mapping[str, str]
) -> Body:
    spec, status = _m(deployment.get("spec")), _m(deployment.get("status"))
    labels = _labels(deployment)
    revision = str(labels.get(LABEL_REVISION, ""))
    track = str(labels.get(LABEL_TRACK) or tracks.get(revision) or "")
    deployment_name = _name(deployment)
    pods_listed = listed.get("Pod")
    pods = None
    if pods_listed is not None:
        fallback = track == "fallback"
        pods = sorted(
            (pod_view(p) for p in pods_listed if _pod_of(p, name, revision, fallback=fallback)),
            key=lambda p: p["name"],
        )
    hpas = [
        _hpa_view(h)
        for h in listed.get("HorizontalPodAutoscaler") or []
        if _m(_m(h.get("spec")).get("scaleTargetRef")).get("name") == deployment_name
    ]
    selects = {LABEL_REVISION: revision}
    pdbs = [
        _pdb_view(p)
        for p in listed.get("PodDisruptionBudget") or []
        if selects.items() <= _m(_m(_m(p.get("spec")).get("selector")).get("matchLabels")).items()
    ]
    return {
        "track": track,
        "revision": revision,
        "deployment": {
            "name": deployment_name,
            "replicas": spec.get("replicas"),
            "ready": status.get("readyReplicas") or 0,
            "updated": status.get("updatedReplicas") or 0,
        },
        "pods": pods,
        "hpa": hpas[0] if hpas else None,
        "pdb": pdbs[0] if pdbs else None,
    }


def _route_weights(route: Mapping[str, Any] | None) -> list[Body] | None:
    if route is None:
        return None
    return [
        {"service": str(_m(ref).get("name", "")), "weight": _m(ref).get("weight", 1)}
        for rule in _m(route.get("spec")).get("rules") or []
        for ref in _m(rule).get("backendRefs") or []
    ]


def objects_view(
    obj: Mapping[str, Any], listed: Listed, route: Mapping[str, Any] | None = None
) -> Body:
    """The tree's data. `route`: the HTTPRoute of `rollout.traffic.httpRoute`, if read."""
    meta, status = _m(obj.get("metadata")), _m(obj.get("status"))
    name, uid = str(meta.get("name", "")), str(meta.get("uid", ""))

    def own(kind: str) -> list[Body] | None:
        found = listed.get(kind)
        if found is None:
            return None
        return [o for o in found if kind == "Pod" or not uid or _controlled_by(o, uid)]

    mine: dict[str, Sequence[Body] | None] = {kind: own(kind) for kind in KINDS}
    tracks = {
        str(status.get(key)): track
        for key, track in (("previousStableRevision", "previous"), ("canaryRevision", "canary"),
                           ("stableRevision", "stable"))
        if status.get(key)
    }  # fmt: skip
    deployments = mine["Deployment"]
    revisions = (
        None
        if deployments is None
        else sorted(
            (_revision_view(d, mine, name, tracks) for d in deployments),
            key=lambda r: (
                TRACK_ORDER.index(r["track"]) if r["track"] in TRACK_ORDER else len(TRACK_ORDER),
                r["revision"],
            ),
        )
    )
    rollout = rollout_of(obj)
    shadowing = status.get("canaryRevision") and status.get("step") is None
    shadowing = shadowing and status.get("cohort") is None
    for revision in revisions or []:
        if shadowing and revision["track"] == "canary" and rollout.shadow.percent > 0:
            revision["track"] = "shadow"
    services = mine["Service"]
    traffic = rollout.traffic
    return {
        "revisions": revisions,
        "services": None
        if services is None
        else sorted(
            (
                {"name": _name(s), "selector": dict(_m(_m(s.get("spec")).get("selector")))}
                for s in services
            ),
            key=lambda s: s["name"],
        ),
        "traffic": {
            "mode": traffic.mode,
            # The operator's own account (status.requestedWeight): what the step asks for.
            "requested": status.get("requestedWeight") or 0,
            "effective": status.get("canaryWeight") or 0,
            "httpRoute": traffic.http_route,
            "routeWeights": _route_weights(route),
        },
    }
