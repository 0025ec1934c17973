"""The fallback-rate check: the canary's share of rows answered by its low-confidence
fallback against the stable's, from the spec to the queries to the verdict and its reason."""

import pytest
from test_analysis_checks import CANARY, STABLE, ok

from modeldeploy import contract
from modeldeploy.analysis.checks import FALLBACK_RATE, evaluate
from modeldeploy.analysis.config import (
    AnalysisConfig,
    Observations,
    QueryKey,
    Track,
    plan_queries,
)
from modeldeploy.analysis.data import QueryResult, QueryStatus
from modeldeploy.analysis.queries import Series
from modeldeploy.analysis.rounds import bake_config, map_spec
from modeldeploy.analysis.verdicts import CheckResult, Verdict
from modeldeploy.api import Analysis

pytestmark = pytest.mark.unit

CONFIG = AnalysisConfig(max_fallback_increase=0.05)


def answered(model: float, fallback: float | None = None) -> QueryResult:
    """Rows by what answered them; without `fallback`, a model declaring none."""
    values = {(contract.ANSWERED_BY_MODEL,): model}
    if fallback is not None:
        values[(contract.ANSWERED_BY_FALLBACK,)] = fallback
    return ok(values)


def observed(canary: QueryResult, stable: QueryResult) -> dict[QueryKey, QueryResult]:
    return {
        (Track.CANARY, Series.INFO): ok({(): 1}),
        (Track.CANARY, Series.REQUESTS): ok({("200",): 500}),
        (Track.CANARY, Series.ANSWERED): canary,
        (Track.STABLE, Series.INFO): ok({(): 3}),
        (Track.STABLE, Series.ANSWERED): stable,
    }


def checks(results: dict[QueryKey, QueryResult]) -> list[CheckResult]:
    return [c for c in evaluate(CONFIG, Observations(results)) if c.name == FALLBACK_RATE]


def fallback_rate(results: dict[QueryKey, QueryResult]) -> CheckResult:
    (check,) = checks(results)
    return check


def test_a_canary_falling_back_far_more_fails_with_both_sides_shares_and_counts() -> None:
    check = fallback_rate(observed(answered(1200, 800), answered(3700, 300)))
    assert check.verdict is Verdict.FAIL
    assert check.reason.startswith(
        "fallback-rate: canary 40.0% of rows from the fallback (800 of 2000) vs stable 7.5% "
        "(300 of 4000 rows); 0.4 vs 0.075 (+0.325 of 0.05), n=2000, e="
    )
    assert check.value == pytest.approx(0.4 - 0.075)
    assert (check.threshold, check.samples, check.sequential) == (0.05, 2000, True)


def test_a_canary_falling_back_as_often_as_the_stable_passes() -> None:
    check = fallback_rate(observed(answered(9200, 800), answered(18500, 1500)))
    assert check.verdict is Verdict.PASS, check.reason
    assert "increase at most" in check.reason


def test_no_fallback_rows_on_either_side_passes_once_the_rows_bound_it() -> None:
    few = fallback_rate(observed(answered(20, 0), answered(40, 0)))
    assert few.verdict is Verdict.INCONCLUSIVE
    many = fallback_rate(observed(answered(2000, 0), answered(4000, 0)))
    assert many.verdict is Verdict.PASS, many.reason
    assert many.reason.startswith("fallback-rate: canary 0.0% of rows from the fallback (0 of")


def test_a_stable_without_a_fallback_counts_as_falling_back_never() -> None:
    check = fallback_rate(observed(answered(1500, 500), answered(4000)))
    assert check.verdict is Verdict.FAIL
    assert "vs stable no fallback;" in check.reason
    assert "0.25 vs 0 (+0.25 of 0.05)" in check.reason


@pytest.mark.parametrize(
    "canary",
    [answered(1000), QueryResult.failed(QueryStatus.NO_DATA, "no series")],
    ids=["no-fallback-declared", "runtime-without-the-series"],
)
def test_a_canary_declaring_no_fallback_is_not_checked(canary: QueryResult) -> None:
    assert checks(observed(canary, answered(900, 100))) == []


def test_an_unscraped_or_failing_side_is_no_data() -> None:
    results = observed(answered(900, 100), QueryResult.failed(QueryStatus.BAD_QUERY, "parse error"))
    check = fallback_rate(results)
    assert check.no_data
    assert "(stable)" in check.reason
    del results[(Track.CANARY, Series.INFO)]
    assert fallback_rate(results).no_data


def test_the_spec_maps_to_queries_of_both_sides_only_with_a_stable() -> None:
    config = map_spec(Analysis.model_validate({"fallbackRate": {"maxIncrease": 0.1}})).config
    assert config.max_fallback_increase == 0.1
    plan = plan_queries(config, canary=CANARY, stable=STABLE, window="1m")
    query = plan.queries[(Track.STABLE, Series.ANSWERED)].promql
    assert query == (
        'sum by (answered_by) (increase(modeldeploy_answered_rows_total{model="churn",'
        'revision="st4bl3"}[1m]))'
    )
    assert (Track.CANARY, Series.ANSWERED) in plan.queries
    first = plan_queries(config, canary=CANARY, window="1m")
    assert (Track.CANARY, Series.ANSWERED) not in first.queries
    # A bound of 1 is off; inside bakeTime the previous revision serves nothing to compare.
    off = map_spec(Analysis.model_validate({"fallbackRate": {"maxIncrease": 1}})).config
    assert off.max_fallback_increase is None
    assert bake_config(config).max_fallback_increase is None
