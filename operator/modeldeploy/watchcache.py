"""What the operator knows of the cluster without asking: Kopf's indexes (one per watched
kind, fed by Kopf's own list + watch streams, filtered server-side by the
`modeldeploy.io/name` label) read as one snapshot per ModelDeployment, and the expectations
that keep a reconcile from acting on a cache that has not yet seen the operator's own writes.

Kopf fills every index before it calls any handler, relists after a 410 Gone and reconnects
dropped watches. What a cache cannot promise (a deletion missed while a watch was down is
not replayed by a relist) is covered by the reconciler: it re-reads from the API before a
destructive step (deleting a revision, a rollback).
"""

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.resources.kinds import LISTED_KINDS, Kind
from modeldeploy.rollout.world import essentials
from modeldeploy.routing.gateway_api import route_of

Body = dict[str, Any]
Key = tuple[str, str]  # (namespace, ModelDeployment name)
ObjectKey = tuple[str, str]  # (kind, name)
MODEL_DEPLOYMENT_KIND = "ModelDeployment"


class Watched(Kind):
    """A listed kind as the cache indexes it."""

    @property
    def index_id(self) -> str:
        """The Kopf index's id: also the keyword argument it reaches handlers under."""
        return f"owned_{self.plural}"


OWNED: tuple[Watched, ...] = tuple(
    Watched(k.kind, k.group, k.version, k.plural) for k in LISTED_KINDS.values()
)
MODEL_DEPLOYMENTS_INDEX = "model_deployments"


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""`kubectl apply`'s copy of the whole object as the user last applied it: never read."""


def slim(body: Mapping[str, Any]) -> Body:
    """A watched object as the operator keeps it, in Kopf's streams and in the cache. A
    ModelDeployment: everything but managedFields and the last-applied annotation (never
    read, often the largest parts; its spec, status, labels and other annotations are).
    An owned object or pod: `rollout.world.essentials`, what `observe` reads. Idempotent."""
    if body.get("kind") == MODEL_DEPLOYMENT_KIND:
        kept = dict(body)
        meta = kept.get("metadata") or {}
        kept["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    else:
        kept = essentials(dict(body))
    annotations = kept["metadata"].get("annotations")
    if annotations and LAST_APPLIED in annotations:
        kept["metadata"]["annotations"] = {
            k: v for k, v in annotations.items() if k != LAST_APPLIED
        }
    return kept


@dataclass(frozen=True)
class Snapshot:
    """One ModelDeployment and the objects labelled with its name, as one reconcile sees
    them (from the cache, or read fresh before a destructive step)."""

    body: Body
    owned: tuple[Body, ...]

    def resource_version(self, kind: str, name: str) -> str | None:
        if kind == MODEL_DEPLOYMENT_KIND:
            return _resource_version(self.body)
        for obj in self.owned:
            if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
                return _resource_version(obj)
        return None


def _resource_version(body: Mapping[str, Any]) -> str | None:
    value = (body.get("metadata") or {}).get("resourceVersion")
    return str(value) if value else None


Store = Iterable[Body]


@dataclass
class WatchCache:
    """Read-only views of Kopf's indexes (handed to every handler as keyword arguments;
    the same live objects every time). Read on the event loop only: Kopf updates them
    there."""

    model_deployments: Mapping[Key, Store]
    owned: tuple[Mapping[Key, Store], ...]

    @classmethod
    def from_handler_kwargs(cls, kwargs: Mapping[str, Any]) -> "WatchCache":
        return cls(kwargs[MODEL_DEPLOYMENTS_INDEX], tuple(kwargs[w.index_id] for w in OWNED))

    def keys(self) -> list[Key]:
        return sorted(self.model_deployments)

    def __contains__(self, key: object) -> bool:
        return key in self.model_deployments

    def routed_through(self, namespace: str, route: str) -> list[Key]:
        """The ModelDeployments of `namespace` that put their weights on HTTPRoute `route`."""
        return sorted(
            key
            for key, store in self.model_deployments.items()
            if key[0] == namespace and any(route_of(body) == route for body in store)
        )

    def snapshot(self, key: Key) -> Snapshot | None:
        body = next(iter(self.model_deployments.get(key, ())), None)
        if body is None:
            return None
        owned = tuple(obj for index in self.owned for obj in index.get(key, ()))
        return Snapshot(body, owned)


@dataclass
class Expectations:
    """The writes of a ModelDeployment's last reconcile that its cache has not shown yet,
    by object: the resourceVersion the apiserver answered (None: a deletion). While one is
    awaited the ModelDeployment is not reconciled again (it would see the world as it was
    before its own writes and write them again); the watch event that shows the write
    schedules the next reconcile. An expectation not met within `timeout` is dropped (an
    event coalesced away by a later change, a watch being re-established)."""

    timeout: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _awaited: dict[Key, dict[ObjectKey, tuple[str | None, float, frozenset[str]]]] = field(
        default_factory=dict
    )

    def expect(
        self,
        key: Key,
        kind: str,
        name: str,
        version: str | None,
        *,
        read: str | None,
        cached: str | None,
        earlier: Collection[str] = (),
    ) -> None:
        """After the reconcile's last write of an object answered with `version`; `read`: the
        version it read (None: none), `cached`: what the cache holds now, `earlier`: the
        versions its earlier writes of that object made (status is written twice when the
        outbox is emptied). The watch event may have come in first (the cache holds another
        version than the one read and than its own earlier writes: ours, or a later one such
        as a controller's status update): then there is nothing to wait for."""
        if version == cached or (cached != read and cached not in earlier):
            return
        deadline = self.clock() + self.timeout
        self._awaited.setdefault(key, {})[(kind, name)] = (version, deadline, frozenset(earlier))

    def seen(self, key: Key, kind: str, name: str, version: str | None) -> bool:
        """A watch event showed the object (`version` None: its deletion). True when it was
        the last one awaited for `key`. Any version counts, not only the one written: Kopf
        hands over only the latest of a burst of events about one object (the apiserver's
        own controllers often change an object right after the operator did), and
        resourceVersions are opaque, never to be compared for order."""
        awaited = self._awaited.get(key)
        if not awaited or (kind, name) not in awaited:
            return False
        if version is not None and awaited[(kind, name)][0] is None:
            return False  # a deletion is awaited: only the DELETED event shows it
        if version is not None and version in awaited[(kind, name)][2]:
            return False  # an earlier write of the same reconcile: its last is still to come
        del awaited[(kind, name)]
        if awaited:
            return False
        del self._awaited[key]
        return True

    def pending(self, key: Key) -> bool:
        awaited = self._awaited.get(key)
        if not awaited:
            return False
        now = self.clock()
        for obj in [obj for obj, (_, deadline, _) in awaited.items() if deadline <= now]:
            del awaited[obj]
        if not awaited:
            del self._awaited[key]
            return False
        return True

    def remaining(self, key: Key) -> float:
        """Seconds until nothing of `key` is awaited any more, whatever the watches show
        (0 when nothing is)."""
        deadlines = [deadline for _, deadline, _ in self._awaited.get(key, {}).values()]
        return max(0.0, max(deadlines, default=0.0) - self.clock())

    def forget(self, key: Key) -> None:
        self._awaited.pop(key, None)
