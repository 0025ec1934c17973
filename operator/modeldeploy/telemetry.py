"""The operator's own metrics (prometheus-client), names from `modeldeploy.contract`, and the
attributes of its spans (`modeldeploy.tracing`).

    metrics = OperatorMetrics()              # its own registry: no process/GC collectors mixed
    metrics.serve("0.0.0.0", 8090)           # /metrics; False (logged) when the port is taken
    metrics.observe_round(key, "canary", outcome, seconds)   # the analysis glue
    metrics.observe_plan(key, events, status, seconds)       # the reconcile glue
    metrics.observe_owner(key, owner)        # spec.owner, as an info metric for alerts
    metrics.forget(key)                      # the ModelDeployment is gone

Series per ModelDeployment carry `namespace` and `name`; check names leave out their subject
(`feature-psi`, not `feature-psi/age`), so that label values stay few. Spans have no such
limit: a round's span names every check with its subject, value and verdict.
"""

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modeldeploy import contract as c
from modeldeploy.analysis.config import check_of
from modeldeploy.api import ModelDeploymentStatus, Owner
from modeldeploy.rollout import AnalysisSignal, Event, Plan

log = logging.getLogger("modeldeploy.telemetry")
Key = tuple[str, str]  # (namespace, name)

ROLLBACK_REASONS = ("RolledBack", "Aborted")
PROMOTED_REASON = "Promoted"
# Reconciles take milliseconds unless an analysis round waits for Prometheus.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _name(metric: str) -> str:
    """prometheus-client adds `_total` to counters itself."""
    return metric.removesuffix("_total")


def round_outcome(signal: AnalysisSignal) -> str:
    """pass | fail | inconclusive, or no_data: inconclusive for lack of data."""
    return "no_data" if signal.waiting == "no-data" else signal.verdict


def reconcile_attributes(key: Key, body: Mapping[str, Any]) -> dict[str, str]:
    """A reconcile span's attributes known before it runs."""
    return {
        "k8s.namespace.name": key[0],
        "modeldeploy.name": key[1],
        "modeldeploy.phase.before": str((body.get("status") or {}).get("phase", "")),
    }


def plan_attributes(decided: Plan) -> dict[str, str | int | list[str]]:
    """A reconcile span's attributes from the plan it made."""
    return {
        "modeldeploy.phase.after": decided.status.phase,
        "modeldeploy.events": len(decided.events),
        "modeldeploy.event_reasons": [e.reason for e in decided.events],
    }


def round_attributes(key: Key, track: str, signal: AnalysisSignal) -> dict[str, Any]:
    """An analysis round span's attributes: its verdict and every check's."""
    return {
        "k8s.namespace.name": key[0],
        "modeldeploy.name": key[1],
        "modeldeploy.track": track,
        "modeldeploy.revision": signal.revision,
        "modeldeploy.verdict": signal.verdict,
        "modeldeploy.outcome": round_outcome(signal),
        "modeldeploy.rollback": signal.rollback,
        "modeldeploy.samples": signal.samples,
        "modeldeploy.reason": signal.reason,
        "modeldeploy.checks": [
            f"{check.name} {check.verdict} value={check.value} "
            f"threshold={check.threshold} samples={check.samples}"
            for check in signal.checks
        ],
    }


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        md = (c.LABEL_NAMESPACE, c.LABEL_NAME)
        self.analyses = Counter(
            _name(c.OPERATOR_ANALYSES_TOTAL),
            "Analysis rounds run, by result (no_data: inconclusive for lack of data).",
            (*md, c.LABEL_TRACK, c.LABEL_RESULT),
            registry=self.registry,
        )
        self.analysis_duration = Histogram(
            c.OPERATOR_ANALYSIS_DURATION_SECONDS,
            "Time of one analysis round (queries and statistics).",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.verdicts = Counter(
            _name(c.OPERATOR_CHECK_VERDICTS_TOTAL),
            "Verdicts of single checks in analysis rounds.",
            (*md, c.LABEL_TRACK, c.LABEL_CHECK, c.LABEL_VERDICT),
            registry=self.registry,
        )
        self.check_value = Gauge(
            c.OPERATOR_CHECK_VALUE,
            "Value of a check in the last round (NaN without data); e.g. the stable's "
            "feature-psi after promotion.",
            (*md, c.LABEL_TRACK, c.LABEL_CHECK),
            registry=self.registry,
        )
        self.rollbacks = Counter(
            _name(c.OPERATOR_ROLLBACKS_TOTAL),
            "Rollbacks (RolledBack: by analysis, warm-up timeout or within bakeTime; "
            "Aborted: by a person).",
            (*md, c.LABEL_REASON),
            registry=self.registry,
        )
        self.promotions = Counter(
            _name(c.OPERATOR_PROMOTIONS_TOTAL),
            "Canaries promoted to stable.",
            md,
            registry=self.registry,
        )
        self.degraded = Gauge(
            c.OPERATOR_DEGRADED,
            "1 while the Degraded condition is True (reason: its reason), else 0.",
            (*md, c.LABEL_REASON),
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            c.OPERATOR_RECONCILE_DURATION_SECONDS,
            "Time of one reconcile of one ModelDeployment (analysis round included).",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.owner_info = Gauge(
            c.OPERATOR_OWNER_INFO,
            "1 per ModelDeployment, labelled with its spec.owner (empty when not set).",
            (*md, c.LABEL_TEAM, c.LABEL_CONTACT, c.LABEL_RUNBOOK_URL),
            registry=self.registry,
        )
        self._owner: dict[Key, tuple[str, str, str]] = {}
        self._degraded_reason: dict[Key, str] = {}
        self._checks: dict[Key, set[tuple[str, str]]] = {}  # (track, check) with a value
        self._server: WSGIServer | None = None

    def serve(self, address: str, port: int) -> bool:
        """Serve /metrics; a taken port is logged, not fatal: rollouts and rollbacks must go
        on without the operator's own metrics."""
        try:
            self._server, _ = start_http_server(port, addr=address, registry=self.registry)
        except OSError as err:
            log.error("cannot serve metrics on %s:%d: %s", address, port, err)
            return False
        log.info("metrics on http://%s:%d/metrics", address, port)
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def observe_round(self, key: Key, track: str, result: AnalysisSignal, seconds: float) -> None:
        """One analysis round, as the plan concluded it."""
        self.analyses.labels(*key, track, round_outcome(result)).inc()
        self.analysis_duration.observe(seconds)
        seen = self._checks.setdefault(key, set())
        for check in result.checks:
            name = check_of(check.name)
            self.verdicts.labels(*key, track, name, check.verdict).inc()
            value = check.value if check.value is not None else math.nan
            self.check_value.labels(*key, track, name).set(value)
            seen.add((track, name))

    def observe_plan(
        self, key: Key, events: Iterable[Event], status: ModelDeploymentStatus, seconds: float
    ) -> None:
        self.reconcile_duration.observe(seconds)
        for event in events:
            if event.reason in ROLLBACK_REASONS:
                self.rollbacks.labels(*key, event.reason).inc()
            elif event.reason == PROMOTED_REASON:
                self.promotions.labels(*key).inc()
        degraded = next((x for x in status.conditions if x.type == "Degraded"), None)
        if degraded is None:
            return
        old = self._degraded_reason.get(key)
        if old is not None and old != degraded.reason:
            self.degraded.remove(*key, old)
        self._degraded_reason[key] = degraded.reason
        self.degraded.labels(*key, degraded.reason).set(1 if degraded.status == "True" else 0)

    def observe_owner(self, key: Key, owner: Owner | None) -> None:
        """The owner's series, one per ModelDeployment: a changed owner replaces it."""
        labels = (
            (owner.team, owner.contact or "", owner.runbook_url or "") if owner else ("", "", "")
        )
        old = self._owner.get(key)
        if old == labels:
            return
        if old is not None:
            self.owner_info.remove(*key, *old)
        self._owner[key] = labels
        self.owner_info.labels(*key, *labels).set(1)

    def forget(self, key: Key) -> None:
        """Remove the gauges of a ModelDeployment that is gone (counters stay: they are
        cumulative, and a new one of the same name carries on counting)."""
        owner = self._owner.pop(key, None)
        if owner is not None:
            self.owner_info.remove(*key, *owner)
        reason = self._degraded_reason.pop(key, None)
        if reason is not None:
            self.degraded.remove(*key, reason)
        for track, check in self._checks.pop(key, set()):
            self.check_value.remove(*key, track, check)
