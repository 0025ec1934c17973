"""Delayed labels: the bounded memory of predictions, label request validation, what each
label counts, and the endpoint called in process."""

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from test_serving import FEATURES, _body, _profile, classify

from modeldeploy import contract as c
from modeldeploy.profile_schema import Profile, Quality, RegressionOutput
from modeldeploy.serving.app import Runtime, create_app
from modeldeploy.serving.config import LimitsConfig, ModelConfig
from modeldeploy.serving.labels import (
    DUPLICATE,
    OUT_OF_RANGE,
    UNKNOWN,
    LabelEntry,
    LabelOutcomes,
    PredictionMemory,
    Unmatched,
    parse_labels,
    regression_tolerance,
)
from modeldeploy.serving.model import CallableModel
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.protocol import InvalidRequest, Reason
from modeldeploy.serving.warmup import State

pytestmark = pytest.mark.unit

IDENTITY = Identity("m", "1", "r")
LABELS = "/v2/models/m/labels"


# --- memory ---------------------------------------------------------------------------------


def test_memory_forgets_whole_requests_oldest_first() -> None:
    memory = PredictionMemory(max_rows=5)
    memory.remember("a", ["x", "y"])
    memory.remember("b", ["z", "z"])
    memory.remember("c", ["y", "y"])  # 6 rows: "a" goes
    assert (memory.rows, len(memory)) == (4, 2)
    assert memory.take("a", 0) == Unmatched(UNKNOWN)
    assert memory.take("b", 1) == "z"
    assert memory.take("c", 0) == "y"


def test_memory_takes_each_row_once_and_knows_its_rows() -> None:
    memory = PredictionMemory(max_rows=10)
    memory.remember("a", [1.5, 2.5])
    assert memory.take("a", 1) == 2.5
    assert memory.take("a", 1) == Unmatched(DUPLICATE)
    assert memory.take("a", 2) == Unmatched(OUT_OF_RANGE)
    assert memory.take("nobody", 0) == Unmatched(UNKNOWN)


def test_an_id_seen_again_replaces_the_earlier_request() -> None:
    memory = PredictionMemory(max_rows=4)
    memory.remember("a", ["x", "x", "x"])
    memory.remember("a", ["y"])
    assert (memory.rows, len(memory)) == (1, 1)
    assert memory.take("a", 0) == "y"
    assert memory.take("a", 1) == Unmatched(OUT_OF_RANGE)


def test_a_request_larger_than_the_memory_is_not_remembered() -> None:
    memory = PredictionMemory(max_rows=2)
    memory.remember("a", ["x"])
    memory.remember("big", ["x", "x", "x"])
    assert memory.take("big", 0) == Unmatched(UNKNOWN)
    assert memory.take("a", 0) == "x"  # nothing evicted for it either


# --- label requests -------------------------------------------------------------------------

MALFORMED: list[tuple[str, Any, Reason, str]] = [
    ("a list", [], Reason.NOT_AN_OBJECT, "JSON object"),
    ("no labels", {}, Reason.NO_LABELS, "'labels' must be a non-empty list"),
    ("empty labels", {"labels": []}, Reason.NO_LABELS, "non-empty"),
    ("labels an object", {"labels": {"id": "a"}}, Reason.NO_LABELS, "non-empty list"),
    ("entry a string", {"labels": ["a"]}, Reason.BAD_LABEL, "labels[0] must be an object"),
    ("unknown field", {"labels": [{"id": "a", "label": "no", "x": 1}]}, Reason.BAD_LABEL, "'x'"),
    ("a long unknown field, quoted short", {"labels": [{"id": "a", "label": "no", "y" * 5000: 1}]},
     Reason.BAD_LABEL, "'" + "y" * 36 + "..."),
    ("no id", {"labels": [{"label": "no"}]}, Reason.BAD_ID, "'id' must be"),
    ("id a number", {"labels": [{"id": 3, "label": "no"}]}, Reason.BAD_ID, "labels[0]"),
    ("no label", {"labels": [{"id": "a"}]}, Reason.BAD_LABEL, "has no 'label'"),
    ("negative index", {"labels": [{"id": "a", "index": -1, "label": "no"}]},
     Reason.BAD_LABEL_INDEX, "row number"),
    ("index a float", {"labels": [{"id": "a", "index": 1.0, "label": "no"}]},
     Reason.BAD_LABEL_INDEX, "row number"),
    ("index a bool", {"labels": [{"id": "a", "index": True, "label": "no"}]},
     Reason.BAD_LABEL_INDEX, "row number"),
    ("label a list", {"labels": [{"id": "a", "label": ["no"]}]}, Reason.BAD_LABEL_VALUE, "class"),
    ("label null", {"labels": [{"id": "a", "label": None}]}, Reason.BAD_LABEL_VALUE, "class"),
    ("too many", {"labels": [{"id": "a", "label": "no"}] * 4}, Reason.TOO_MANY_LABELS,
     "4 labels exceed the limit 3"),
]  # fmt: skip


@pytest.mark.parametrize(("title", "body", "reason", "message"), MALFORMED)
def test_malformed_label_requests_are_refused_with_a_reason(
    title: str, body: Any, reason: Reason, message: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_labels(body, classification=True, max_labels=3)
    assert refused.value.reason is reason
    assert message in refused.value.message
    assert len(refused.value.message) < 200  # client values are quoted truncated
    assert refused.value.status == 400


def test_labels_are_read_as_classes_or_numbers() -> None:
    body = {"labels": [{"id": "a", "label": True}, {"id": "a", "index": 1, "label": 7}]}
    assert parse_labels(body, classification=True, max_labels=9) == [
        LabelEntry("a", 0, "true"),  # as the class's bin label
        LabelEntry("a", 1, "7"),
    ]
    assert parse_labels(body | {"labels": [{"id": "b", "label": 2}]}, classification=False,
                        max_labels=9) == [LabelEntry("b", 0, 2.0)]  # fmt: skip
    for bad in ("2.5", True, float("inf")):
        with pytest.raises(InvalidRequest) as refused:
            parse_labels({"labels": [{"id": "b", "label": bad}]}, classification=False,
                         max_labels=9)  # fmt: skip
        assert refused.value.reason is Reason.BAD_LABEL_VALUE


# --- counting -------------------------------------------------------------------------------


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    identity = dict(zip(c.IDENTITY_LABELS, IDENTITY.values(), strict=True))
    value = registry.get_sample_value(name, identity | labels)
    assert value is not None, (name, labels)
    return value


def test_a_classifier_counts_outcomes_and_a_confusion_matrix_with_other() -> None:
    registry = CollectorRegistry()
    outcomes = LabelOutcomes(_profile(), IDENTITY.values(), registry, max_rows=100)
    assert _value(registry, c.LABELLED_TOTAL, outcome="wrong") == 0  # pre-created
    assert _value(registry, c.LABEL_CONFUSION_TOTAL, actual="other", predicted="no") == 0
    outcomes.remember("r1", ["no", "yes", "no"])
    receipt = outcomes.receive(
        [
            LabelEntry("r1", 0, "no"),
            LabelEntry("r1", 1, "no"),
            LabelEntry("r1", 2, "maybe"),  # not a class of the profile
            LabelEntry("r1", 2, "no"),
            LabelEntry("gone", 0, "no"),
            LabelEntry("r1", 5, "no"),
        ]
    )
    assert receipt.payload() == {
        "matched": 3,
        "unmatched": {UNKNOWN: 1, OUT_OF_RANGE: 1, DUPLICATE: 1},
    }
    assert _value(registry, c.LABELLED_TOTAL, outcome="correct") == 1
    assert _value(registry, c.LABELLED_TOTAL, outcome="wrong") == 2
    assert _value(registry, c.LABEL_CONFUSION_TOTAL, actual="no", predicted="no") == 1
    assert _value(registry, c.LABEL_CONFUSION_TOTAL, actual="no", predicted="yes") == 1
    assert _value(registry, c.LABEL_CONFUSION_TOTAL, actual="other", predicted="no") == 1
    for reason in (UNKNOWN, OUT_OF_RANGE, DUPLICATE):
        assert _value(registry, c.LABELS_UNMATCHED_TOTAL, reason=reason) == 1


def test_the_holdout_accuracy_is_exported_beside_the_labels_when_the_profile_has_one() -> None:
    quality = Quality(holdout_accuracy=0.865, holdout_rows=1200)
    registry = CollectorRegistry()
    LabelOutcomes(_profile().model_copy(update={"quality": quality}), IDENTITY.values(),
                  registry, max_rows=100)  # fmt: skip
    assert _value(registry, c.HOLDOUT_ACCURACY) == 0.865
    without = CollectorRegistry()
    LabelOutcomes(_profile(), IDENTITY.values(), without, max_rows=100)
    identity = dict(zip(c.IDENTITY_LABELS, IDENTITY.values(), strict=True))
    assert without.get_sample_value(c.HOLDOUT_ACCURACY, identity) is None


def _regression_profile() -> Profile:
    output = RegressionOutput(edges=[10.0, 20.0, 30.0], baseline={"00": 1.0})
    return Profile(rows=100, features=FEATURES, output=output, golden=[])


def test_a_regressor_counts_absolute_errors_within_its_tolerance_as_correct() -> None:
    output = _regression_profile().output
    assert isinstance(output, RegressionOutput)
    assert regression_tolerance(output, None) == pytest.approx(2.0)  # 10% of 10..30
    assert regression_tolerance(output, 0.5) == 0.5
    registry = CollectorRegistry()
    outcomes = LabelOutcomes(
        _regression_profile(), IDENTITY.values(), registry, max_rows=100, max_abs_error=1.0
    )
    outcomes.remember("r1", [10.0, 20.0, 30.0])
    outcomes.receive([LabelEntry("r1", 0, 10.5), LabelEntry("r1", 1, 21.0),
                      LabelEntry("r1", 2, 35.0)])  # fmt: skip
    assert _value(registry, c.LABELLED_TOTAL, outcome="correct") == 2  # 0.5 and 1.0
    assert _value(registry, c.LABELLED_TOTAL, outcome="wrong") == 1  # 5.0
    histogram = c.LABEL_ABSOLUTE_ERROR
    assert _value(registry, histogram + "_bucket", le="0.5") == 1
    assert _value(registry, histogram + "_bucket", le="1.0") == 2
    assert _value(registry, histogram + "_bucket", le="4.0") == 2
    assert _value(registry, histogram + "_bucket", le="10.0") == 3
    assert _value(registry, histogram + "_sum") == pytest.approx(6.5)


# --- the endpoint ---------------------------------------------------------------------------


def _runtime(label_memory_rows: int = 100) -> Runtime:
    profile = _profile()
    runtime = Runtime(
        identity=IDENTITY,
        config=ModelConfig(
            name="m", version="1", limits=LimitsConfig(label_memory_rows=label_memory_rows)
        ),
        profile=profile,
        pipeline=InferencePipeline(FEATURES, CallableModel(classify)),
        monitor=Monitor(profile, IDENTITY, invalid_reasons=list(Reason)),
        max_latency_ms=500,
    )
    runtime.readiness.state = State.READY  # no lifespan here: no warm-up
    return runtime


def _post(runtime: Runtime, *calls: tuple[str, Any]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            return [await client.post(path, json=body) for path, body in calls]

    return asyncio.run(run())


def test_labels_posted_for_an_answered_request_are_scored() -> None:
    runtime = _runtime()
    answered, labelled = _post(
        runtime,
        ("/v2/models/m/infer", _body()),  # answers no, yes
        (LABELS, {"labels": [{"id": "r1", "index": 0, "label": "no"},
                             {"id": "r1", "index": 1, "label": "no"}]}),
    )  # fmt: skip
    assert answered.json()["id"] == "r1"
    assert labelled.status_code == 200
    assert labelled.json() == {"matched": 2, "unmatched": {}}
    registry = runtime.monitor.registry
    assert _value(registry, c.LABELLED_TOTAL, outcome="correct") == 1
    assert _value(registry, c.LABELLED_TOTAL, outcome="wrong") == 1


def test_a_request_without_an_id_gets_one_to_label_it_by() -> None:
    runtime = _runtime()
    body = _body()
    del body["id"]
    first, second = _post(runtime, ("/v2/models/m/infer", body), ("/v2/models/m/infer", body))
    generated = first.json()["id"]
    assert isinstance(generated, str)
    assert len(generated) == 32
    assert second.json()["id"] != generated
    (labelled,) = _post(runtime, (LABELS, {"labels": [{"id": generated, "label": "no"}]}))
    assert labelled.json() == {"matched": 1, "unmatched": {}}


def test_a_forgotten_prediction_is_counted_unknown_never_an_error() -> None:
    runtime = _runtime(label_memory_rows=2)
    body = _body()
    answers = _post(runtime, *[("/v2/models/m/infer", body | {"id": f"q{i}"}) for i in range(3)])
    assert [a.status_code for a in answers] == [200, 200, 200]
    (labelled,) = _post(
        runtime, (LABELS, {"labels": [{"id": "q0", "label": "no"}, {"id": "q2", "label": "no"}]})
    )
    assert labelled.status_code == 200
    assert labelled.json() == {"matched": 1, "unmatched": {UNKNOWN: 1}}
    assert _value(runtime.monitor.registry, c.LABELS_UNMATCHED_TOTAL, reason=UNKNOWN) == 1


def test_malformed_label_requests_are_4xx_counted_apart_from_inference_requests() -> None:
    runtime = _runtime()
    bad, unknown_model = _post(
        runtime,
        (LABELS, {"labels": [{"id": "r1", "index": "0", "label": "no"}]}),
        ("/v2/models/other/labels", {"labels": [{"id": "r1", "label": "no"}]}),
    )
    assert bad.status_code == 400
    assert "labels[0]: 'index' must be a row number" in bad.json()["error"]
    assert unknown_model.status_code == 404
    registry = runtime.monitor.registry
    assert _value(registry, c.INVALID_LABEL_REQUESTS_TOTAL, reason="bad_label_index") == 1
    assert _value(registry, c.INVALID_LABEL_REQUESTS_TOTAL, reason="unknown_model") == 1
    assert _value(registry, c.INVALID_REQUESTS_TOTAL, reason="bad_label_index") == 0
    assert registry.get_sample_value(c.REQUESTS_TOTAL, {"code": "400"} | _ident()) == 0


def _ident() -> dict[str, str]:
    return dict(zip(c.IDENTITY_LABELS, IDENTITY.values(), strict=True))
