"""Views -> rich renderables: the tables people read. Pure (the clock comes in as `now`);
`text()` renders to plain text for tests and logs."""

import io
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from modeldeploy.api import Analysis
from modeldeploy.console.explain import bounds, unit
from modeldeploy.console.objects import MAX_PODS_SHOWN
from modeldeploy.console.views import Body, age, stage

PHASE_STYLES = {
    "Stable": "green",
    "Progressing": "cyan",
    "Promoting": "cyan",
    "Pending": "cyan",
    "Paused": "yellow",
    "Degraded": "yellow",
    "RolledBack": "red",
    "Killed": "bold red",
}
VERDICT_STYLES = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}
EVENT_STYLES = {"Warning": "yellow"}
PLAIN_WIDTH = 160
"""Width when not writing to a terminal (pipes, CI logs): wide enough that rows stay rows."""


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr): the terminal's width, or wide when piped."""
    probe = Console(stderr=stderr)
    wide = not probe.is_terminal and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=PLAIN_WIDTH if wide else None)


def text(renderable: RenderableType, width: int = PLAIN_WIDTH) -> str:
    """Plain text of a renderable, without colours."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(renderable)
    return buffer.getvalue()


def _table(*headers: str, title: str | None = None) -> Table:
    return Table(
        *headers,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        title=title,
        title_justify="left",
        title_style="bold",
        header_style="bold",
        pad_edge=False,
    )


def _phase(phase: str) -> Text:
    return Text(phase or "(no status)", style=PHASE_STYLES.get(phase, ""))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _when(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return ""
    ago = age(stamp, now)
    return f"{stamp} ({ago} ago)" if ago else stamp


def threshold_text(check: Mapping[str, Any], analysis: Analysis) -> str:
    """ "max 600 ms" or "min 0.8": the bound the value is held to."""
    name = str(check.get("name", ""))
    threshold = float(check.get("threshold") or 0)
    low, high = bounds(name, threshold, analysis)
    u = unit(name)
    parts = [f"min {_fmt(low)}{u}"] if low is not None else []
    parts += [f"max {_fmt(high)}{u}"] if high is not None else []
    return ", ".join(parts) or f"{_fmt(threshold)}{u}"


def checks_table(last: Mapping[str, Any], analysis: Analysis) -> Table:
    table = _table("CHECK", "VALUE", "THRESHOLD", "SAMPLES", "VERDICT")
    for check in last.get("checks") or []:
        name = str(check.get("name", ""))
        value = check.get("value")
        verdict = str(check.get("verdict", ""))
        table.add_row(
            name,
            f"{_fmt(float(value))}{unit(name)}" if value is not None else "no data",
            threshold_text(check, analysis),
            _fmt(check.get("samples", 0)),
            Text(verdict, style=VERDICT_STYLES.get(verdict, "")),
        )
    return table


def owner_text(owner: Mapping[str, Any]) -> str:
    """ "retention · ml-oncall@example.com · runbook https://...": spec.owner in one line."""
    parts = [str(owner.get("team", ""))]
    if owner.get("contact"):
        parts.append(str(owner["contact"]))
    if owner.get("runbookUrl"):
        parts.append(f"runbook {owner['runbookUrl']}")
    return " · ".join(parts)


def _facts(view: Body, now: datetime) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    canary, stable = view["canaryRevision"], view["stableRevision"]
    weight = int(view["canaryWeight"] or 0)
    if canary:
        grid.add_row("traffic", f"canary {canary} {weight}% · stable {stable} {100 - weight}%")
        steps = " ".join(f"{p}%" for p in view["steps"]) or "none (shadow only)"
        since = _when(view["stepStartedAt"], now)
        grid.add_row(
            "stage",
            f"{stage(view['step'], view['steps'], view.get('cohort'))}, steps {steps}"
            + (f", since {since}" if since else ""),
        )
    else:
        grid.add_row("traffic", f"stable {stable or '-'} 100%")
    if view["previousStableRevision"]:
        until = view["bakeUntil"] or "?"
        grid.add_row("previous", f"{view['previousStableRevision']} kept warm until {until}")
    if view["failedRevision"]:
        grid.add_row(
            "failed",
            f"{view['failedRevision']} (not rolled out again by itself: "
            f"modeldeploy retry {view['name']})",
        )
    if view.get("owner"):
        grid.add_row("owner", owner_text(view["owner"]))
    model = view["model"]
    grid.add_row("model", f"{model.get('name', '?')} {model.get('version', '?')}  {view['image']}")
    observed = _fmt(view["observedGeneration"]) or "never"
    spec = [f"generation {_fmt(view['generation'])} (observed {observed})"]
    if view["paused"]:
        spec.append("paused (spec.rollout.paused)")
    if view["requireApproval"]:
        spec.append("requires approval")
    if view["killSwitch"]["engaged"]:
        spec.append(f"KILL SWITCH ENGAGED ({view['killSwitch']['mode']})")
    grid.add_row("spec", " · ".join(spec))
    for gate in view["gates"]:
        at = f" at step {gate['step'] + 1}" if gate.get("step") is not None else ""
        verdict = "approved" if gate.get("approved") else "refused"
        grid.add_row(
            "gate",
            f"{gate.get('webhook')} ({gate['type']}){at}: {verdict} "
            f"{_when(gate.get('time'), now)}: {gate.get('message', '')}",
        )
    if view["pendingNotifications"]:
        grid.add_row(
            "notifying", f"{view['pendingNotifications']} pending (status.pendingNotifications)"
        )
    for key, revision in view["pendingCommands"].items():
        grid.add_row("pending", f"{key}={revision} (not yet acted on by the operator)")
    return grid


def analysis_title(view: Body, now: datetime) -> Text:
    last = view["lastAnalysis"] or {}
    verdict = str(last.get("verdict", ""))
    title = Text("Last analysis", style="bold")
    title.append(f" of {last.get('revision', '?')}: ")
    title.append(verdict, style=VERDICT_STYLES.get(verdict, ""))
    title.append(f" on {last.get('samples', 0)} samples, {_when(last.get('time'), now)}")
    title.append(
        f"; consecutive failures {view['consecutiveFailures']} of {view['failureLimit']} "
        "(analysis.failureLimit)"
    )
    return title


def pod_problems_table(view: Body) -> Table:
    """status.podProblems: what the kubelet (or the scheduler) says about pods that do not
    start or serve."""
    tracks = {view["canaryRevision"]: "canary", view["stableRevision"]: "stable"}
    table = _table("POD", "REVISION", "REASON", "RESTARTS", "MESSAGE", title="Pod problems")
    for p in view["podProblems"]:
        revision = str(p.get("revision", ""))
        container = f" ({p['container']})" if p.get("container") else ""
        table.add_row(
            f"{p.get('pod', '')}{container}",
            f"{revision} ({tracks[revision]})" if revision in tracks else revision,
            Text(str(p.get("reason", "")), style="yellow"),
            _fmt(p.get("restarts", 0)),
            str(p.get("message", "")),
        )
    return table


def conditions_table(conditions: Iterable[Mapping[str, Any]], now: datetime) -> Table:
    table = _table("TYPE", "STATUS", "REASON", "MESSAGE", "SINCE", title="Conditions")
    for c in conditions:
        table.add_row(
            str(c.get("type", "")),
            str(c.get("status", "")),
            str(c.get("reason", "")),
            str(c.get("message", "")),
            age(c.get("lastTransitionTime"), now),
        )
    return table


def events_table(events: Iterable[Mapping[str, Any]], now: datetime) -> Table:
    table = _table("AGE", "TYPE", "REASON", "MESSAGE", title="Events")
    for e in events:
        count = int(e.get("count") or 1)
        table.add_row(
            age(e.get("time"), now) + (f" (x{count})" if count > 1 else ""),
            Text(str(e.get("type", "")), style=EVENT_STYLES.get(str(e.get("type")), "")),
            str(e.get("reason", "")),
            Text(str(e.get("message", ""))),  # free text: brackets are not markup
        )
    return table


def status_view(view: Body, analysis: Analysis, now: datetime) -> RenderableType:
    head = Text(f"{view['name']}", style="bold")
    head.append(f" in {view['namespace']}: ")
    head.append_text(_phase(view["phase"]))
    parts: list[RenderableType] = [head]
    if view["message"]:
        parts.append(Text(view["message"]))
    elif not view["phase"]:
        parts.append(Text("no status yet: the operator has not reconciled it (is it running?)"))
    if view["phase"] and not view["upToDate"]:
        parts.append(
            Text(
                f"(status is of generation {_fmt(view['observedGeneration'])}; the spec is at "
                f"{_fmt(view['generation'])}: the operator has not acted on the change yet)",
                style="yellow",
            )
        )
    parts += [Text(""), _facts(view, now), Text("")]
    if view["podProblems"]:
        parts += [pod_problems_table(view), Text("")]
    if view["lastAnalysis"]:
        parts += [analysis_title(view, now), checks_table(view["lastAnalysis"], analysis)]
    else:
        parts.append(Text("No analysis recorded yet.", style="dim"))
    if view["conditions"]:
        parts += [Text(""), conditions_table(view["conditions"], now)]
    if "objects" in view:
        parts += [Text(""), objects_tree(view["name"], view["objects"], now)]
    parts.append(Text(""))
    if "events" not in view:
        parts.append(Text("Events: not readable (no permission to list events)", style="dim"))
    elif view["events"]:
        parts.append(events_table(view["events"], now))
    else:
        parts.append(Text("Events: none", style="dim"))
    return Group(*parts)


def list_view(views: Iterable[Body], now: datetime, namespaces: bool) -> Table:
    headers = ["NAME", "PHASE", "CANARY %", "STABLE", "CANARY", "STAGE", "ANALYSIS", "AGE", "OWNER"]
    table = _table(*(["NAMESPACE", *headers] if namespaces else headers))
    for v in views:
        last = v["lastAnalysis"] or {}
        verdict = str(last.get("verdict", ""))
        row: list[RenderableType] = [
            v["name"],
            _phase(v["phase"]),
            f"{v['canaryWeight']}%" if v["canaryRevision"] else "-",
            v["stableRevision"] or "-",
            v["canaryRevision"] or "-",
            stage(v["step"], v["steps"], v.get("cohort")) if v["canaryRevision"] else "-",
            Text(verdict or "-", style=VERDICT_STYLES.get(verdict, "")),
            age(v["created"], now),
            str((v.get("owner") or {}).get("team") or "-"),
        ]
        table.add_row(*([v["namespace"], *row] if namespaces else row))
    return table


def history_table(entries: Iterable[Mapping[str, Any]], now: datetime) -> Table:
    """The merged trail (`views.trail_view`): history entries and Events, oldest first."""
    table = _table("TIME", "AGE", "EVENT", "REVISION", "VERSION", "REASON", "SOURCE")
    for h in entries:
        event = str(h.get("event", ""))
        warning = h.get("type") == "Warning"
        style = "red" if event in ("RolledBack", "Aborted", "KillSwitchEngaged") else ""
        count = int(h.get("count") or 1)
        table.add_row(
            str(h.get("time", "")),
            age(h.get("time"), now),
            Text(event, style=style or (EVENT_STYLES["Warning"] if warning else "")),
            str(h.get("revision", "")),
            str(h.get("version", "")),
            Text(str(h.get("reason", "")) + (f" (x{count})" if count > 1 else "")),
            str(h.get("source", "")),
        )
    return table


def _replicas(value: Any) -> str:
    return "?" if value is None else str(value)


def _selector(selector: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items()) or "(none)"


def _pods_node(node: Tree, pods: list[Body] | None, now: datetime) -> None:
    if pods is None:
        node.add(Text("pods: not readable", style="dim"))
        return
    for pod in pods[:MAX_PODS_SHOWN]:
        line = Text(f"pod {pod['name']}  ")
        line.append(pod["phase"], style="green" if pod["ready"] else "yellow")
        line.append(f"  ready {'1' if pod['ready'] else '0'}/1")
        line.append(f"  restarts {pod['restarts']}  age {age(pod['created'], now)}")
        node.add(line)
    if len(pods) > MAX_PODS_SHOWN:
        node.add(Text(f"... and {len(pods) - MAX_PODS_SHOWN} more pods", style="dim"))


def _revision_node(root: Tree, revision: Body, now: datetime) -> None:
    deployment = revision["deployment"]
    ready, replicas = deployment["ready"], deployment["replicas"]
    full = replicas is not None and ready >= replicas
    head = Text(f"{revision['track'] or '?'} ", style="bold")
    head.append(f"{revision['revision']}  ")
    head.append(f"Deployment/{deployment['name']}  ")
    head.append(f"{ready}/{_replicas(replicas)} Ready", style="green" if full else "yellow")
    node = root.add(head)
    if revision["hpa"]:
        h = revision["hpa"]
        node.add(
            Text(
                f"HorizontalPodAutoscaler/{h['name']}  current {_replicas(h['current'])}, "
                f"desired {_replicas(h['desired'])}, min {_replicas(h['min'])}, "
                f"max {_replicas(h['max'])}"
            )
        )
    if revision["pdb"]:
        d = revision["pdb"]
        node.add(
            Text(
                f"PodDisruptionBudget/{d['name']}  minAvailable {_replicas(d['minAvailable'])}, "
                f"healthy {_replicas(d['currentHealthy'])}, "
                f"disruptions allowed {_replicas(d['disruptionsAllowed'])}"
            )
        )
    _pods_node(node, revision["pods"], now)


def objects_tree(name: str, objects: Body, now: datetime) -> Tree:
    """`objects.objects_view` as a tree: revisions with their Deployment, HPA, PDB and pods;
    the Services with their selectors; the traffic split."""
    root = Tree(Text(f"ModelDeployment/{name}", style="bold"))
    traffic = objects["traffic"]
    split = f"traffic ({traffic['mode']}): canary requested {traffic['requested']}%, "
    split += f"effective {traffic['effective']}%"
    weights = traffic["routeWeights"]
    if traffic["httpRoute"]:
        shown = (
            ", ".join(f"{w['service']}={w['weight']}" for w in weights)
            if weights is not None
            else "not readable"
        )
        split += f"; HTTPRoute/{traffic['httpRoute']} weights {shown}"
    root.add(Text(split))
    if objects["revisions"] is None:
        root.add(Text("Deployments: not readable (no permission to list them)", style="dim"))
    elif not objects["revisions"]:
        root.add(Text("no Deployments", style="dim"))
    for revision in objects["revisions"] or []:
        _revision_node(root, revision, now)
    if objects["services"] is None:
        root.add(Text("Services: not readable", style="dim"))
    for service in objects["services"] or []:
        root.add(Text(f"Service/{service['name']}  selector {_selector(service['selector'])}"))
    return root


def explanation(expl: Body) -> RenderableType:
    parts: list[RenderableType] = []
    head = Text(f"{expl['name']} in {expl['namespace']}: ", style="bold")
    head.append_text(_phase(expl["phase"]))
    parts += [head, Text(expl["decision"])]
    parts += [Text(f"  - {line}") for line in expl["details"]]
    if expl["verdict"]:
        verdict = str(expl["verdict"])
        line = Text(f"\nLast analysis of {expl['revision']} at {expl['time']}: ")
        line.append(verdict, style=VERDICT_STYLES.get(verdict, ""))
        line.append(f" on {expl['samples']} samples")
        parts.append(line)
    for title, key, style in (
        ("Failing", "failing", "bold red"),
        ("No verdict", "inconclusive", "yellow"),
        ("Passing", "passing", "green"),
    ):
        if expl[key]:
            parts.append(Text(f"{title}:", style=style))
            parts += [Text(f"  {c['reason']}") for c in expl[key]]
    p = expl["policy"]
    floor = f", no verdict before {p['minSamples']} samples (minSamples)" if p["minSamples"] else ""
    parts.append(
        Text(
            f"\nPolicy: analysis every {p['interval']}, sequential tests on everything since "
            f"the revision's first round, at most {p['falsePositiveRate']:.0%} false rollbacks "
            f"(falsePositiveRate){floor}; a failed test rolls back at once, "
            f"{p['failureLimit']} failed rounds of a custom check in a row (failureLimit); "
            f"without a verdict for {p['noDataTimeout']} (noDataTimeout): "
            f"onNoData={p['onNoData']}",
            style="dim",
        )
    )
    return Group(*parts)
