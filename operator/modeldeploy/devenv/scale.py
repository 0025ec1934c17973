"""The pure parts of the scale bench (`bench/bench_scale.py`): its workload, what counts as
Ready, and how the apiserver's audit log and metrics and a process's /proc are read.

    children = first_children(model_deployment("m-0001", "scale"))   # the raw-apply twin
    ready = Milestones(deployment_ready, key=model_name)
    ready.observe(deployment, now)              # ready.times: first moment each one held
    count_audit(lines, OPERATOR_USER, start, end).requests
"""

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from modeldeploy.api import GROUP, VERSION, ModelDeploymentSpec, ModelDeploymentStatus
from modeldeploy.devenv.cluster import NODE_CAPACITY
from modeldeploy.resources.names import LABEL_NAME
from modeldeploy.rollout import NO_ANALYSIS, Subject, observe, plan

Body = dict[str, Any]
# kwok runs no containers: any reference pinned by digest (the default imagePolicy) will do.
MODEL_IMAGE = "example.invalid/scale/model@sha256:" + "0" * 64
MUTATING_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Pods a node takes up to this share of its capacity (the scheduler needs room to place them).
NODE_FILL = 0.8


def model_deployment(name: str, namespace: str, image: str = MODEL_IMAGE) -> Body:
    """A ModelDeployment with the default spec (minWarm 2, no fallback)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"name": name, "version": "1"}, "image": image},
    }


def first_children(body: Body) -> list[Body]:
    """What the operator's first reconcile of `body` applies (the pure machine's plan for an
    empty world), without owner references: their owner does not exist, and the garbage
    collector would delete them."""
    meta = body["metadata"]
    subject = Subject(
        name=meta["name"],
        namespace=meta["namespace"],
        uid="00000000-0000-0000-0000-000000000000",
        generation=1,
        spec=ModelDeploymentSpec.model_validate(body["spec"]),
        status=ModelDeploymentStatus(),
    )
    decided = plan(subject, observe(subject.uid, []), NO_ANALYSIS, datetime.now(UTC))
    children = []
    for child in decided.apply:
        child_meta = {k: v for k, v in child["metadata"].items() if k != "ownerReferences"}
        children.append({**child, "metadata": child_meta})
    return children


def nodes_for(pods: int) -> int:
    """kwok nodes for `pods` at the project's node capacity (at least the usual 3)."""
    return max(3, math.ceil(pods / (int(NODE_CAPACITY["pods"]) * NODE_FILL)))


def model_name(body: Body) -> str:
    """The ModelDeployment an object belongs to (its own name for a ModelDeployment)."""
    meta = body["metadata"]
    if body.get("kind") == "ModelDeployment":
        return str(meta["name"])
    return str((meta.get("labels") or {}).get(LABEL_NAME, ""))


def deployment_ready(deployment: Body) -> bool:
    """Every wanted pod of the current template Ready (and the controller has seen the
    current spec)."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    return (
        wanted > 0
        and int(status.get("observedGeneration") or 0) >= int(deployment["metadata"]["generation"])
        and int(status.get("updatedReplicas") or 0) >= wanted
        and int(status.get("readyReplicas") or 0) >= wanted
    )


def scaled_to_zero(deployment: Body) -> bool:
    """0 replicas wanted and none left."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    return int(spec.get("replicas", 1)) == 0 and not status.get("replicas")


def condition_true(body: Body, kind: str) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def phase(body: Body) -> str:
    return str((body.get("status") or {}).get("phase") or "")


@dataclass
class Milestones:
    """The first moment each object (by `key`) was seen satisfying `holds`."""

    holds: Callable[[Body], bool]
    key: Callable[[Body], str] = model_name
    times: dict[str, float] = field(default_factory=dict)

    def observe(self, body: Body, now: float) -> None:
        key = self.key(body)
        if key not in self.times and self.holds(body):
            self.times[key] = now


def latencies(start: Mapping[str, float], end: Mapping[str, float]) -> list[float]:
    """end - start of every key that has both."""
    return [end[k] - start[k] for k in end if k in start]


# --- the operator's identity and the apiserver's view of it -----------------------------


def audit_policy(username: str) -> Body:
    """Every request of `username` at Metadata level, nothing else: the other clients of the
    cluster (controller-manager, scheduler, kwok, the bench) share one admin identity and
    cost the apiserver nothing to leave out. RequestReceived is left out (the same request
    again); a watch is logged when it starts and when it ends (one auditID)."""
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [{"level": "Metadata", "users": [username]}, {"level": "None"}],
    }


def token_kubeconfig(kubeconfig: Body, user: str, token: str) -> Body:
    """`kubeconfig`'s cluster with a bearer token as the only credentials."""
    cluster = kubeconfig["clusters"][0]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }


@dataclass(frozen=True)
class AuditCount:
    requests: int
    writes: int
    by_verb: dict[str, int]


def count_audit(lines: Iterable[str], username: str, start: datetime, end: datetime) -> AuditCount:
    """Requests by `username` received in [start, end), from audit log lines (JSON events;
    several stages of one request share its auditID and count once)."""
    seen: set[str] = set()
    verbs: Counter[str] = Counter()
    for line in lines:
        if not line.strip():
            continue
        event = json.loads(line)
        if (event.get("user") or {}).get("username") != username or event["auditID"] in seen:
            continue
        received = datetime.fromisoformat(event["requestReceivedTimestamp"])
        if start <= received < end:
            seen.add(event["auditID"])
            verbs[event["verb"]] += 1
    writes = sum(n for verb, n in verbs.items() if verb in MUTATING_VERBS)
    return AuditCount(sum(verbs.values()), writes, dict(verbs))


def apiserver_requests(metrics_text: str) -> float:
    """Total `apiserver_request_total` over every label set (every client, every verb)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "apiserver_request"
        for sample in family.samples
        if sample.name == "apiserver_request_total"
    )


@dataclass(frozen=True)
class ProcessSample:
    cpu_seconds: float  # user + system, since the process started
    rss_bytes: int
    peak_rss_bytes: int


def process_sample(stat: str, status: str, clock_ticks: int) -> ProcessSample:
    """From /proc/<pid>/stat and /proc/<pid>/status."""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    kib = {
        key: int(value.split()[0])
        for key, _, value in (line.partition(":") for line in status.splitlines())
        if key in ("VmRSS", "VmHWM")
    }
    return ProcessSample((utime + stime) / clock_ticks, kib["VmRSS"] * 1024, kib["VmHWM"] * 1024)


# --- printing ---------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "timed out" if value is None else f"{value:.1f}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, text_columns: int = 1) -> str:
    """The first `text_columns` left-aligned, the figures after them right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
