"""The report as one self-contained HTML page: plotly charts (hover shows exact shares and
counts), plotly.js embedded once, so the file opens with no network. Every text is escaped."""

from collections.abc import Iterable, Sequence
from html import escape

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from modeldeploy.analysis.config import check_of
from modeldeploy.console.explain import unit
from modeldeploy.report.model import LATENCY_QUANTILES, Chart, CheckRow, Report, Round

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.6em;
  border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
.fail { color: #b00020; font-weight: bold; } .pass { color: #1b7f3b; }
.inconclusive { color: #8a6d00; } .note { color: #666; font-style: italic; }
.failing { border: 2px solid #b00020; padding: 0.5em; margin: 0.5em 0; }
#failing-checks { background: #fdecee; padding: 0.8em; border-left: 6px solid #b00020; }
"""
COLOURS = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78")
VERDICT_COLOURS = {"pass": "#1b7f3b", "inconclusive": "#d4a000", "fail": "#b00020"}
TIME = "%Y-%m-%dT%H:%M:%SZ"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], id_: str = "") -> str:
    """Cells are HTML already (escaped by the caller)."""
    attribute = f' id="{id_}"' if id_ else ""
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{attribute}><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _check_rows(checks: Iterable[CheckRow]) -> list[list[str]]:
    return [
        [
            escape(c.name),
            f'<span class="{escape(c.verdict)}">{escape(c.verdict)}</span>',
            escape(_fmt(c.value) + unit(c.name)),
            escape(_fmt(c.threshold) + unit(c.name)),
            str(c.samples),
            escape(c.reason),
        ]
        for c in checks
    ]


CHECK_HEAD = ("check", "verdict", "value", "threshold", "samples", "why")


def _figure(chart: Chart) -> go.Figure:
    panels = chart.panels
    figure = make_subplots(
        rows=1, cols=len(panels), subplot_titles=[p.title for p in panels], shared_yaxes=True
    )
    colour = iter(COLOURS * len(panels))
    for column, panel in enumerate(panels, start=1):
        for bars in panel.bars:
            samples = f" (n={bars.samples})" if bars.samples else ""
            figure.add_trace(
                go.Bar(
                    x=list(panel.bins),
                    y=list(bars.shares),
                    name=f"{panel.title}: {bars.name}{samples}",
                    marker_color=next(colour),
                    hovertemplate="%{x}: %{y:.1%}<extra>%{fullData.name}</extra>",
                ),
                row=1,
                col=column,
            )
    figure.update_layout(
        title=chart.title, barmode="group", height=320, margin={"t": 60, "b": 40},
        legend={"orientation": "h", "y": -0.25}, yaxis_tickformat=".0%",
    )  # fmt: skip
    return figure


def _chart(chart: Chart) -> str:
    notes = "".join(
        f'<p class="note">{escape(p.title)}: {escape(p.note)}</p>' for p in chart.panels if p.note
    )
    plot = _figure(chart).to_html(full_html=False, include_plotlyjs=False, div_id=chart.key)
    css = "chart failing" if chart.failing else "chart"
    flag = '<p class="fail">a failing check names this</p>' if chart.failing else ""
    return f'<section class="{css}" data-chart="{escape(chart.key)}">{flag}{plot}{notes}</section>'


def _failing(report: Report) -> str:
    if not report.failing and not report.rollback_reason:
        return ""
    parts = ['<section id="failing-checks"><h2>Why it failed</h2>']
    if report.rollback_reason:
        parts.append(
            f"<p>{escape(report.plan.canary or '')} was rolled back: "
            f'<span class="rollback-reason">{escape(report.rollback_reason)}</span></p>'
        )
    if report.failing:
        parts.append(_table(CHECK_HEAD, _check_rows(report.failing), "failing-table"))
    parts.append("</section>")
    return "".join(parts)


def _verdicts(report: Report) -> str:
    v = report.verdicts
    if v is None:
        return '<p class="note">no analysis recorded in status yet</p>'
    heading = (
        f"<p>last analysis of {escape(v.revision)} at {escape(v.time)}: "
        f'<span class="{escape(v.verdict)}">{escape(v.verdict)}</span> on {v.samples} '
        "requests</p>"
    )
    return heading + _table(CHECK_HEAD, _check_rows(v.checks), "verdict-table")


def _timeline(report: Report) -> str:
    if not report.history:
        return '<p class="note">no history yet</p>'
    rows = [
        [escape(str(h.get(k) or "")) for k in ("time", "event", "revision", "version", "reason")]
        for h in report.history
    ]
    return _table(("time", "event", "revision", "version", "reason"), rows, "timeline")


def _rounds_figure(report: Report) -> go.Figure:
    """Each check's value as a share of its threshold, round by round (one line per check,
    markers coloured by verdict), with the rollout's events as vertical lines."""
    figure = go.Figure()
    lines: dict[str, list[tuple[Round, CheckRow]]] = {}
    for round_ in report.rounds:
        for check in round_.checks:
            if check.ratio is not None:
                lines.setdefault(check_of(check.name), []).append((round_, check))
    for name, points in lines.items():
        figure.add_trace(
            go.Scatter(
                x=[f"{r.time:{TIME}}" for r, _ in points],
                y=[c.ratio for _, c in points],
                name=name,
                mode="lines+markers",
                marker={"color": [VERDICT_COLOURS.get(c.verdict, "#888") for _, c in points]},
                text=[
                    f"{c.name}: {_fmt(c.value)}{unit(c.name)} of {_fmt(c.threshold)}"
                    f"{unit(c.name)}, n={c.samples}, {c.verdict}"
                    for _, c in points
                ],
                hovertemplate="%{x}<br>%{text}<extra></extra>",
            )
        )
    figure.add_hline(y=1, line_dash="dash", line_color="#b00020")
    first, last = report.rounds[0].time, report.rounds[-1].time
    for entry in report.history:
        when = str(entry.get("time") or "")
        if f"{first:{TIME}}" <= when <= f"{last:{TIME}}":
            figure.add_vline(x=when, line_dash="dot", line_color="#666")
            figure.add_annotation(
                x=when, y=1, yref="paper", text=str(entry.get("event") or ""), showarrow=False,
                yanchor="bottom",
            )  # fmt: skip
    figure.update_layout(
        title="analysis rounds: each check's value ÷ its threshold (above 1: past it)",
        height=360, margin={"t": 70, "b": 40}, legend={"orientation": "h", "y": -0.2},
    )  # fmt: skip
    return figure


def _rounds(report: Report) -> str:
    if not report.rounds:
        return '<p class="note">no rounds of a canary to replay</p>'
    plot = _rounds_figure(report).to_html(
        full_html=False, include_plotlyjs=False, div_id="analysis-rounds"
    )
    rows = []
    for round_ in report.rounds:
        worst = round_.worst()
        rows.append(
            [
                f"{round_.time:{TIME}}",
                f'<span class="{escape(round_.verdict)}">{escape(round_.verdict)}</span>',
                str(round_.samples),
                *(_check_rows([worst])[0][:5] if worst is not None else ["—"] * 5),
            ]
        )
    table = _table(
        ("time", "verdict", "samples", "worst check", "its verdict", "value", "threshold", "n"),
        rows,
        "rounds-table",
    )
    return (
        f'<section class="chart" data-chart="analysis-rounds">{plot}</section>'
        '<p class="note">verdicts replayed with the operator\'s statistics from the counts '
        "Prometheus holds at each round's instant</p>"
        f"{table}"
    )


def _quantiles(report: Report) -> str:
    head = ["track", "revision", *(f"p{q * 100:g}" for q in LATENCY_QUANTILES)]
    rows = [
        [escape(q.track), escape(q.revision), *(escape(_fmt(ms) + " ms") for ms in q.milliseconds)]
        for q in report.quantiles
    ]
    return _table(head, rows, "latency-quantiles")


def render(report: Report) -> str:
    plan = report.plan
    title = f"{report.namespace}/{report.name}"
    at = f"{plan.at:%Y-%m-%dT%H:%M:%SZ}"
    window = f"{plan.stable_window}" if isinstance(plan.stable_window, str) else (
        f"{plan.stable_window.total_seconds():g}s"
    )  # fmt: skip
    notes = "".join(f'<li class="note">{escape(n)}</li>' for n in report.notes)
    sections = [
        f"<h1>{escape(title)}</h1>",
        f'<p>phase <b id="phase">{escape(report.phase)}</b>: {escape(report.decision)}</p>',
        f'<p class="note">generated {report.generated:%Y-%m-%dT%H:%M:%SZ}; series as of {at} '
        f"(canary: its counters' totals; stable: the last {escape(window)})</p>",
        _failing(report),
        f'<ul id="notes">{notes}</ul>' if notes else "",
        "<h2>Verdicts</h2>",
        _verdicts(report),
        "<h2>Timeline</h2>",
        _timeline(report),
        _rounds(report),
        "<h2>Features: serving against the training profile</h2>",
        "".join(_chart(c) for c in report.features),
        "<h2>Predictions and confidence: canary against stable</h2>",
        "".join(_chart(c) for c in report.predictions)
        or '<p class="note">no predictions counted</p>',
        "<h2>Latency</h2>",
        _chart(report.latency),
        _quantiles(report),
    ]
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>modeldeploy report: {escape(title)}</title><style>{STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body>{''.join(sections)}</body></html>\n"
    )
