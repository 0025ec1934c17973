"""The accuracy check: the canary's wrong answers on labelled predictions against the
stable's, from the spec to the queries to the verdict and its reason."""

import pytest
from test_analysis_checks import CANARY, STABLE, ok

from modeldeploy.analysis.checks import ACCURACY, HOLDOUT_ACCURACY, evaluate
from modeldeploy.analysis.config import (
    AccuracyLimits,
    AnalysisConfig,
    Observations,
    QueryKey,
    Track,
    plan_queries,
)
from modeldeploy.analysis.data import QueryResult, QueryStatus
from modeldeploy.analysis.queries import Series
from modeldeploy.analysis.rounds import bake_config, has_checks, map_spec
from modeldeploy.analysis.verdicts import CheckResult, Verdict
from modeldeploy.api import Analysis

pytestmark = pytest.mark.unit

CONFIG = AnalysisConfig(accuracy=AccuracyLimits(max_drop=0.05, min_labels=100))


def labelled(correct: float, wrong: float) -> QueryResult:
    return ok({("correct",): correct, ("wrong",): wrong})


def observed(canary: QueryResult, stable: QueryResult) -> dict[QueryKey, QueryResult]:
    return {
        (Track.CANARY, Series.INFO): ok({(): 1}),
        (Track.CANARY, Series.REQUESTS): ok({("200",): 5000}),
        (Track.CANARY, Series.LABELLED): canary,
        (Track.STABLE, Series.INFO): ok({(): 3}),
        (Track.STABLE, Series.LABELLED): stable,
    }


def accuracy(results: dict[QueryKey, QueryResult], config: AnalysisConfig = CONFIG) -> CheckResult:
    (check,) = [c for c in evaluate(config, Observations(results)) if c.name == ACCURACY]
    return check


def test_a_worse_canary_fails_with_both_sides_label_counts_in_the_reason() -> None:
    check = accuracy(observed(labelled(292.52, 119.48), labelled(469.05, 60.95)))
    assert check.verdict is Verdict.FAIL
    assert check.reason.startswith(
        "accuracy: canary 71.0% (412 labels) vs stable 88.5% (530 labels); wrong share 0.29 "
        "vs 0.115 (+0.175 of 0.05), n=412, e="
    )
    assert check.value == pytest.approx(0.29 - 0.115)
    assert check.threshold == 0.05
    assert check.samples == 412
    assert check.sequential


def test_a_canary_as_accurate_as_the_stable_passes() -> None:
    check = accuracy(observed(labelled(8800, 1200), labelled(17700, 2300)))
    assert check.verdict is Verdict.PASS, check.reason
    assert check.reason.startswith("accuracy: canary 88.0% (10000 labels) vs stable 88.5%")
    assert "increase at most" in check.reason


def test_a_small_drop_on_few_labels_is_not_yet_conclusive() -> None:
    check = accuracy(observed(labelled(170, 30), labelled(180, 20)))
    assert check.verdict is Verdict.INCONCLUSIVE
    assert "not yet conclusive" in check.reason


@pytest.mark.parametrize(
    ("canary", "stable", "head"),
    [
        (labelled(0, 0), labelled(0, 0), "canary - (0 labels) vs stable - (0 labels)"),
        (labelled(0, 99), labelled(900, 100), "canary 0.0% (99 labels) vs stable 90.0% (1000"),
        (labelled(900, 100), labelled(50, 0), "vs stable 100.0% (50 labels)"),
    ],
)
def test_too_few_labels_on_either_side_is_inconclusive_never_a_pass(
    canary: QueryResult, stable: QueryResult, head: str
) -> None:
    check = accuracy(observed(canary, stable))
    assert check.verdict is Verdict.INCONCLUSIVE
    assert head in check.reason
    assert check.reason.endswith("; 100 labels needed on each")


def test_a_revision_without_labelled_series_has_no_data() -> None:
    results = observed(labelled(900, 100), labelled(900, 100))
    results[(Track.STABLE, Series.LABELLED)] = QueryResult.failed(QueryStatus.NO_DATA, "empty")
    check = accuracy(results)
    assert check.verdict is Verdict.INCONCLUSIVE
    assert check.reason.startswith("accuracy: no data (")
    assert "(stable)" in check.reason


def test_a_first_rollout_has_no_stable_to_compare_with() -> None:
    results = observed(labelled(900, 100), labelled(900, 100))
    del results[(Track.STABLE, Series.INFO)], results[(Track.STABLE, Series.LABELLED)]
    assert ACCURACY not in {c.name for c in evaluate(CONFIG, Observations(results))}


def test_the_plan_asks_both_sides_for_labelled_outcomes() -> None:
    plan = plan_queries(CONFIG, canary=CANARY, stable=STABLE, window="5m")
    assert set(plan.queries) == {
        (Track.CANARY, Series.INFO), (Track.CANARY, Series.REQUESTS),
        (Track.CANARY, Series.LABELLED), (Track.STABLE, Series.INFO),
        (Track.STABLE, Series.LABELLED),
    }  # fmt: skip
    assert plan.queries[(Track.STABLE, Series.LABELLED)].promql == (
        'sum by (outcome) (increase(modeldeploy_labelled_total{model="churn",revision="st4bl3"}'
        "[5m]))"
    )
    totals = plan_queries(CONFIG, canary=CANARY, stable=STABLE, window="5m", canary_totals=True)
    assert totals.queries[(Track.CANARY, Series.LABELLED)].promql == (
        'sum by (outcome) (modeldeploy_labelled_total{model="churn",revision="c4n4ry"})'
    )
    alone = plan_queries(CONFIG, canary=CANARY, window="5m")
    assert (Track.CANARY, Series.LABELLED) not in alone.queries


def test_the_spec_maps_to_the_check_only_when_enabled() -> None:
    assert map_spec(Analysis()).config.accuracy is None
    spec = Analysis.model_validate({"accuracy": {"enabled": True, "maxDrop": 0.1, "minLabels": 50}})
    config = map_spec(spec).config
    assert config.accuracy == AccuracyLimits(max_drop=0.1, min_labels=50)
    assert has_checks(AnalysisConfig(accuracy=config.accuracy))
    assert bake_config(config).accuracy is None  # no stable traffic to compare with
    assert config.drift_only().accuracy is None


@pytest.mark.parametrize(("max_drop", "min_labels"), [(-0.1, 10), (1.0, 10), (0.05, 0)])
def test_accuracy_limits_are_checked(max_drop: float, min_labels: int) -> None:
    with pytest.raises(ValueError, match=r"max_drop|min_labels"):
        AccuracyLimits(max_drop, min_labels)


# --- the stable after bakeTime against its training holdout ------------------------------

DRIFT_MONITOR = CONFIG.drift_only()


def monitored(labels: QueryResult, holdout: float | None = 0.865) -> dict[QueryKey, QueryResult]:
    """A drift-monitor round of the stable (judged as the round's only revision)."""
    return {
        (Track.CANARY, Series.INFO): ok({(): 3}),
        (Track.CANARY, Series.REQUESTS): ok({("200",): 5000}),
        (Track.CANARY, Series.LABELLED): labels,
        (Track.CANARY, Series.HOLDOUT): (
            ok({(): holdout})
            if holdout is not None
            else QueryResult.failed(QueryStatus.NO_DATA, "empty")
        ),
    }


def holdout_check(results: dict[QueryKey, QueryResult]) -> CheckResult | None:
    checks = evaluate(DRIFT_MONITOR, Observations(results))
    return next((c for c in checks if c.name == HOLDOUT_ACCURACY), None)


def test_the_stable_monitor_holds_labels_against_the_holdout_with_the_accuracy_limits() -> None:
    assert DRIFT_MONITOR.holdout_accuracy == CONFIG.accuracy
    assert DRIFT_MONITOR.accuracy is None  # no other revision's traffic to compare with
    assert CONFIG.holdout_accuracy is None  # the canary is compared with the stable instead
    mapped = map_spec(Analysis.model_validate({"accuracy": {"enabled": True}})).config
    assert bake_config(mapped).holdout_accuracy is None  # a bake's few labels: after it
    assert has_checks(AnalysisConfig(holdout_accuracy=CONFIG.accuracy))
    plan = plan_queries(DRIFT_MONITOR, canary=STABLE, window="5m")
    assert set(plan.queries) == {
        (Track.CANARY, Series.INFO), (Track.CANARY, Series.REQUESTS),
        (Track.CANARY, Series.LABELLED), (Track.CANARY, Series.HOLDOUT),
    }  # fmt: skip
    assert plan.queries[(Track.CANARY, Series.HOLDOUT)].promql == (
        'max by () (modeldeploy_holdout_accuracy{model="churn",revision="st4bl3"})'
    )
    assert plan.queries[(Track.CANARY, Series.LABELLED)].promql.endswith("[5m]))")


def test_a_stable_as_accurate_as_its_holdout_passes() -> None:
    check = holdout_check(monitored(labelled(8650, 1350)))
    assert check is not None
    assert check.verdict is Verdict.PASS, check.reason
    assert check.reason.startswith(
        "holdout-accuracy: labelled accuracy 86.5% (10000 labels) vs holdout 86.5% (max drop "
        "0.05), wrong share: 0.135 of n=10000 (limit 0.185), at most "
    )
    assert check.value == pytest.approx(0.0)
    assert check.samples == 10000


def test_a_stable_whose_labels_turned_bad_fails_naming_both_accuracies_and_the_labels() -> None:
    check = holdout_check(monitored(labelled(290, 110)))
    assert check is not None
    assert check.verdict is Verdict.FAIL, check.reason
    assert check.reason.startswith(
        "holdout-accuracy: labelled accuracy 72.5% (400 labels) vs holdout 86.5% (max drop "
        "0.05), wrong share: 0.275 of n=400 (limit 0.185), e="
    )
    assert check.value == pytest.approx(0.14)
    assert check.threshold == 0.05
    assert check.sequential


def test_a_drop_within_max_drop_never_fails() -> None:
    check = holdout_check(monitored(labelled(8300, 1700)))  # 3.5 points below the holdout
    assert check is not None
    assert check.verdict is not Verdict.FAIL, check.reason


def test_few_labels_are_inconclusive_and_say_how_many_there_were() -> None:
    check = holdout_check(monitored(labelled(20, 60)))  # dreadful, but 80 labels of 100
    assert check is not None
    assert check.verdict is Verdict.INCONCLUSIVE
    assert check.reason == (
        "holdout-accuracy: labelled accuracy 25.0% (80 labels) vs holdout 86.5% (max drop "
        "0.05); 100 labels needed"
    )
    assert check.samples == 80
    none = holdout_check(monitored(labelled(0, 0)))
    assert none is not None
    assert none.verdict is Verdict.INCONCLUSIVE
    assert "labelled accuracy - (0 labels)" in none.reason


def test_a_profile_without_a_holdout_accuracy_has_no_such_check() -> None:
    assert holdout_check(monitored(labelled(20, 980), holdout=None)) is None


def test_an_unscraped_stable_has_no_data_rather_than_no_check() -> None:
    results = monitored(labelled(900, 100))
    results[(Track.CANARY, Series.INFO)] = QueryResult.failed(QueryStatus.NO_DATA, "empty")
    check = holdout_check(results)
    assert check is not None
    assert check.verdict is Verdict.INCONCLUSIVE
    assert check.reason.startswith("holdout-accuracy: no data (")


def test_a_holdout_accuracy_near_zero_still_gives_a_verdict() -> None:
    check = holdout_check(monitored(labelled(10, 990), holdout=0.02))  # limit above 1
    assert check is not None
    assert check.verdict is not Verdict.FAIL
