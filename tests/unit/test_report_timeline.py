"""The canary's rounds replayed for the report (pure): at which instants, with which queries,
and the operator's own verdicts from the counts at each instant; and how the page shows them."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from test_report_model import NOW, answers, rolled_back

from modeldeploy.analysis.config import Observations, QueryKey, Track
from modeldeploy.analysis.data import QueryResult
from modeldeploy.analysis.queries import Series
from modeldeploy.report.model import build, report_plan
from modeldeploy.report.page import render
from modeldeploy.report.timeline import ReplayPlan, replay_plan, replayed_rounds, round_instants

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def test_rounds_fall_every_interval_from_the_first_to_the_reports_instant() -> None:
    assert round_instants(T0, T0 + 5 * SECOND, 2 * SECOND) == (
        T0, T0 + 2 * SECOND, T0 + 4 * SECOND, T0 + 5 * SECOND,
    )  # fmt: skip
    assert round_instants(T0, T0 + 4 * SECOND, 2 * SECOND)[-1] == T0 + 4 * SECOND
    assert round_instants(T0, T0 - SECOND, 2 * SECOND) == (T0,)


def test_many_rounds_are_thinned_evenly_keeping_the_first_and_the_last() -> None:
    instants = round_instants(T0, T0 + 1000 * SECOND, SECOND, limit=10)
    assert len(instants) == 10
    assert instants[0] == T0
    assert instants[-1] == T0 + 1000 * SECOND
    gaps = {b - a for a, b in itertools.pairwise(instants)}
    assert max(gaps) - min(gaps) <= SECOND


def test_each_round_reads_the_canarys_totals_and_the_stables_increase_since_its_first() -> None:
    obj = rolled_back()
    replay = replay_plan(obj, report_plan(obj, NOW))
    assert replay is not None
    assert replay.revision == "bbb"
    # From the first round (lastAnalysis.since) to the rollback, the instant of the report.
    assert replay.instants[0] == T0
    assert replay.instants[-1] == datetime(2026, 11, 20, 12, 1, 30, tzinfo=UTC)
    first, last = replay.queries[0].queries, replay.queries[-1].queries
    canary = first[(Track.CANARY, Series.FEATURES)].promql
    assert 'revision="bbb"' in canary
    assert "increase(" not in canary
    assert first[(Track.CANARY, Series.FEATURES)] == last[(Track.CANARY, Series.FEATURES)]
    # The stable's period grows with the round: one interval before the first round to it.
    assert "[2s]" in first[(Track.STABLE, Series.PREDICTIONS)].promql
    assert "[92s]" in last[(Track.STABLE, Series.PREDICTIONS)].promql


def test_nothing_to_replay_without_a_canary_or_its_first_round() -> None:
    obj = rolled_back()
    obj["status"] = {"phase": "Stable", "stableRevision": "aaa"}
    assert replay_plan(obj, report_plan(obj, NOW)) is None


def counts_at(replay: ReplayPlan, k: int) -> Observations:
    """Round k's answers: 20 requests a round on each side; the canary's monthly_charges all
    in the upper bin (its training profile: half and half), the stable as trained."""
    n = 20.0 * k
    half = n / 2
    base = answers()
    values: dict[QueryKey, QueryResult] = {}
    for key in replay.queries[k].queries:
        track, series = key
        if series is Series.REQUESTS:
            values[key] = QueryResult.of({("200",): n})
        elif series is Series.INVALID:
            values[key] = QueryResult.of({})
        elif series is Series.FEATURES:
            skewed = track is Track.CANARY
            values[key] = QueryResult.of(
                {
                    ("monthly_charges", "00"): 0.0 if skewed else half,
                    ("monthly_charges", "01"): n if skewed else half,
                    ("tenure", "00"): 0.4 * n,
                    ("tenure", "01"): 0.6 * n,
                }
            )
        elif series is Series.PREDICTIONS:
            values[key] = QueryResult.of({("label", "0"): 0.7 * n, ("label", "1"): 0.3 * n})
        elif series is Series.CONFIDENCE:
            values[key] = QueryResult.of({("0.5",): 0.1 * n, ("1.0",): n, ("+Inf",): n})
        elif series is Series.GOLDEN:
            values[key] = QueryResult.of({("match",): float(k), ("mismatch",): 0.0})
        elif series is Series.ANSWERED:  # a model without a fallback
            values[key] = QueryResult.of({("model",): n})
        else:
            values[key] = base[key]
    return Observations(values, {})


def test_replayed_rounds_are_the_operators_verdicts_on_the_counts_at_each_instant() -> None:
    obj = rolled_back()
    plan = report_plan(obj, NOW)
    replay = replay_plan(obj, plan)
    assert replay is not None
    rounds = replayed_rounds(replay, [counts_at(replay, k) for k in range(len(replay.instants))])
    assert [r.time for r in rounds] == list(replay.instants)
    assert [r.samples for r in rounds] == sorted(r.samples for r in rounds)
    # The first round has no requests: no verdict. The evidence grows until the skewed
    # feature fails, and a failure is final.
    assert rounds[0].verdict == "inconclusive"
    assert rounds[-1].verdict == "fail"
    verdicts = [r.verdict for r in rounds]
    assert "pass" not in verdicts[verdicts.index("fail") :]
    worst = rounds[-1].worst()
    assert worst is not None
    assert worst.name == "feature-psi/monthly_charges"
    assert worst.verdict == "fail"
    assert (worst.ratio or 0) > 1

    page = render(build(obj, plan, answers(), NOW, rounds))
    assert 'id="analysis-rounds"' in page
    table = page[page.index('id="rounds-table"') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == len(rounds) + 1  # the header too
    assert '<span class="fail">fail</span>' in table
    assert "feature-psi/monthly_charges" in table


def test_without_rounds_the_page_says_so() -> None:
    obj = rolled_back()
    page = render(build(obj, report_plan(obj, NOW), answers(), NOW))
    assert "no rounds of a canary to replay" in page
    assert 'id="analysis-rounds"' not in page
