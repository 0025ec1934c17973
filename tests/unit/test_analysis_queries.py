"""PromQL builders produce exactly the expected queries; templates fail loudly."""

from datetime import timedelta

import pytest

from modeldeploy.analysis.queries import (
    RevisionRef,
    Series,
    TemplateError,
    duration,
    escape_label_value,
    render_template,
    selector,
    series_query,
    template_variables,
)

pytestmark = pytest.mark.unit

REF = RevisionRef(
    model="churn", revision="7f3a9c1", version="2026-11-20", namespace="ml", name="churn-md"
)
STABLE = RevisionRef(model="churn", revision="0ld5t4b")
SEL = '{model="churn",revision="7f3a9c1"}'


@pytest.mark.parametrize(
    ("series", "promql", "by"),
    [
        (Series.INFO, f"count(modeldeploy_model_info{SEL})", ()),
        (
            Series.REQUESTS,
            f"sum by (code) (increase(modeldeploy_requests_total{SEL}[5m]))",
            ("code",),
        ),
        (
            Series.INVALID,
            f"sum by (reason) (increase(modeldeploy_invalid_requests_total{SEL}[5m]))",
            ("reason",),
        ),
        (
            Series.LATENCY,
            f"sum by (le) (increase(modeldeploy_request_duration_seconds_bucket{SEL}[5m]))",
            ("le",),
        ),
        (
            Series.FEATURES,
            f"sum by (feature, bin) (increase(modeldeploy_feature_bin_total{SEL}[5m]))",
            ("feature", "bin"),
        ),
        (
            Series.BASELINE,
            f"max by (feature, bin) (modeldeploy_feature_baseline_ratio{SEL})",
            ("feature", "bin"),
        ),
        (
            Series.PREDICTIONS,
            f"sum by (output, bin) (increase(modeldeploy_prediction_bin_total{SEL}[5m]))",
            ("output", "bin"),
        ),
        (
            Series.CONFIDENCE,
            f"sum by (le) (increase(modeldeploy_prediction_confidence_bucket{SEL}[5m]))",
            ("le",),
        ),
    ],
)
def test_series_queries(series: Series, promql: str, by: tuple[str, ...]) -> None:
    query = series_query(series, REF, "5m")
    assert query.promql == promql
    assert query.by == by


def test_every_series_has_a_query() -> None:
    assert {series_query(s, REF, "1m").promql for s in Series}.__len__() == len(Series)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines\ttab\r", "two\\nlines\\ttab\\r"),
        ("ünïcødé {}[]", "ünïcødé {}[]"),
    ],
)
def test_label_values_are_escaped(raw: str, escaped: str) -> None:
    assert escape_label_value(raw) == escaped


def test_odd_label_values_cannot_break_out_of_the_selector() -> None:
    ref = RevisionRef(model='x"} or vector(1) #', revision="r\\")
    assert selector(ref) == '{model="x\\"} or vector(1) #",revision="r\\\\"}'


def test_extra_matchers_are_sorted_and_validated() -> None:
    ref = RevisionRef(model="m", revision="r", matchers={"namespace": "ml", "cluster": "eu"})
    assert selector(ref) == '{model="m",revision="r",cluster="eu",namespace="ml"}'
    with pytest.raises(ValueError, match="label name"):
        RevisionRef(model="m", revision="r", matchers={"bad-name": "x"})
    with pytest.raises(ValueError, match="already matched"):
        RevisionRef(model="m", revision="r", matchers={"model": "other"})


@pytest.mark.parametrize(
    ("window", "text"),
    [
        ("5m", "5m"),
        ("1h30m", "1h30m"),
        (timedelta(minutes=5), "300s"),
        (timedelta(seconds=1.5), "1500ms"),
    ],
)
def test_durations(window: str | timedelta, text: str) -> None:
    assert duration(window) == text


@pytest.mark.parametrize("window", ["5 m", "5", "m5", "5m]", "", "-5m"])
def test_bad_durations_are_refused(window: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        duration(window)


def test_templates_render_every_variable() -> None:
    template = (
        'sum(rate(correct_total{model="{{ model }}",version="{{version}}",'
        'revision="{{  revision }}",namespace="{{ namespace }}",md="{{name}}"}[{{ window }}]))'
        ' / on() sum(rate(correct_total{revision="{{ stableRevision }}"}[{{window}}]))'
    )
    assert render_template(template, REF, "2m", STABLE) == (
        'sum(rate(correct_total{model="churn",version="2026-11-20",'
        'revision="7f3a9c1",namespace="ml",md="churn-md"}[2m]))'
        ' / on() sum(rate(correct_total{revision="0ld5t4b"}[2m]))'
    )
    assert render_template('x{r="{{stableRevision}}"}', REF, "2m") == 'x{r=""}'


def test_template_values_are_escaped() -> None:
    ref = RevisionRef(model='a"b', revision="r")
    assert render_template('x{model="{{ model }}"}', ref, "1m") == 'x{model="a\\"b"}'


def test_unknown_template_variables_are_refused_with_the_allowed_list() -> None:
    with pytest.raises(
        TemplateError, match=r"unknown template variable\(s\) 'pod'.*allowed:.*stableRevision"
    ):
        template_variables('x{pod="{{ pod }}"}')
    with pytest.raises(TemplateError, match="unbalanced"):
        template_variables('x{revision="{{ revision }"}')
    assert template_variables("up") == set()
    assert template_variables("{{window}} {{ window }}") == {"window"}
