"""Load generator, pure parts: typed rows, sampling, drift transforms, V2 bodies (checked by
the runtime's own request parser), uniform and weighted pod choice, and the report."""

import random
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from modeldeploy.devenv.endpoints import Endpoint, Published, ServiceMembers, write_published
from modeldeploy.devenv.loadgen import (
    CohortLoad,
    LoadReport,
    LoadSpec,
    RouteSource,
    default_profile,
)
from modeldeploy.devenv.traffic import (
    UNSEEN_CATEGORY,
    Drift,
    DriftInjector,
    choose_backend,
    choose_uniform,
    infer_body,
    malformed,
    parse_assignments,
    read_rows,
    sample_rows,
    standard_deviations,
)
from modeldeploy.profiling.stats import profile_feature
from modeldeploy.routing.gateway_api import backend_weights, observe_route
from modeldeploy.serving.protocol import InvalidRequest, Reason, RequestParser

pytestmark = pytest.mark.unit


def _strings(*values: object) -> np.ndarray:  # type: ignore[type-arg]
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


FEATURES = [
    profile_feature("tenure", np.arange(0.0, 100.0), "int"),
    profile_feature("charges", np.linspace(20.0, 120.0, 100), "float"),
    profile_feature("usage", np.array([1.0, 2.0, np.nan, 4.0]), "float"),
    profile_feature("plan", _strings("basic", "pro", "pro", "max"), "string"),
    profile_feature("vip", _strings(True, False, False, False), "bool"),
]
CSV = """tenure,charges,usage,plan,vip,churned
3,20.5,1.5,basic,true,stay
40,99.0,,pro,false,churn
12,64.25,7.0,max,False,stay
"""


@pytest.fixture
def rows(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "holdout.csv"
    path.write_text(CSV)
    return read_rows(path, FEATURES)


def endpoint(pod: str, revision: str = "abc") -> Endpoint:
    return Endpoint("ml", pod, "churn", revision, "churn", "127.0.0.1:1", True, 1, "img")


# --- rows ---------------------------------------------------------------------------------


def test_rows_are_typed_by_the_profile_and_the_label_is_left_out(
    rows: list[dict[str, object]],
) -> None:
    assert rows[0] == {"tenure": 3, "charges": 20.5, "usage": 1.5, "plan": "basic", "vip": True}
    assert rows[1]["usage"] is None
    assert rows[2]["vip"] is False
    assert type(rows[0]["tenure"]) is int


def test_rows_name_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("tenure,charges\n1,2\n")
    with pytest.raises(ValueError, match=r"lacks the model's input column.*usage, plan, vip"):
        read_rows(path, FEATURES)
    path.write_text(CSV.replace("20.5", "cheap"))
    with pytest.raises(ValueError, match=r"x\.csv:2"):
        read_rows(path, FEATURES)
    path.write_text(CSV.splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="no data rows"):
        read_rows(path, FEATURES)


def test_sampling_is_uniform_with_replacement_deterministic_and_copies(
    rows: list[dict[str, object]],
) -> None:
    drawn = sample_rows(rows, 3000, random.Random(1))
    assert drawn == sample_rows(rows, 3000, random.Random(1))
    counts = Counter(r["tenure"] for r in drawn)
    assert set(counts) == {3, 40, 12}
    assert all(900 <= n <= 1100 for n in counts.values())
    drawn[0]["tenure"] = -1
    assert all(r["tenure"] != -1 for r in rows)


# --- drift --------------------------------------------------------------------------------


def test_standard_deviations_ignore_missing_values() -> None:
    sds = standard_deviations([{"x": 1.0}, {"x": 3.0}, {"x": None}], ["x"])
    assert sds == {"x": 1.0}
    assert standard_deviations([{"x": None}], ["x"]) == {"x": 0.0}


def test_shift_moves_a_numeric_feature_by_k_standard_deviations() -> None:
    base = [{"tenure": t, "charges": float(t), "usage": None, "plan": "pro", "vip": False}
            for t in range(100)]  # fmt: skip
    injector = DriftInjector(Drift(shift={"charges": 1.5, "tenure": -2.0}), FEATURES, base)
    rng = random.Random(0)
    drifted = [injector.apply(r, rng) for r in base]
    sd = statistics.pstdev(range(100))
    assert drifted[10]["charges"] == pytest.approx(10 + 1.5 * sd)
    assert drifted[10]["tenure"] == round(10 - 2.0 * sd)
    assert type(drifted[10]["tenure"]) is int  # int features stay integers
    assert drifted[10]["usage"] is None  # missing stays missing
    assert base[10]["charges"] == 10.0  # the source row is untouched


def test_missing_and_unseen_replace_the_given_shares(rows: list[dict[str, object]]) -> None:
    injector = DriftInjector(Drift(missing={"usage": 0.3}, unseen={"plan": 0.2}), FEATURES, rows)
    rng = random.Random(7)
    drifted = [injector.apply(rows[0], rng) for _ in range(5000)]
    missing = sum(r["usage"] is None for r in drifted) / 5000
    unseen = sum(r["plan"] == UNSEEN_CATEGORY for r in drifted) / 5000
    assert missing == pytest.approx(0.3, abs=0.03)
    assert unseen == pytest.approx(0.2, abs=0.03)
    assert {r["plan"] for r in drifted} == {"basic", UNSEEN_CATEGORY}


def test_no_drift_changes_nothing(rows: list[dict[str, object]]) -> None:
    injector = DriftInjector(Drift(), FEATURES, rows)
    rng = random.Random(0)
    assert [injector.apply(r, rng) for r in rows] == rows
    assert not any(injector.malformed(rng) for _ in range(100))


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        (Drift(shift={"plan": 1.0}), "'plan' is not numeric"),
        (Drift(shift={"charges": 50.0}), "beyond"),
        (Drift(shift={"height": 1.0}), "no feature 'height'"),
        (Drift(unseen={"charges": 0.1}), "not a categorical"),
        (Drift(missing={"usage": 1.5}), "within 0..1"),
        (Drift(malformed=-0.1), "within 0..1"),
    ],
)
def test_impossible_drift_is_refused(drift: Drift, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        drift.validate(FEATURES)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], {}), (["charges=1.5", " usage = 0.2"], {"charges": 1.5, "usage": 0.2})],
)
def test_parse_assignments(values: list[str], expected: dict[str, float]) -> None:
    assert parse_assignments(values, "--shift") == expected


@pytest.mark.parametrize("value", ["charges", "charges=", "=1", "charges=lots"])
def test_parse_assignments_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="--shift: expected FEATURE=NUMBER"):
        parse_assignments([value], "--shift")


# --- bodies -------------------------------------------------------------------------------


def test_bodies_pass_the_runtimes_validation(rows: list[dict[str, object]]) -> None:
    injector = DriftInjector(
        Drift(shift={"charges": 2.0}, missing={"usage": 0.5}, unseen={"plan": 0.5}),
        FEATURES,
        rows,
    )
    rng = random.Random(3)
    batch = [injector.apply(r, rng) for r in rows]
    body = infer_body(batch, FEATURES, "load-1")
    parsed = RequestParser(FEATURES, max_batch=10).parse(body)
    assert parsed.id == "load-1"
    assert parsed.rows == 3
    assert list(parsed.columns) == [f.name for f in FEATURES]


def test_malformed_bodies_are_rejected_as_bad_shape(rows: list[dict[str, object]]) -> None:
    body = infer_body(rows, FEATURES, "x")
    with pytest.raises(InvalidRequest) as error:
        RequestParser(FEATURES, max_batch=10).parse(malformed(body))
    assert error.value.reason == Reason.BAD_SHAPE
    assert body["inputs"][0]["shape"] == [3]  # the original is untouched


# --- where requests go --------------------------------------------------------------------


def test_uniform_choice_spreads_evenly_like_kube_proxy() -> None:
    pods = [endpoint(f"p{i}") for i in range(4)]
    rng = random.Random(0)
    counts = Counter(choose_uniform(pods, rng) for _ in range(8000))
    assert all(1800 <= n <= 2200 for n in counts.values())
    assert choose_uniform([], rng) is None


def test_gateway_choice_splits_by_backend_weight_then_uniformly() -> None:
    stable = [endpoint("s1", "stable"), endpoint("s2", "stable")]
    canary = [endpoint("c1", "canary")]
    rng = random.Random(0)
    counts = Counter(choose_backend([(90, stable), (10, canary)], rng) for _ in range(10000))
    assert counts[canary[0]] == pytest.approx(1000, abs=150)
    assert counts[stable[0]] == pytest.approx(4500, abs=250)
    assert counts[stable[1]] == pytest.approx(4500, abs=250)


def test_gateway_choice_answers_nothing_for_a_backend_without_ready_pods() -> None:
    stable = [endpoint("s1", "stable")]
    rng = random.Random(0)
    # The canary's share is lost (a gateway answers 503), not spread over the stable.
    counts = Counter(choose_backend([(50, stable), (50, [])], rng) for _ in range(4000))
    assert counts[None] == pytest.approx(2000, abs=200)
    assert choose_backend([(0, stable), (100, [])], rng) is None
    assert choose_backend([(0, stable)], rng) is None
    assert choose_backend([(1, stable), (0, [])], rng) == stable[0]


def test_route_source_follows_the_routes_weights_over_the_services_pods(tmp_path: Path) -> None:
    stable, canary = endpoint("s1", "r1"), endpoint("c1", "r2")
    published = tmp_path / "endpoints.json"
    write_published(published, Published(
        endpoints=[stable, canary],
        services=[
            ServiceMembers("ml", "churn", ("s1",)),
            ServiceMembers("ml", "churn-stable", ("s1",)),
            ServiceMembers("ml", "churn-canary", ("c1",)),
        ],
    ))  # fmt: skip
    weights = [("churn-stable", 75), ("churn-canary", 25)]
    source = RouteSource(published, "ml", lambda headers: weights, refresh=0)
    assert sorted(e.pod for e in source()) == ["c1", "s1"]
    rng = random.Random(0)
    counts = Counter(source.choose(source(), rng) for _ in range(8000))
    assert counts[canary] == pytest.approx(2000, abs=200)
    weights = [("churn-stable", 100), ("churn-canary", 0)]  # a rollback
    source()
    assert {source.choose(source(), rng) for _ in range(200)} == {stable}


def test_route_source_sends_the_cohort_where_its_rule_goes(tmp_path: Path) -> None:
    stable, canary = endpoint("s1", "r1"), endpoint("c1", "r2")
    published = tmp_path / "endpoints.json"
    write_published(published, Published(
        endpoints=[stable, canary],
        services=[ServiceMembers("ml", "churn-stable", ("s1",)),
                  ServiceMembers("ml", "churn-canary", ("c1",))],
    ))  # fmt: skip
    route = observe_route({"metadata": {"name": "r", "namespace": "ml"}, "spec": {"rules": [
        {"name": "modeldeploy-cohort-churn-0",
         "matches": [{"headers": [{"type": "Exact", "name": "x-canary", "value": "true"}]}],
         "backendRefs": [{"name": "churn-canary", "port": 80, "weight": 1}]},
        {"backendRefs": [{"name": "churn-stable", "port": 80, "weight": 100},
                         {"name": "churn-canary", "port": 80, "weight": 0}]},
    ]}})  # fmt: skip
    source = RouteSource(
        published, "ml", lambda headers: backend_weights(route, "churn", headers),
        cohort={"x-canary": "true"}, refresh=0,
    )  # fmt: skip
    assert sorted(e.pod for e in source()) == ["c1", "s1"]
    rng = random.Random(0)
    assert {source.choose_cohort(source(), rng) for _ in range(200)} == {canary}
    assert {source.choose(source(), rng) for _ in range(200)} == {stable}


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_cohorts_share_is_bounded(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        CohortLoad({"x-canary": "true"}, share, choose_uniform)


# --- spec and report ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"rate": 0}, {"rate": 5000}, {"count": 0}, {"count": 10**7}, {"duration": 0},
        {"duration": 86400}, {"batch": 0}, {"batch": 1000}, {"workers": 0}, {"timeout": 0},
    ],
)  # fmt: skip
def test_load_is_always_bounded(change: dict[str, float]) -> None:
    spec = {"rate": 10, "count": 100, "duration": 10}
    with pytest.raises(ValueError, match="must be in"):
        LoadSpec(**{**spec, **change})  # type: ignore[arg-type]


def test_report_counts_per_revision_pod_and_code() -> None:
    report = LoadReport()
    a, b = endpoint("a", "r1"), endpoint("b", "r2")
    for target, code in [(a, "200"), (a, "200"), (b, "400"), (None, "no_endpoint")]:
        report.record(target, code, 5.0 if target else None)
    report.elapsed = 2.0
    summary = report.to_dict()
    assert summary["sent"] == 4
    assert summary["by_code"] == {"200": 2, "400": 1, "no_endpoint": 1}
    assert summary["by_revision"] == {"-": {"no_endpoint": 1}, "r1": {"200": 2}, "r2": {"400": 1}}
    assert summary["by_pod"] == {"ml/a": {"200": 2}, "ml/b": {"400": 1}}
    assert summary["latency_ms"] == {"p50": 5.0, "p95": 5.0, "p99": 5.0}
    assert (
        report.summary().splitlines()[0] == "4 requests in 2.0s (2.0/s): 200:2 400:1 no_endpoint:1"
    )


def test_default_profile_is_next_to_an_example_builds_data() -> None:
    assert default_profile(Path("/b/out/data/holdout.csv")) == Path("/b/out/model/profile.json")
