"""Kopf glue: watch ModelDeployments and what they own, reconcile each one level-based from
the watch cache, apply the Plan.

One reconcile = take the ModelDeployment and the objects labelled with its name (its
Deployments, Services, HPAs, PDBs and pods) from Kopf's indexes (`watchcache`), call the
pure `rollout.plan`, then write: status first when it changed (it records the decisions,
and holds the plan's Events: `rollout.outbox`), the objects that differ (server-side apply,
field manager `modeldeploy`), deletions, consumed command annotations, the Events, and
status again without them. Nothing is written when nothing changed, and nothing
is read from the API, except right before a destructive step (deleting a revision, rolling
back): then the ModelDeployment and its objects are read fresh and the plan is made again
on them, so a stale cache can delay a decision but never make a wrong one. An object the
cache does not know is created (`Kube.create`: it fails where the name exists), never
applied: someone else's object need not carry the label the cache watches by, and a
server-side apply (force) would take it over. A name found taken is read at each reconcile
until it is free (`Reconciler.held`).

A reconcile runs when a ModelDeployment's spec or command annotations change, when an object
it owns changes (a pod turns Ready, an HPA scales: within a fraction of a second), when its
last plan falls due on time alone (`Plan.due`: a step's interval ends, a bake, the next
analysis round; checked every `MODELDEPLOY_RECONCILE_INTERVAL` seconds, default 10, which is
also how soon a reconcile that could not finish is tried again), and for every
ModelDeployment every `MODELDEPLOY_RESYNC` seconds (default 300: the level-based safety net;
an idle ModelDeployment without analysis is planned once per resync). Deliberately no Kopf
timers and no change handlers: those make Kopf put a finalizer and its own annotations on
every object; event handlers and indexes persist nothing, so Kopf itself never writes,
deleting a ModelDeployment never waits for the operator, and owner references let the
garbage collector remove everything it owned.

With leader election (several replicas), every replica watches and keeps its cache warm;
only the lease holder reconciles, and its Kube refuses writes the moment it cannot be sure
it still holds the lease.
"""

import asyncio
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from modeldeploy import audit, kopf_toggles, kopf_transform, tracing
from modeldeploy.api import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    ANNOTATION_RETRY,
    GROUP,
    PLURAL,
    VERSION,
    GateAnswer,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PendingEvent,
    PendingNotification,
    to_wire,
)
from modeldeploy.kube import Conflict, Kube, KubeError, NotLeader
from modeldeploy.leader import LeaderElector, LeaseSettings
from modeldeploy.measure import AnalysisSettings, Measure
from modeldeploy.reconcile import Measured, plan
from modeldeploy.resources.kinds import OWNED_KINDS
from modeldeploy.resources.names import LABEL_NAME
from modeldeploy.rollout import (
    Event,
    NewObject,
    Plan,
    Subject,
    World,
    observe,
    refuse_privileges,
    refuse_without_proxy,
)
from modeldeploy.rollout.outbox import posted, with_outbox
from modeldeploy.rollout.webhooks import DELIVERY_ROUNDS, deliverable, delivered
from modeldeploy.routing.gateway_api import HTTP_ROUTE, observe_route, route_problem
from modeldeploy.telemetry import (
    OperatorMetrics,
    plan_attributes,
    reconcile_attributes,
    round_attributes,
)
from modeldeploy.watchcache import (
    MODEL_DEPLOYMENT_KIND,
    MODEL_DEPLOYMENTS_INDEX,
    OWNED,
    Expectations,
    Snapshot,
    WatchCache,
    slim,
)
from modeldeploy.webhooks import Webhooks, WebhookSettings
from modeldeploy.workqueue import WorkQueue

log = logging.getLogger("modeldeploy.operator")

INTERVAL_ENV = "MODELDEPLOY_RECONCILE_INTERVAL"
RESYNC_ENV = "MODELDEPLOY_RESYNC"
LOG_FORMAT_ENV = "MODELDEPLOY_LOG_FORMAT"  # plain (default) | json
DEFAULT_INTERVAL = 10.0
EXIT_AFTER_ENV = "MODELDEPLOY_TEST_EXIT_AFTER"
"""Test only (tests/integration/test_operator_events.py): the step of a reconcile after
which the process ends at once, with no cleanup, as a SIGKILL there would end it."""
EXIT_AFTER_EVENTS_WRITTEN = "events-written"
"""The status write that carries a transition and its Events, before they are posted."""
EXIT_AFTER_EVENTS_POSTED = "events-posted"
"""The pending Events posted, before the status write that clears them."""
EXIT_FOR_TEST_CODE = 86
LIST_CHUNK = 500
"""Objects per page of Kopf's initial lists (`settings.watching.chunk_size`): a restart
among 1,000 ModelDeployments lists 2,000 pods, parsed one page at a time, not at once."""
DEFAULT_RESYNC = 300.0
"""Seconds between passes that plan every ModelDeployment, due or not: what a missed watch
event or a wrong due time costs at most (client-go's informers resync on the same order)."""
WORKERS_ENV = "MODELDEPLOY_RECONCILE_WORKERS"
DEFAULT_WORKERS = 8
"""Reconciles at once (`--workers`). They wait on the apiserver (a reconcile's writes are
sequential), not on this process' CPU: at 4, creating 1,000 ModelDeployments queued (their
Ready condition p50 116 s); at 16 the operator's writes slowed the user's own apply of them
on 2 cores (bench/README.md, bench_scale)."""
COMMANDS = (ANNOTATION_PROMOTE, ANNOTATION_ABORT, ANNOTATION_RETRY)
OPERATOR_SERVICE = "modeldeploy-operator"
"""The operator's service.name in traces, unless OTEL_SERVICE_NAME says otherwise."""
ROUTE_NOT_USABLE = "RouteNotUsable"
"""Warning Event: the HTTPRoute of traffic.mode gatewayAPI is missing or cannot carry exact
weights (`routing.gateway_api.route_problem`)."""
Key = tuple[str, str]  # (namespace, name)
Body = dict[str, Any]


def exit_for_test(step: str) -> None:
    """End the process here when a test asked for it (`EXIT_AFTER_ENV`)."""
    if os.environ.get(EXIT_AFTER_ENV) == step:
        log.warning("%s=%s: exiting", EXIT_AFTER_ENV, step)
        os._exit(EXIT_FOR_TEST_CODE)


def measure_nothing(subject: Subject, world: World, now: datetime) -> Measured:
    """The measure seam's default: no analysis, the rollout advances on time only. The
    operator injects `measure.Measure` (Prometheus' answers for the round due, if any)."""
    return Measured()


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


def destructive(subject: Subject, decided: Plan) -> bool:
    """Deletes a revision's objects, or rolls the canary back: worth one fresh read."""
    rolls_back = decided.status.phase == "RolledBack" and subject.status.phase != "RolledBack"
    return bool(decided.delete) or rolls_back


Written = tuple[str, str, str | None]  # (kind, name, resourceVersion; None: deleted)


@dataclass(frozen=True)
class Reconciled:
    """What one reconcile wrote (for the expectations) and when it is due again."""

    written: list[Written]
    due: datetime | None
    """`Plan.due`; the reconcile's own `now` when it could not finish (a write failed or
    was refused, a name it would create is taken): tried again at the next pass."""
    again: bool = False
    """A create found its name taken: reconcile again at once, knowing what holds it."""


@dataclass
class Reconciler:
    kube: Kube
    measure: Callable[[Subject, World, datetime], Measured] = measure_nothing
    metrics: OperatorMetrics | None = None
    leading: Callable[[], bool] = lambda: True
    """Whether this replica may reconcile (the leader lease holder, or the only replica)."""
    cache: WatchCache | None = None
    """Kopf's indexes, once a handler has been called (Kopf fills them all first)."""
    expectations: Expectations = field(default_factory=Expectations)
    essence: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    held: dict[Key, set[tuple[str, str]]] = field(default_factory=dict)
    """(kind, name) a create found taken by an object this ModelDeployment does not control
    (it may lack the label the watches select by): read at each reconcile until it is free."""
    planned: dict[Key, datetime | None] = field(default_factory=dict)
    """When each ModelDeployment's last finished reconcile is due again (None: on a change
    only). Missing: never planned, or skipped since (the next pass reconciles it)."""
    errors: dict[Key, str] = field(default_factory=dict)
    reported: set[tuple[Key, str]] = field(default_factory=set)
    route_writes: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, HTTPRoute) -> the resourceVersion this operator's last patch of it made:
    the watch event of that write is no change by someone else."""
    reconciles: int = 0
    fresh_reads: int = 0
    allow_privileged_models: bool = False
    """Run pods whose template has securityProfile privileged and asks for privileges."""
    proxy_image: str | None = None
    """The `modeldeploy proxy` image run beside external V2 servers (None: such specs are
    refused)."""
    workers: int = DEFAULT_WORKERS
    webhooks: Webhooks | None = None
    """Asks the gates and delivers the notifications (None: one that may call no host, so
    gates refuse and notifications fail, saying why)."""

    def __post_init__(self) -> None:
        if self.webhooks is None:
            self.webhooks = Webhooks(self.kube, WebhookSettings())
        self.queue: WorkQueue[Key] = WorkQueue(self.run, workers=self.workers)
        # Its own threads: asyncio's default executor has min(32, cores + 4), 6 on 2 cores.
        self.threads = ThreadPoolExecutor(self.workers, thread_name_prefix="reconcile")

    def forget(self, key: Key) -> None:
        self.essence.pop(key, None)
        self.planned.pop(key, None)
        self.held.pop(key, None)
        self.errors.pop(key, None)
        self.expectations.forget(key)
        self.reported = {r for r in self.reported if r[0] != key}
        if self.metrics is not None:
            self.metrics.forget(key)

    def changed(self, key: Key, body: Body) -> bool:
        """Spec (generation) or command annotations changed since the last reconcile."""
        meta = body.get("metadata", {})
        annotations = meta.get("annotations") or {}
        essence = (meta.get("generation"), tuple(annotations.get(c) for c in COMMANDS))
        if self.essence.get(key) == essence:
            return False
        self.essence[key] = essence
        return True

    def schedule(self, key: Key) -> None:
        """Reconcile `key` soon (before the periodic pass's entries)."""
        self.queue.add(key)

    def schedule_all(self) -> None:
        """The resync: every cached ModelDeployment, behind what events asked for."""
        for key in self.cache.keys() if self.cache is not None else ():
            self.queue.add(key, urgent=False)

    def schedule_due(self, now: datetime) -> None:
        """The periodic pass: the ModelDeployments whose last plan is due by `now`, or that
        have none, behind what events asked for."""
        for key in self.cache.keys() if self.cache is not None else ():
            due = self.planned.get(key, now)
            if due is not None and due <= now:
                self.queue.add(key, urgent=False)

    async def run(self, key: Key) -> None:
        """One reconcile of `key` (the queue's work: never two at once for one key)."""
        # Unplanned until it finishes: a skip or a failure is picked up by the next pass.
        self.planned.pop(key, None)
        if self.cache is None or not self.leading():
            return
        loop = asyncio.get_running_loop()
        if self.expectations.pending(key):
            # The watch event that shows the last write schedules it; else the wait's end
            # does (an event coalesced away, a watch being re-established), not the pass.
            later = functools.partial(self.queue.add, key, urgent=False)
            loop.call_later(self.expectations.remaining(key), later)
            return
        snapshot = self.cache.snapshot(key)
        if snapshot is None:
            return
        try:
            reconciled = await loop.run_in_executor(
                self.threads, self.traced_reconcile, key, snapshot
            )
        except NotLeader:
            log.info("%s/%s: lost the lease while reconciling; left to the leader", *key)
            return
        self.planned[key] = reconciled.due
        if reconciled.again:
            self.schedule(key)
        now_cached = self.cache.snapshot(key)
        versions: dict[tuple[str, str], list[str | None]] = {}
        for kind, name, version in reconciled.written:
            versions.setdefault((kind, name), []).append(version)
        for (kind, name), written in versions.items():
            cached = now_cached.resource_version(kind, name) if now_cached else None
            read = snapshot.resource_version(kind, name)
            earlier = [v for v in written[:-1] if v is not None]
            self.expectations.expect(
                key, kind, name, written[-1], read=read, cached=cached, earlier=earlier
            )

    def report_once(self, key: Key, body: Body, event: Event, now: datetime) -> None:
        """Post an Event about an odd situation once per operator process, not per tick."""
        if (key, event.message) in self.reported:
            return
        self.reported.add((key, event.message))
        log.warning("%s/%s: %s", *key, event.message)
        name = f"{key[1]}.{uuid.uuid4().hex[:16]}"
        audit.write([audit.unrecorded(body, name, event, now)])
        try:
            self.kube.post_event(body, event, now, name)
        except KubeError as err:
            log.warning("cannot post event on %s/%s: %s", *key, err)

    def subject_of(self, key: Key, body: Body, now: datetime) -> Subject | None:
        """The ModelDeployment as the core reads it; None when there is nothing to do (being
        deleted, or a spec that cannot be read: reported once)."""
        namespace, name = key
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None  # the garbage collector removes what it owned
        try:
            spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError as err:
            self.report_once(key, body, Event("Warning", "InvalidSpec", str(err)), now)
            return None
        status, note = read_status(body.get("status"))
        if note:
            self.report_once(key, body, Event("Warning", "StatusUnreadable", note), now)
        return Subject(
            name=name,
            namespace=namespace,
            uid=meta["uid"],
            generation=int(meta.get("generation", 0)),
            spec=spec,
            status=status,
            annotations=meta.get("annotations") or {},
            proxy_image=self.proxy_image,
        )

    def refusal(self, subject: Subject, now: datetime) -> Plan | None:
        """The Plan for a spec this operator does not run (privileged pods, unless allowed;
        an external server without a proxy image): only status and an Event say why; None
        for any other spec."""
        if subject.spec.external_server is not None and subject.proxy_image is None:
            return refuse_without_proxy(subject, now)
        privileges = subject.spec.privileges()
        if not privileges or self.allow_privileged_models:
            return None
        return refuse_privileges(subject, privileges, now)

    def read_fresh(self, key: Key) -> Snapshot | None:
        self.fresh_reads += 1
        body = self.kube.get_model_deployment(*key)
        if body is None:
            return None
        return Snapshot(body, tuple(self.kube.list_owned(*key)))

    def traced_reconcile(self, key: Key, snapshot: Snapshot) -> Reconciled:
        """`reconcile` in a span (with tracing on): phases before and after, Events, writes,
        and the analysis round as a child."""
        with tracing.span("reconcile", reconcile_attributes(key, snapshot.body)) as span:
            reconciled = self.reconcile(key, snapshot)
            span.set({"modeldeploy.writes": len(reconciled.written)})
            return reconciled

    def reconcile(self, key: Key, snapshot: Snapshot) -> Reconciled:
        """One reconcile (in a worker thread): what it wrote, and when it is due again."""
        started = time.monotonic()
        self.reconciles += 1
        now = datetime.now(UTC)
        subject = self.subject_of(key, snapshot.body, now)
        if subject is None:
            return Reconciled([], None)
        refused = self.refusal(subject, now)
        if refused is not None:
            # Only a change (the spec, or an operator allowing privileges) moves it.
            return Reconciled(self.execute(subject, snapshot.body, refused, now, started), None)
        try:
            held = self.read_held(key) + self.read_route(key, subject, snapshot.body, now)
        except KubeError as err:
            log.warning("%s/%s: cannot read names others hold: %s; again next time", *key, err)
            return Reconciled([], now)
        world = observe(subject.uid, (*snapshot.owned, *held))
        self.release_held(key, world)
        held_before = set(self.held.get(key, ()))
        measured = self.measure(subject, world, now)
        decided = plan(subject, world, measured, now, self.errors.get(key))
        answers: tuple[GateAnswer, ...] = ()
        if decided.asks and self.webhooks is not None:
            # The gates this plan waits for, asked (with the analysis it just recorded); the
            # plan made again with their answers.
            asking = replace(subject, status=decided.status)
            answers = self.webhooks.ask(asking, decided.asks, now.replace(microsecond=0))
            decided = plan(subject, world, measured, now, self.errors.get(key), answers=answers)
        if destructive(subject, decided):
            # The same measurements, on the world as it is now: a cache that missed a
            # change (a pod gone, a newer status) must not delete or roll back on its own.
            fresh = self.read_fresh(key)
            fresh_subject = None if fresh is None else self.subject_of(key, fresh.body, now)
            if fresh is None or fresh_subject is None or self.refusal(fresh_subject, now):
                # Gone, unreadable, or refused: the next pass writes what it says.
                return Reconciled([], now)
            snapshot, subject = fresh, fresh_subject
            world = observe(subject.uid, (*snapshot.owned, *held))
            decided = plan(subject, world, measured, now, self.errors.get(key), answers=answers)
        for text in world.notes:
            self.report_once(key, snapshot.body, Event("Warning", "OddObject", text), now)
        self.observe_round(key, measured, decided)
        written = self.execute(subject, snapshot.body, decided, now, started)
        # A status write refused (Conflict) writes nothing; a failed write is in `errors`.
        status_landed = bool(written) or to_wire(decided.status) == snapshot.body.get("status")
        taken = self.held.get(key, set())
        # A name someone else holds is not watched, nor is the HTTPRoute (its weights just
        # written are read back into status.canaryWeight): read again at the next pass. A
        # gate the plan made with the answers still waits for is asked at the next pass too.
        unfinished = bool(taken) or key in self.errors or not status_landed or bool(decided.asks)
        unfinished = unfinished or decided.route is not None
        return Reconciled(written, now if unfinished else decided.due, again=taken != held_before)

    def observe_round(self, key: Key, measured: Measured, decided: Plan) -> None:
        """The round this reconcile ran, in the log, the operator's metrics and a span (the
        time of its queries, with the verdict the plan concluded)."""
        signal, request = decided.round, measured.request
        if signal is None or request is None:
            return
        track = request.target.track.value
        level = logging.DEBUG if signal.verdict == "pass" else logging.INFO
        log.log(
            level, "%s/%s analysis of %s %s (%.2fs): %s%s", *key, track, signal.revision,
            measured.seconds, signal.reason, " -> rollback" if signal.rollback else "",
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.observe_round(key, track, signal, measured.seconds)
        tracing.record("analysis round", measured.seconds, round_attributes(key, track, signal))

    def read_held(self, key: Key) -> list[Body]:
        """The objects holding the names a create found taken, listed by name (a field
        selector: the operator's RBAC has list, not get). Rare: only names someone else
        took; an idle reconcile of everyone else reads nothing."""
        found: list[Body] = []
        for kind, name in sorted(self.held.get(key, ())):
            self.fresh_reads += 1
            query = {"fieldSelector": f"metadata.name={name}"}
            listed = self.kube.get(OWNED_KINDS[kind].collection(key[0]), query)
            for item in listed.get("items") or []:
                found.append({**item, "apiVersion": OWNED_KINDS[kind].api_version, "kind": kind})
        return found

    def read_route(self, key: Key, subject: Subject, body: Body, now: datetime) -> list[Body]:
        """The user's HTTPRoute of `traffic.httpRoute` (traffic.mode gatewayAPI): read at
        every reconcile, as it is not the operator's and carries none of its labels; why it
        cannot carry the weights is reported once."""
        traffic = subject.spec.rollout.traffic
        if traffic.mode != "gatewayAPI" or traffic.http_route is None:
            return []
        self.fresh_reads += 1
        try:
            route = self.kube.get_route(key[0], traffic.http_route)
        except NotLeader:
            raise
        except KubeError as err:  # e.g. forbidden: the chart's rbac.gatewayAPI is off
            why = f"cannot read HTTPRoute {traffic.http_route}: {err}"
            self.report_once(key, body, Event("Warning", ROUTE_NOT_USABLE, why), now)
            return []
        observed = None if route is None else observe_route(route)
        problem = route_problem(observed, traffic.http_route, subject.name)
        if problem:
            self.report_once(key, body, Event("Warning", ROUTE_NOT_USABLE, problem), now)
        return [] if route is None else [route]

    def release_held(self, key: Key, world: World) -> None:
        """Forget the held names that are free again (the plan creates them) or turned out
        to be this ModelDeployment's own (an object the cache had not seen yet)."""
        still = {ref for ref in self.held.get(key, ()) if ref in world.foreign}
        if still:
            self.held[key] = still
        else:
            self.held.pop(key, None)

    def execute(
        self, subject: Subject, body: Body, decided: Plan, now: datetime, started: float
    ) -> list[Written]:
        """Write what `decided` says: status first (with the plan's Events pending in it: the
        outbox), objects, consumed commands, then post the pending Events and clear them."""
        key = (subject.namespace, subject.name)
        namespace, name = key
        tracing.annotate(plan_attributes(decided))
        written: list[Written] = []
        version = body["metadata"].get("resourceVersion", "")
        status = with_outbox(subject, decided, version, now)
        wire = to_wire(status)
        latest = body  # the ModelDeployment as its last write left it
        if wire != body.get("status"):
            try:
                latest = self.kube.replace_status(body, wire)
            except Conflict:
                log.info("%s/%s changed while reconciling; again next time", *key)
                return written
            written.append(_version_of(latest))
            if decided.events:
                exit_for_test(EXIT_AFTER_EVENTS_WRITTEN)
        # Recorded in status (or nothing to record there): the plan's decisions are taken.
        audit.write(audit.decisions(subject, decided, version, now))
        written += self.change_objects(key, body, decided, now)
        if decided.remove_annotations:
            latest = self.kube.remove_annotations(namespace, name, decided.remove_annotations)
            written.append(_version_of(latest))
        due = deliverable(status, now)
        if status.pending_events or due:
            if status.pending_events:
                self.post_pending(key, body, status.pending_events)
                exit_for_test(EXIT_AFTER_EVENTS_POSTED)
            final = self.notify(subject, body, posted(status), due, now)
            try:
                written.append(_version_of(self.kube.replace_status(latest, to_wire(final))))
            except Conflict:
                # Posted and delivered; the next reconcile posts them again (AlreadyExists)
                # and delivers them again (the same idempotency key), then clears them.
                log.info("%s/%s changed before its posted Events left status", *key)
        if self.metrics is not None:
            seconds = time.monotonic() - started
            self.metrics.observe_plan(key, decided.events, decided.status, seconds)
            self.metrics.observe_owner(key, subject.spec.owner)
        return written

    def notify(
        self,
        subject: Subject,
        body: Body,
        status: ModelDeploymentStatus,
        due: list[PendingNotification],
        now: datetime,
    ) -> ModelDeploymentStatus:
        """Deliver the notifications due; the status without those delivered or given up (a
        Warning Event says which), the others to be tried again later."""
        if not due or self.webhooks is None:
            return status
        failures = self.webhooks.deliver(subject, due, now)
        status, given_up = delivered(status, failures, [n.name for n in due], now)
        key = (subject.namespace, subject.name)
        for item, why in given_up:
            message = (
                f"{item.webhook}: {item.event} of {item.revision} not delivered in "
                f"{DELIVERY_ROUNDS} rounds: {why}"
            )
            self.report_once(key, body, Event("Warning", "NotificationFailed", message), now)
        for name, why in failures.items():
            log.warning("%s/%s notification %s failed: %s", *key, name, why)
        return status

    def post_pending(self, key: Key, body: Body, pending: list[PendingEvent]) -> None:
        """Post the outbox' Events; one already there (AlreadyExists) was posted before a
        restart or by the previous leader. Another failure is logged and not retried, as an
        idle ModelDeployment must cost no writes."""
        for event in pending:
            log.info("%s/%s %s: %s", *key, event.reason, event.message)
            try:
                self.kube.post_event(body, event, event.time, event.name)
            except NotLeader:
                raise  # still pending in status: the new leader posts them
            except Conflict:
                log.info("%s/%s: Event %s was posted already", *key, event.name)
            except KubeError as err:
                log.warning("cannot post event on %s/%s: %s", *key, err)

    def change_objects(self, key: Key, body: Body, decided: Plan, now: datetime) -> list[Written]:
        """Create or apply, patch the HTTPRoute's weights, then delete; carry on past a
        failure (the next reconcile retries it) and surface the first one in status
        (Degraded, ApplyFailed) and once as an Event.
        A create whose name is taken stops the rest: nothing after it (the Services come
        after the Deployments they send traffic to) is written before the plan is made again
        knowing what holds the name."""
        failures: list[str] = []
        written: list[Written] = []
        apply, route, delete = decided.apply, decided.route, decided.delete
        for obj in apply:
            kind, name = obj["kind"], obj["metadata"]["name"]
            new = isinstance(obj, NewObject)
            try:
                written.append(_version_of(self.kube.create(obj) if new else self.kube.apply(obj)))
            except NotLeader:
                raise
            except KubeError as err:
                if new and isinstance(err, Conflict):
                    log.info("%s/%s: %s/%s exists; planned again knowing it", *key, kind, name)
                    self.held.setdefault(key, set()).add((kind, name))
                    return written
                failures.append(f"apply {kind}/{name}: {err}")
        if route is not None:
            try:
                # Not in `written`: a route carries no label of the operator's, so no
                # expectation awaits it; it is read fresh at every reconcile.
                patched = self.kube.patch_route(key[0], route)
                version = (patched.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.route_writes[key[0], route.name] = str(version)
            except NotLeader:
                raise
            except KubeError as err:  # a route changed since it was read fails its test
                failures.append(f"patch {HTTP_ROUTE.kind}/{route.name}: {err}")
        for ref in delete:
            try:
                self.kube.delete(key[0], ref)
                written.append((ref.kind, ref.name, None))
            except NotLeader:
                raise
            except KubeError as err:
                failures.append(f"delete {ref}: {err}")
        if failures:
            error = failures[0][:512]
            self.errors[key] = error
            self.report_once(key, body, Event("Warning", "ApplyFailed", error), now)
        elif apply or delete or route:
            self.errors.pop(key, None)
        return written


def _version_of(stored: Body) -> Written:
    meta = stored.get("metadata") or {}
    return (str(stored.get("kind")), str(meta.get("name")), meta.get("resourceVersion"))


# --- Kopf handlers -----------------------------------------------------------------------


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # Events are the operator's own, posted on transitions
    settings.watching.chunk_size = LIST_CHUNK
    for watched in OWNED:
        # Server-side: only objects with the label reach this process (every pod of a big
        # cluster would otherwise be listed, watched and filtered here).
        settings.watching.label_selectors[watched.group, watched.version, watched.plural] = (
            LABEL_NAME
        )
    lease: LeaseSettings | None = memo.get("lease")
    elector = None
    if lease is not None:
        elector = LeaderElector(Kube(), lease)
    workers = int(memo.get("workers") or os.environ.get(WORKERS_ENV) or DEFAULT_WORKERS)
    kube = Kube(may_write=elector.is_leader if elector else None, connections=workers + 4)
    metrics = OperatorMetrics()
    port = memo.get("metrics_port")
    if port:
        metrics.serve(memo.get("metrics_address") or "0.0.0.0", int(port))
    measure = Measure(kube, memo.get("analysis") or AnalysisSettings())
    memo.measure = measure
    reconciler = Reconciler(
        kube,
        measure=measure,
        webhooks=Webhooks(kube, memo.get("webhooks") or WebhookSettings()),
        metrics=metrics,
        allow_privileged_models=bool(memo.get("allow_privileged_models")),
        proxy_image=memo.get("proxy_image") or None,
        workers=workers,
    )
    if elector is not None:
        reconciler.leading = elector.is_leader
    memo.reconciler = reconciler
    memo.elector = elector
    interval = float(memo.get("interval") or os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL)
    resync = float(memo.get("resync") or os.environ.get(RESYNC_ENV) or DEFAULT_RESYNC)
    memo.tasks = [
        asyncio.create_task(reconciler.queue.run()),
        asyncio.create_task(periodic(reconciler, interval, resync)),
    ]
    if elector is not None:
        memo.tasks.append(asyncio.create_task(elector.run(reconciler.schedule_all)))
    log.info(
        "API server %s (%s), due reconciles every %.1fs, all every %.0fs",
        kube.server, kube.source, interval, resync,
    )  # fmt: skip


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("tasks") or ():
        task.cancel()
    elector: LeaderElector | None = memo.get("elector")
    if elector is not None:
        await asyncio.to_thread(elector.release)
    measure = memo.get("measure")
    if measure is not None:
        measure.close()


async def periodic(reconciler: Reconciler, interval: float, resync: float) -> None:
    """Every `interval`, the ModelDeployments that are due; every `resync`, all of them
    (level-based, from the cache: no API reads). A standby schedules nothing."""
    loop = asyncio.get_running_loop()
    last_resync = loop.time()
    while True:
        await asyncio.sleep(interval)
        if not reconciler.leading():
            continue
        if loop.time() - last_resync >= resync:
            last_resync = loop.time()
            reconciler.schedule_all()
        else:
            reconciler.schedule_due(datetime.now(UTC))


def _attach(memo: kopf.Memo, kwargs: dict[str, Any]) -> Reconciler:
    """The reconciler, given the cache the first time (Kopf's indexes come as keyword
    arguments of handlers only, and only once all of them are filled)."""
    reconciler: Reconciler = memo.reconciler
    if reconciler.cache is None:
        reconciler.cache = WatchCache.from_handler_kwargs(kwargs)
    return reconciler


@kopf.index(GROUP, VERSION, PLURAL, id=MODEL_DEPLOYMENTS_INDEX)
async def index_model_deployment(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[Key, Body]:
    return {(namespace or "", name): slim(body)}


async def index_owned(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Key, Body]:
    return {(namespace or "", labels[LABEL_NAME]): slim(body)}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    reconciler = _attach(memo, kwargs)
    key = (namespace or "", name)
    if event.get("type") == "DELETED":
        reconciler.forget(key)
        return
    version = body.get("metadata", {}).get("resourceVersion")
    awaited = reconciler.expectations.seen(key, MODEL_DEPLOYMENT_KIND, name, version)
    if reconciler.changed(key, dict(body)) or awaited:
        reconciler.schedule(key)


async def on_owned_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    *,
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """An owned object or pod changed: its ModelDeployment is reconciled at once."""
    reconciler = _attach(memo, kwargs)
    key = (namespace or "", labels[LABEL_NAME])
    if reconciler.cache is None or key not in reconciler.cache:
        return
    deleted = event.get("type") == "DELETED"
    version = None if deleted else body.get("metadata", {}).get("resourceVersion")
    reconciler.expectations.seen(key, str(body.get("kind")), name, version)
    reconciler.schedule(key)


async def on_route_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    *,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Someone changed or deleted an HTTPRoute (by hand, GitOps): the ModelDeployments that
    put their weights on it are reconciled at once, not at the next resync. The operator's
    own patch (known by the resourceVersion it made) changes nothing."""
    reconciler = _attach(memo, kwargs)
    version = body.get("metadata", {}).get("resourceVersion")
    route = (namespace or "", name)
    if event.get("type") != "DELETED" and reconciler.route_writes.get(route) == version:
        return
    if reconciler.cache is not None:
        for key in reconciler.cache.routed_through(*route):
            reconciler.schedule(key)


def watch_http_routes() -> None:
    """Watch HTTPRoutes (list + watch on them: the chart's rbac.gatewayAPI); without it a
    hand edit of a route's weights is undone only at the next resync."""
    resource = (HTTP_ROUTE.group, HTTP_ROUTE.version, HTTP_ROUTE.plural)
    kopf.on.event(*resource, id="changed_httproutes")(on_route_event)


SLIMMED = frozenset({(GROUP, PLURAL), *((w.group, w.plural) for w in OWNED)})
"""The resources whose objects Kopf's watch streams slim (`kopf_transform`)."""

for _watched in OWNED:
    _resource = (_watched.group, _watched.version, _watched.plural)
    _labels = {LABEL_NAME: kopf.PRESENT}
    kopf.index(*_resource, id=_watched.index_id, labels=_labels)(index_owned)
    kopf.on.event(*_resource, id=f"changed_{_watched.plural}", labels=_labels)(on_owned_event)


@kopf.on.probe(id="stats")
def stats(memo: kopf.Memo, **_: Any) -> dict[str, int]:
    """Served on the liveness endpoint (cached by Kopf for 10 s)."""
    reconciler: Reconciler = memo.reconciler
    elector: LeaderElector | None = memo.get("elector")
    return {
        "resources": len(reconciler.cache.keys()) if reconciler.cache else 0,
        "reconciles": reconciler.reconciles,
        "writes": reconciler.kube.writes,
        "requests": reconciler.kube.requests,
        "freshReads": reconciler.fresh_reads,
        "leader": int(reconciler.leading()),
        "leaderTransitions": elector.transitions if elector else 0,
    }


def run_operator(
    namespaces: list[str],
    interval: float | None,
    liveness: str | None,
    verbose: bool,
    *,
    resync: float | None = None,
    workers: int | None = None,
    analysis: AnalysisSettings | None = None,
    lease: LeaseSettings | None = None,
    metrics_address: str = "0.0.0.0",
    metrics_port: int = 0,
    allow_privileged_models: bool = False,
    proxy_image: str | None = None,
    webhooks: WebhookSettings | None = None,
    http_routes: bool = False,
) -> None:
    """Run the operator in this process until interrupted (the `modeldeploy operator`
    command). `interval`: seconds between passes over what is due; `resync`: between passes
    over everything; `workers`: reconciles at once (None: their environment variables, else
    the defaults). Kopf standalone (no peering objects): `lease` set, the replicas elect a
    leader over a coordination.k8s.io Lease; else this is the only replica. `analysis`: the
    default Prometheus and how to query it; `metrics_port` 0: no metrics endpoint;
    `allow_privileged_models`: run pod templates with securityProfile privileged;
    `proxy_image`: the `modeldeploy proxy` image beside external V2 servers (None: refused);
    `webhooks`: the hosts webhooks may call; `http_routes`: watch HTTPRoutes."""
    log_format = os.environ.get(LOG_FORMAT_ENV, "plain").strip().lower()
    if log_format not in ("plain", "json"):
        raise ValueError(f"{LOG_FORMAT_ENV}={log_format!r}: use plain or json")
    formats = {"plain": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}
    kopf.configure(verbose=verbose, log_format=formats[log_format])
    audit.install()
    kopf_toggles.install()
    kopf_transform.install(slim, SLIMMED)
    tracing.setup(OPERATOR_SERVICE)
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if http_routes:
        watch_http_routes()
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(
            interval=interval,
            resync=resync,
            workers=workers,
            analysis=analysis or AnalysisSettings(),
            lease=lease,
            metrics_address=metrics_address,
            metrics_port=metrics_port,
            allow_privileged_models=allow_privileged_models,
            proxy_image=proxy_image,
            webhooks=webhooks or WebhookSettings(),
        ),
    )
