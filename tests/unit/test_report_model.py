"""The report's content from status and Prometheus' answers (pure): which series at which
instant, failing checks and failing features first, a note wherever data is missing; and the
page it renders to."""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from plotly.offline import get_plotlyjs

from modeldeploy import contract
from modeldeploy.analysis.config import QueryKey, Track
from modeldeploy.analysis.data import QueryResult, QueryStatus
from modeldeploy.analysis.queries import Series
from modeldeploy.report.model import build, report_plan
from modeldeploy.report.page import render

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 12, 5, tzinfo=UTC)
STARTED = "2026-11-20T12:00:00Z"
ROLLED_BACK = "2026-11-20T12:01:30Z"
Body = dict[str, Any]


def check(name: str, verdict: str, value: float | None, threshold: float, samples: int) -> Body:
    return {
        "name": name,
        "verdict": verdict,
        "value": value,
        "threshold": threshold,
        "samples": samples,
    }


def rolled_back(last_analysis_about: str = "bbb", failed_analysis: bool = True) -> Body:
    """v2 (bbb) rolled back on monthly_charges against stable aaa; status.lastAnalysis about
    `last_analysis_about`, status.failedAnalysis the failing round (unless not
    `failed_analysis`: an operator before it, or a rollback for another cause)."""
    checks = [
        check("latency-p95", "pass", 12.0, 40, 400),
        check("feature-psi/monthly_charges", "fail", 3.2109, 0.15, 400),
        check("prediction-psi/label", "inconclusive", 0.05, 0.3, 400),
    ]
    failed = last = {
        "time": ROLLED_BACK,
        "since": STARTED,
        "revision": "bbb",
        "samples": 400,
        "verdict": "fail",
        "checks": checks,
    }
    if last_analysis_about != "bbb":
        last = {
            "time": "2026-11-20T12:04:00Z",
            "revision": last_analysis_about,
            "samples": 90,
            "verdict": "pass",
            "checks": [check("feature-psi/tenure", "pass", 0.01, 0.15, 90)],
        }
    history = [
        {
            "revision": "aaa",
            "version": "1",
            "image": "i",
            "event": "Promoted",
            "reason": "first",
            "time": "2026-11-20T11:50:00Z",
        },
        {
            "revision": "bbb",
            "version": "2",
            "image": "i",
            "event": "Started",
            "reason": "new",
            "time": STARTED,
        },
        {
            "revision": "bbb",
            "version": "2",
            "image": "i",
            "event": "RolledBack",
            "reason": "feature-psi of monthly_charges: psi 3.211 over (psi 0.15), n=400",
            "time": ROLLED_BACK,
        },
    ]
    return {
        "metadata": {"name": "churn", "namespace": "ml"},
        "spec": {
            "model": {"name": "churn-model", "version": "2"},
            "analysis": {"interval": "2s", "window": "30s"},
        },
        "status": {
            "phase": "RolledBack",
            "stableRevision": "aaa",
            "failedRevision": "bbb",
            "lastAnalysis": last,
            **({"failedAnalysis": failed} if failed_analysis else {}),
            "history": history,
        },
    }


def ok(values: Mapping[tuple[str, ...], float]) -> QueryResult:
    return QueryResult.of(values)


def answers(**overrides: QueryResult) -> dict[QueryKey, QueryResult]:
    """Both tracks scraped: two features (the canary's monthly_charges skewed), a label,
    confidence and latency buckets; `canary_info=...` etc. replace one answer."""
    profile = {
        ("monthly_charges", "00"): 0.5,
        ("monthly_charges", "01"): 0.5,
        ("monthly_charges", "missing"): 0.0,
        ("tenure", "00"): 0.4,
        ("tenure", "01"): 0.6,
    }
    results: dict[QueryKey, QueryResult] = {}
    for track, skewed in ((Track.CANARY, True), (Track.STABLE, False)):
        charges = {
            ("monthly_charges", "00"): 0.0 if skewed else 50.0,
            ("monthly_charges", "01"): 100.0 if skewed else 50.0,
        }
        results |= {
            (track, Series.INFO): ok({(): 2.0}),
            (track, Series.FEATURES): ok(
                {**charges, ("tenure", "00"): 40.0, ("tenure", "01"): 60.0}
            ),
            (track, Series.BASELINE): ok(profile),
            (track, Series.PREDICTIONS): ok({("label", "0"): 70.0, ("label", "1"): 30.0}),
            (track, Series.CONFIDENCE): ok({("0.5",): 10.0, ("1.0",): 100.0, ("+Inf",): 100.0}),
            (track, Series.LATENCY): ok({("0.01",): 50.0, ("0.05",): 100.0, ("+Inf",): 100.0}),
        }
    for key, result in overrides.items():
        track, series = key.split("_")
        results[(Track(track), Series(series))] = result
    return results


def test_a_rolled_back_canary_is_read_at_its_rollback_over_the_analysed_evidence() -> None:
    plan = report_plan(rolled_back(), NOW)
    assert (plan.canary, plan.stable, plan.rolled_back) == ("bbb", "aaa", True)
    assert plan.at == datetime(2026, 11, 20, 12, 1, 30, tzinfo=UTC)
    # From one interval before the canary's first round to its rollback, as the analysis.
    assert plan.stable_window == timedelta(seconds=92)
    canary = plan.queries[(Track.CANARY, Series.FEATURES)].promql
    stable = plan.queries[(Track.STABLE, Series.FEATURES)].promql
    assert "increase" not in canary  # the canary's counters' totals
    assert 'revision="bbb"' in canary
    assert 'namespace="ml"' in canary
    assert 'model="churn-model"' in canary
    assert "increase(" in stable
    assert "[92s]" in stable
    assert contract.FEATURE_BIN_TOTAL in canary


def test_a_live_rollout_is_read_now_and_without_a_canary_only_the_stable() -> None:
    obj = rolled_back()
    obj["status"] |= {"phase": "Progressing", "canaryRevision": "ccc", "failedRevision": None}
    plan = report_plan(obj, NOW, namespace_label="")
    assert (plan.canary, plan.rolled_back, plan.at) == ("ccc", False, NOW)
    assert "namespace=" not in plan.queries[(Track.CANARY, Series.INFO)].promql
    obj["status"] |= {"canaryRevision": None}
    plan = report_plan(obj, NOW)
    assert plan.canary is None
    assert {track for track, _ in plan.queries} == {Track.STABLE}
    assert plan.stable_window == "30s"  # the drift monitor's analysis.window


def test_failing_checks_come_first_and_the_failing_feature_leads() -> None:
    obj = rolled_back()
    report = build(obj, report_plan(obj, NOW), answers(), NOW)
    assert [c.name for c in report.failing] == ["feature-psi/monthly_charges"]
    assert report.verdicts is not None
    assert [c.verdict for c in report.verdicts.checks] == ["fail", "inconclusive", "pass"]
    assert "monthly_charges" in report.rollback_reason
    first = report.features[0]
    assert (first.key, first.failing) == ("feature-monthly_charges", True)
    assert [c.failing for c in report.features[1:]] == [False]
    canary, stable = first.panels
    assert canary.title == "canary bbb"
    assert canary.bins == ("00", "01", "missing")
    serving, profile = canary.bars
    assert (serving.shares, serving.samples) == ((0.0, 1.0, 0.0), 100)
    assert profile.shares == (0.5, 0.5, 0.0)
    assert stable.bars[0].shares == (0.5, 0.5, 0.0)
    assert not report.notes


def test_predictions_confidence_latency_compare_canary_and_stable() -> None:
    obj = rolled_back()
    report = build(obj, report_plan(obj, NOW), answers(), NOW)
    label, confidence = report.predictions
    assert label.key == "prediction-label"
    assert [b.name for b in label.panels[0].bars] == ["canary bbb", "stable aaa"]
    assert confidence.panels[0].bins == ("≤0.5", "≤1", "+Inf")
    assert confidence.panels[0].bars[0].shares == (0.1, 0.9, 0.0)
    assert report.latency.panels[0].bins == ("≤10 ms", "≤50 ms", "+Inf")
    p50, p95, p99 = report.quantiles[0].milliseconds
    assert p50 == pytest.approx(10.0)
    assert p95 == pytest.approx(46.0)
    assert p99 == pytest.approx(49.2)


def test_a_later_round_of_the_stable_keeps_the_failing_round_first() -> None:
    obj = rolled_back(last_analysis_about="aaa")
    report = build(obj, report_plan(obj, NOW), answers(), NOW)
    assert [c.name for c in report.failing] == ["feature-psi/monthly_charges"]
    assert report.verdicts is not None
    assert report.verdicts.revision == "bbb"  # status.failedAnalysis, not the stable's round
    assert report.features[0].failing
    assert not report.notes


def test_without_the_failing_round_the_rollback_reason_stands_alone_and_says_so() -> None:
    obj = rolled_back(last_analysis_about="aaa", failed_analysis=False)
    report = build(obj, report_plan(obj, NOW), answers(), NOW)
    assert report.failing == ()
    assert "monthly_charges" in report.rollback_reason
    assert any("no failing analysis of bbb (its latest is of aaa)" in n for n in report.notes)
    assert report.verdicts is not None
    assert report.verdicts.revision == "aaa"


def test_missing_data_is_a_note_never_an_error() -> None:
    obj = rolled_back()
    unreachable = QueryResult.failed(QueryStatus.UNREACHABLE, "ConnectionError: cannot connect")
    report = build(
        obj,
        report_plan(obj, NOW),
        answers(
            canary_info=QueryResult.failed(QueryStatus.NO_DATA, "none"), stable_info=unreachable
        ),
        NOW,
    )
    assert report.features == ()
    assert any("canary bbb was not scraped at 2026-11-20T12:01:30Z" in n for n in report.notes)
    assert any("cannot connect" in n for n in report.notes)
    assert "no feature bins" in " ".join(report.notes)
    latency = report.latency.panels[0]
    assert "not scraped" in latency.note
    assert "cannot connect" in latency.note
    assert report.quantiles[0].milliseconds == (None, None, None)
    page = render(report)  # renders all the same
    assert "was not scraped" in page


def test_a_model_without_confidence_has_no_confidence_chart() -> None:
    obj = rolled_back()
    none = QueryResult.failed(QueryStatus.NO_DATA, "none")  # absent buckets: never observed
    report = build(
        obj,
        report_plan(obj, NOW),
        answers(canary_confidence=QueryResult(QueryStatus.OK, {}), stable_confidence=none),
        NOW,
    )
    assert [c.key for c in report.predictions] == ["prediction-label"]


def test_no_status_yet_gives_a_report_with_notes() -> None:
    obj = {"metadata": {"name": "churn", "namespace": "ml"}, "spec": {}}
    plan = report_plan(obj, NOW)
    assert plan.queries == {}
    report = build(obj, plan, {}, NOW)
    assert report.verdicts is None
    assert report.failing == ()
    assert "no status yet" in report.decision


def test_the_page_is_self_contained_escaped_and_failing_first() -> None:
    obj = rolled_back()
    obj["status"]["history"][-1]["reason"] += " <script>alert(1)</script>"
    page = render(build(obj, report_plan(obj, NOW), answers(), NOW))
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page
    assert "<script src" not in page  # plotly.js is inline, not fetched
    assert page.count(get_plotlyjs()) == 1
    assert page.count('data-chart="') == 2 + 2 + 1  # features, predictions, latency
    assert page.index('id="failing-checks"') < page.index('id="verdict-table"')
    assert page.index('id="feature-monthly_charges"') < page.index('id="feature-tenure"')
    assert "3.211" in page[page.index('id="failing-table"') :]
