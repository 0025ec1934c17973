"""Kopf glue: watch ModelDeployments, reconcile each one level-based, apply the Plan.

One reconcile = read the ModelDeployment, its owned objects and its pods fresh, call the pure
`rollout.plan`, then write: status first when it changed (it records the decisions), the
objects that differ (server-side apply, field manager `modeldeploy`), deletions, consumed
command annotations, Events. Nothing is written when nothing changed.

It runs on every change of a ModelDeployment's spec or annotations (a Kopf event handler)
and for every known ModelDeployment every `MODELDEPLOY_RECONCILE_INTERVAL` seconds (a
background loop, default 10). Deliberately no Kopf timers and no change handlers: those make
Kopf put a finalizer and its own annotations on every object; event handlers persist
nothing, so Kopf itself never writes, deleting a ModelDeployment never waits for the
operator, and owner references let the garbage collector remove everything it owned.
"""

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from modeldeploy.analysis.judge import AnalysisSettings, Judge
from modeldeploy.api import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    ANNOTATION_RETRY,
    GROUP,
    PLURAL,
    VERSION,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    to_wire,
)
from modeldeploy.kube import Conflict, Kube, KubeError
from modeldeploy.rollout import (
    NO_ANALYSIS,
    AnalysisInput,
    Event,
    Subject,
    World,
    observe,
    plan,
)
from modeldeploy.telemetry import OperatorMetrics

log = logging.getLogger("modeldeploy.operator")

INTERVAL_ENV = "MODELDEPLOY_RECONCILE_INTERVAL"
LOG_FORMAT_ENV = "MODELDEPLOY_LOG_FORMAT"  # plain (default) | json
DEFAULT_INTERVAL = 10.0
CONCURRENCY = 4
COMMANDS = (ANNOTATION_PROMOTE, ANNOTATION_ABORT, ANNOTATION_RETRY)
Key = tuple[str, str]  # (namespace, name)
Body = dict[str, Any]


def gather_analysis(subject: Subject, world: World, now: datetime) -> AnalysisInput:
    """The analysis seam's default: no analysis, the rollout advances on time only. The
    operator injects `analysis.judge.Judge` (a round when one is due, its signal)."""
    return NO_ANALYSIS


def read_status(raw: Any) -> tuple[ModelDeploymentStatus, str | None]:
    """The stored status, or an empty one (the machine re-adopts revisions from the
    Deployments' track labels) with a note when it cannot be read."""
    if not raw:
        return ModelDeploymentStatus(), None
    try:
        return ModelDeploymentStatus.model_validate(raw), None
    except ValidationError as err:
        fields = ModelDeploymentStatus.model_fields.values()
        aliases = {f.alias for f in fields if f.alias}
        known = {k: v for k, v in raw.items() if k in aliases}
        try:
            return ModelDeploymentStatus.model_validate(known), None
        except ValidationError:
            return ModelDeploymentStatus(), f"status unreadable, starting over: {err}"


@dataclass
class Reconciler:
    kube: Kube
    analysis: Callable[[Subject, World, datetime], AnalysisInput] = gather_analysis
    metrics: OperatorMetrics | None = None
    known: set[Key] = field(default_factory=set)
    essence: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    errors: dict[Key, str] = field(default_factory=dict)
    reported: set[tuple[Key, str]] = field(default_factory=set)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENCY))
    reconciles: int = 0

    def forget(self, key: Key) -> None:
        self.known.discard(key)
        self.essence.pop(key, None)
        self.errors.pop(key, None)
        self.locks.pop(key, None)
        self.reported = {r for r in self.reported if r[0] != key}
        forget_analysis = getattr(self.analysis, "forget", None)
        if callable(forget_analysis):
            forget_analysis(key)
        if self.metrics is not None:
            self.metrics.forget(key)

    def changed(self, key: Key, body: Body) -> bool:
        """Spec (generation) or command annotations changed since the last reconcile."""
        meta = body.get("metadata", {})
        annotations = meta.get("annotations") or {}
        essence = (meta.get("generation"), tuple(annotations.get(c) for c in COMMANDS))
        self.known.add(key)
        if self.essence.get(key) == essence:
            return False
        self.essence[key] = essence
        return True

    async def run(self, key: Key) -> None:
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock, self.semaphore:
            try:
                await asyncio.to_thread(self.reconcile, key)
            except Exception:
                log.exception("reconcile of %s/%s failed", *key)

    def report_once(self, key: Key, body: Body, event: Event, now: datetime) -> None:
        """Post an Event about an odd situation once per operator process, not per tick."""
        if (key, event.message) in self.reported:
            return
        self.reported.add((key, event.message))
        log.warning("%s/%s: %s", *key, event.message)
        try:
            self.kube.post_event(body, event, now)
        except KubeError as err:
            log.warning("cannot post event on %s/%s: %s", *key, err)

    def reconcile(self, key: Key) -> None:
        namespace, name = key
        started = time.monotonic()
        self.reconciles += 1
        body = self.kube.get_model_deployment(namespace, name)
        if body is None:
            self.forget(key)
            return
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return  # the garbage collector removes what it owned
        now = datetime.now(UTC)
        try:
            spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError as err:
            self.report_once(key, body, Event("Warning", "InvalidSpec", str(err)), now)
            return
        if spec.rollout.traffic.mode != "replicas":
            why = "traffic.mode gatewayAPI is not implemented yet: traffic follows replica ratios"
            self.report_once(key, body, Event("Warning", "Unsupported", why), now)
        status, note = read_status(body.get("status"))
        if note:
            self.report_once(key, body, Event("Warning", "StatusUnreadable", note), now)
        subject = Subject(
            name=name,
            namespace=namespace,
            uid=meta["uid"],
            generation=int(meta.get("generation", 0)),
            spec=spec,
            status=status,
            annotations=meta.get("annotations") or {},
        )
        world = observe(subject.uid, self.kube.list_owned(namespace, name))
        for text in world.notes:
            self.report_once(key, body, Event("Warning", "OddObject", text), now)
        decided = plan(
            subject, world, self.analysis(subject, world, now), now, self.errors.get(key)
        )
        wire = to_wire(decided.status)
        if wire != body.get("status"):
            try:
                self.kube.replace_status(body, wire)
            except Conflict:
                log.info("%s/%s changed while reconciling; again next time", *key)
                return
        self.execute(key, body, decided.apply, decided.delete, now)
        if decided.remove_annotations:
            self.kube.remove_annotations(namespace, name, decided.remove_annotations)
        for event in decided.events:
            log.info("%s/%s %s: %s", namespace, name, event.reason, event.message)
            try:
                self.kube.post_event(body, event, now)
            except KubeError as err:
                log.warning("cannot post event on %s/%s: %s", *key, err)
        if self.metrics is not None:
            seconds = time.monotonic() - started
            self.metrics.observe_plan(key, decided.events, decided.status, seconds)

    def execute(
        self, key: Key, body: Body, apply: tuple[Body, ...], delete: Any, now: datetime
    ) -> None:
        """Apply, then delete; carry on past a failure (the next reconcile retries it) and
        surface the first one in status (Degraded, ApplyFailed) and once as an Event."""
        failures: list[str] = []
        for obj in apply:
            try:
                self.kube.apply(obj)
            except KubeError as err:
                failures.append(f"apply {obj['kind']}/{obj['metadata']['name']}: {err}")
        for ref in delete:
            try:
                self.kube.delete(key[0], ref)
            except KubeError as err:
                failures.append(f"delete {ref}: {err}")
        if failures:
            error = failures[0][:512]
            self.errors[key] = error
            self.report_once(key, body, Event("Warning", "ApplyFailed", error), now)
        elif apply or delete:
            self.errors.pop(key, None)


# --- Kopf handlers -----------------------------------------------------------------------


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # Events are the operator's own, posted on transitions
    kube = Kube()
    metrics = OperatorMetrics()
    port = memo.get("metrics_port")
    if port:
        metrics.serve(memo.get("metrics_address") or "0.0.0.0", int(port))
    judge = Judge(kube, memo.get("analysis") or AnalysisSettings(), metrics)
    memo.judge = judge
    memo.reconciler = Reconciler(kube, analysis=judge, metrics=metrics)
    interval = float(memo.get("interval") or os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL)
    memo.loop = asyncio.create_task(periodic(memo.reconciler, interval))
    log.info("API server %s (%s), reconciling every %.1fs", kube.server, kube.source, interval)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("loop")
    if task is not None:
        task.cancel()
    judge = memo.get("judge")
    if judge is not None:
        judge.close()


async def periodic(reconciler: Reconciler, interval: float) -> None:
    """Level-based: every known ModelDeployment is recomputed from what is observed."""
    while True:
        await asyncio.sleep(interval)
        await asyncio.gather(*(reconciler.run(key) for key in sorted(reconciler.known)))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    reconciler: Reconciler = memo.reconciler
    key = (namespace or "", name)
    if event.get("type") == "DELETED":
        reconciler.forget(key)
        return
    if reconciler.changed(key, dict(body)):
        await reconciler.run(key)


@kopf.on.probe(id="stats")
def stats(memo: kopf.Memo, **_: Any) -> dict[str, int]:
    """Served on the liveness endpoint (cached by Kopf for 10 s)."""
    reconciler: Reconciler = memo.reconciler
    return {
        "resources": len(reconciler.known),
        "reconciles": reconciler.reconciles,
        "writes": reconciler.kube.writes,
    }


def run_operator(
    namespaces: list[str],
    interval: float | None,
    liveness: str | None,
    verbose: bool,
    *,
    analysis: AnalysisSettings | None = None,
    metrics_address: str = "0.0.0.0",
    metrics_port: int = 0,
) -> None:
    """Run the operator in this process until interrupted (the `modeldeploy operator`
    command). Standalone: a single instance, no Kopf peering objects. `analysis`: the
    default Prometheus and how to query it; `metrics_port` 0: no metrics endpoint."""
    log_format = os.environ.get(LOG_FORMAT_ENV, "plain").strip().lower()
    if log_format not in ("plain", "json"):
        raise ValueError(f"{LOG_FORMAT_ENV}={log_format!r}: use plain or json")
    formats = {"plain": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}
    kopf.configure(verbose=verbose, log_format=formats[log_format])
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(
            interval=interval,
            analysis=analysis or AnalysisSettings(),
            metrics_address=metrics_address,
            metrics_port=metrics_port,
        ),
    )
