"""Kopf's watch streams, slimmed before Kopf holds the objects.

Kopf parses every listed and watched object whole (managedFields, pod specs, Deployment
templates, `kubectl apply`'s last-applied copy) and hands it to a task per object, which
holds it in its queue and keeps its last event while it idles; the indexes only keep what
the index handler returns (`watchcache.slim`). On a restart among N ModelDeployments, all
7N objects are listed at once and every object's task waits for the whole index to fill
before it lets go: at 1,000 the operator held 307 MiB after a restart, 152 MiB fresh
(bench/README.md, bench_scale). `install()` applies `watchcache.slim` to each object of
the watched resources as it leaves Kopf's `infinite_watch`, before the per-object tasks
exist; other resources (HTTPRoutes, Kopf's own CRD and namespace watches) pass as they are.

Kopf has no public hook for it: this wraps the private `kopf._cogs.clients.watching.
infinite_watch`, which `kopf._core.reactor.queueing.watcher` looks up on its module at
every (re)start of a watch. `install()` checks that shape first (the keyword arguments,
the look-up) and leaves Kopf alone, with a warning, when a Kopf release has changed it:
then only the indexes are slimmed, as before.
"""

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from kopf._cogs.clients import watching
from kopf._core.reactor import queueing

log = logging.getLogger(__name__)
_INSTALLED = "_modeldeploy_slimmed"
EXPECTED_PARAMETERS = ("settings", "resource", "namespace", "operator_paused", "_iterations")
"""`infinite_watch`'s keyword-only parameters in the Kopf releases this was checked against
(1.45.x)."""
SLIMMED_TYPES = (None, "ADDED", "MODIFIED", "DELETED")
"""Event types that carry a whole object (None: Kopf's mark of a listed one); BOOKMARK and
Kopf's own `Bookmark.LISTED` pass untouched."""
CHANGED = "kopf's watch stream has changed: it holds whole objects until indexed"
"""The warning when Kopf is left alone."""
Slim = Callable[[dict[str, Any]], dict[str, Any]]
Resource = tuple[str, str]  # (group, plural); "" is the core group


def shaped_as_expected() -> bool:
    """Whether Kopf's watch stream is the function this module wraps, and queueing reaches
    it through its module attribute (so a replacement there is what it calls)."""
    parameters = inspect.signature(watching.infinite_watch).parameters.values()
    keyword_only = all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    names = tuple(p.name for p in parameters)
    looked_up = {"watching", "infinite_watch"} <= set(queueing.watcher.__code__.co_names)
    return (
        keyword_only
        and names == EXPECTED_PARAMETERS
        and looked_up
        and inspect.isasyncgenfunction(watching.infinite_watch)
    )


async def _slimmed(stream: AsyncIterator[Any], slim: Slim) -> AsyncIterator[Any]:
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for event in stream:
            if isinstance(event, dict) and event.get("type") in SLIMMED_TYPES:
                # A new event: the whole object is left to the garbage collector now.
                yield {**event, "object": slim(event["object"])}
            else:
                yield event


def slimming(
    original: Callable[..., AsyncIterator[Any]], slim: Slim, resources: Collection[Resource]
) -> Callable[..., AsyncIterator[Any]]:
    """`original` (Kopf's `infinite_watch`), with `slim` applied to each object of
    `resources`."""

    def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
        stream = original(**kwargs)
        resource = kwargs["resource"]
        if (resource.group, resource.plural) not in resources:
            return stream
        return _slimmed(stream, slim)

    setattr(infinite_watch, _INSTALLED, True)
    return infinite_watch


def install(slim: Slim, resources: Collection[Resource]) -> bool:
    """Idempotent; False (and Kopf untouched) when its watch stream is not the expected
    one."""
    if getattr(watching.infinite_watch, _INSTALLED, False):
        return True
    if not shaped_as_expected():
        log.warning(CHANGED)
        return False
    watching.infinite_watch = slimming(watching.infinite_watch, slim, resources)
    return True
