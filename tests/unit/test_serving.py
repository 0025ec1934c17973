"""Pure parts of the serving runtime: binning, V2 validation, pipeline, Monitor, warm-up,
prediction log and shadow configuration."""

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy import contract as c
from modeldeploy.process_exit import exit_status
from modeldeploy.profile_schema import (
    ClassificationOutput,
    GoldenRequest,
    Profile,
    RegressionOutput,
)
from modeldeploy.profiling.stats import profile_feature
from modeldeploy.serving.bins import (
    CategoricalBins,
    NumericBinGroup,
    NumericBins,
    counts,
    feature_bins,
)
from modeldeploy.serving.config import ModelDirError
from modeldeploy.serving.model import CallableModel, Prediction
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import InferencePipeline, ModelError, output_tensors
from modeldeploy.serving.predlog import REDACTED, PredictionLog, log_record
from modeldeploy.serving.protocol import InvalidRequest, Reason, RequestParser
from modeldeploy.serving.shadow import Mirror
from modeldeploy.serving.termination import (
    MAX_MESSAGE_BYTES,
    encode,
    termination_log,
    write_termination_message,
)
from modeldeploy.serving.warmup import Readiness, State, mismatch, warm_up

pytestmark = pytest.mark.unit


def _strings(*values: Any) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = list(values)
    return column


FEATURES = [
    profile_feature("age", np.arange(1.0, 101.0), "int"),
    profile_feature("income", np.array([10.0, 20.0, np.nan, 40.0]), "float"),
    profile_feature("plan", _strings("a", "b", "b", "c"), "string"),
    profile_feature("vip", _strings(True, False, False, False), "bool"),
]


def classify(columns: Mapping[str, np.ndarray]) -> Prediction:
    p = np.clip(np.nan_to_num(columns["age"]) / 100.0, 0.0, 1.0)
    probabilities = np.column_stack([1 - p, p])
    return Prediction(np.where(p > 0.5, "yes", "no"), probabilities, ("no", "yes"))


def _profile(golden: list[GoldenRequest] | None = None) -> Profile:
    output = ClassificationOutput(classes=["no", "yes"], baseline={"no": 0.5, "yes": 0.5})
    return Profile(rows=100, features=FEATURES, output=output, golden=golden or [])


def _body(**overrides: Any) -> dict[str, Any]:
    inputs = {
        "age": {"name": "age", "shape": [2], "datatype": "INT64", "data": [30, 70]},
        "income": {"name": "income", "shape": [2], "datatype": "FP64", "data": [12.5, None]},
        "plan": {"name": "plan", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["zzz"]]},
        "vip": {"name": "vip", "shape": [2], "datatype": "BOOL", "data": [True, False]},
    }
    for name, value in overrides.items():
        if value is None:
            del inputs[name]
        else:
            inputs[name] = {**inputs[name], **value}
    return {"id": "r1", "inputs": list(inputs.values())}


# --- bins ---------------------------------------------------------------------------------


def test_numeric_bins_are_upper_inclusive_with_missing_last() -> None:
    bins = NumericBins(np.array([1.0, 2.0]))
    assert bins.labels == ("00", "01", "02", "missing")
    assert bins.index([0.5, 1.0, 1.5, 2.0, 9.0, np.nan]).tolist() == [0, 0, 1, 1, 2, 3]


def test_categorical_bins_count_unknown_as_other_and_none_as_missing() -> None:
    bins = CategoricalBins(("a", "b"))
    assert bins.labels == ("a", "b", "other", "missing")
    assert counts(bins, _strings("a", "zzz", None, "b", "a")).tolist() == [2, 1, 1, 1]


def test_bool_features_bin_by_true_false() -> None:
    bins = feature_bins(FEATURES[3])
    assert bins.labels == ("false", "true", "other", "missing")
    assert bins.index(_strings(True, False, None)).tolist() == [1, 0, 3]


def test_numeric_group_bins_exactly_like_searchsorted() -> None:
    rng = np.random.default_rng(5)
    singles = [NumericBins(np.array([0.0])), NumericBins(np.sort(rng.normal(size=9)))]
    matrix = rng.normal(size=(2, 500))
    matrix[:, ::7] = np.nan
    matrix[1, 3] = singles[1].edges[4]  # exactly on an edge
    matrix[1, 4] = np.inf
    group = NumericBinGroup.of(singles)
    for columns in (matrix, matrix[:, :5]):  # the large- and the small-batch path
        grouped = group.index(columns)
        for i, bins in enumerate(singles):
            assert grouped[i].tolist() == bins.index(columns[i]).tolist()


def test_reserved_category_names_are_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        CategoricalBins(("missing", "x"))


# --- V2 request validation ----------------------------------------------------------------

PARSER = RequestParser(FEATURES, max_batch=3)


def test_valid_request_yields_columns_in_profile_order() -> None:
    request = PARSER.parse(_body())
    assert list(request.columns) == ["age", "income", "plan", "vip"]
    assert request.rows == 2
    assert request.columns["age"].tolist() == [30.0, 70.0]
    assert np.isnan(request.columns["income"][1])
    assert request.columns["plan"].tolist() == ["a", "zzz"]  # unknown category: binned later


def test_absent_nullable_feature_is_missing_in_every_row() -> None:
    request = PARSER.parse(_body(income=None))
    assert np.isnan(request.columns["income"]).all()


BAD_BODIES: list[tuple[Any, Reason, str]] = [
    ([1, 2], Reason.NOT_AN_OBJECT, "JSON object"),
    ({"id": 5, "inputs": []}, Reason.BAD_ID, "'id'"),
    ({"parameters": [], "inputs": []}, Reason.BAD_PARAMETERS, "'parameters'"),
    ({"inputs": []}, Reason.NO_INPUTS, "age, income, plan, vip"),
    ({"inputs": ["age"]}, Reason.BAD_INPUT, "inputs[0]"),
    ({"inputs": [{"shape": [1]}]}, Reason.BAD_INPUT, "no 'name'"),
    (_body(age={"name": "agee"}), Reason.UNKNOWN_INPUT, "'agee'"),
    (_body(vip=None), Reason.MISSING_INPUT, "vip"),
    (_body(age={"datatype": "FLOAT"}), Reason.BAD_DATATYPE, "not a V2 datatype"),
    (_body(plan={"datatype": "FP64"}), Reason.BAD_DATATYPE, "string feature"),
    (_body(age={"shape": [2, 2]}), Reason.BAD_SHAPE, "[batch] or [batch, 1]"),
    (_body(age={"shape": [0], "data": []}), Reason.BAD_SHAPE, "empty batch"),
    (_body(age={"shape": [3]}), Reason.SHAPE_MISMATCH, "data has 2"),
    (_body(age={"shape": [1], "data": [3]}), Reason.BATCH_MISMATCH, "age=1"),
    (_body(age={"data": [1.5, 2]}), Reason.BAD_VALUE, "not an integer"),
    (_body(income={"data": ["1", 2]}), Reason.BAD_VALUE, "not a number"),
    (_body(vip={"data": [1, 0]}), Reason.BAD_VALUE, "true/false"),
    (_body(income={"data": [float("inf"), 1]}), Reason.NON_FINITE, "NaN and infinite"),
    (_body(age={"data": [10**400, 1]}), Reason.NON_FINITE, "too large"),
    (_body(age={"data": [None, 1]}), Reason.NULL_VALUE, "not nullable"),
    ({**_body(), "outputs": ["label"]}, Reason.BAD_OUTPUTS, "'outputs'"),
    # Every field by type before use (issue 17: a list as datatype was a TypeError, a 500).
    (_body(age={"datatype": ["INT64"]}), Reason.BAD_DATATYPE, 'datatype ["INT64"] is not'),
    (_body(age={"datatype": {"x": 1}}), Reason.BAD_DATATYPE, "datatype an object"),
    (_body(age={"datatype": None}), Reason.BAD_DATATYPE, "datatype null is not"),
    (_body(age={"name": ["age"]}), Reason.BAD_INPUT, "no 'name'"),
    (_body(age={"shape": [[2]]}), Reason.BAD_SHAPE, "shape a nested list must be"),
    (_body(age={"shape": [2.0]}), Reason.BAD_SHAPE, "shape [2.0] must be"),
    (_body(age={"shape": [True]}), Reason.BAD_SHAPE, "must be [batch]"),
    (_body(age={"shape": "2"}), Reason.BAD_SHAPE, "shape '2' must be"),
    (_body(age={"data": {"0": 1}}), Reason.BAD_INPUT, "'data' must be a list"),
    (_body(age={"data": [{"v": 1}, 2]}), Reason.BAD_VALUE, "data[0] = an object is not"),
    (_body(age={"data": [[1, 2], 2]}), Reason.BAD_VALUE, "data[0] = [1, 2] is not"),
    (_body(age={"data": [True, 2]}), Reason.BAD_VALUE, "data[0] = true is not a number"),
    (_body(plan={"data": [["a", "b"], ["c"]]}), Reason.BAD_VALUE, "is not a string"),
    (_body(age={"parameters": [1]}), Reason.BAD_PARAMETERS, "input 'age': 'parameters'"),
    ({**_body(), "parameters": {"x": {"y": 1}}}, Reason.BAD_PARAMETERS, "string, number or"),
    ({**_body(), "parameters": {"x": None}}, Reason.BAD_PARAMETERS, "'parameters' must be"),
    (
        {**_body(), "outputs": [{"name": "label", "parameters": 3}]},
        Reason.BAD_PARAMETERS,
        "outputs[0]: 'parameters'",
    ),
    ({**_body(), "outputs": [{"name": ["label"]}]}, Reason.BAD_OUTPUTS, "'outputs'"),
    ({**_body(), "id": ["r1"]}, Reason.BAD_ID, "'id' must be a string"),
    ({"inputs": {"age": 1}}, Reason.NO_INPUTS, "'inputs' must be a non-empty list"),
]


@pytest.mark.parametrize(("body", "reason", "message"), BAD_BODIES)
def test_bad_requests_are_rejected_with_reason_and_message(
    body: Any, reason: Reason, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        PARSER.parse(body)
    assert caught.value.reason is reason
    assert message in caught.value.message
    assert caught.value.status == 400


def test_duplicate_input_and_batch_limit() -> None:
    body = _body()
    body["inputs"].append(body["inputs"][0])
    with pytest.raises(InvalidRequest, match="appears twice"):
        PARSER.parse(body)
    big = {
        n: {"shape": [4], "data": [v] * 4}
        for n, v in [("age", 1), ("income", 1.0), ("plan", "a"), ("vip", True)]
    }
    with pytest.raises(InvalidRequest, match="exceeds the limit 3") as caught:
        PARSER.parse(_body(**big))
    assert caught.value.reason is Reason.BATCH_TOO_LARGE


# --- pipeline -----------------------------------------------------------------------------


def test_pipeline_outputs_v2_tensors_and_honours_requested_outputs() -> None:
    pipeline = InferencePipeline(FEATURES, CallableModel(classify))
    inference = pipeline.infer(_body())
    names = [o["name"] for o in inference.outputs]
    assert names == ["label", "confidence", "probabilities"]
    assert inference.outputs[0] == {"name": "label", "shape": [2], "datatype": "BYTES",
                                    "data": ["no", "yes"]}  # fmt: skip
    assert inference.outputs[2]["shape"] == [2, 2]
    only = pipeline.infer({**_body(), "outputs": [{"name": "confidence"}]}).outputs
    assert [o["name"] for o in only] == ["confidence"]
    with pytest.raises(InvalidRequest, match="answers: label, confidence, probabilities"):
        pipeline.infer({**_body(), "outputs": [{"name": "score"}]})


def test_pipeline_turns_model_failures_into_model_errors() -> None:
    def broken(columns: Mapping[str, np.ndarray]) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(ModelError, match="boom"):
        InferencePipeline(FEATURES, CallableModel(broken)).infer(_body())
    short = InferencePipeline(FEATURES, CallableModel(lambda cols: ["x"]))
    with pytest.raises(ModelError, match="1 predictions for 2 rows"):
        short.infer(_body())


def test_preprocess_output_is_what_the_model_sees() -> None:
    seen: dict[str, Any] = {}

    def model(columns: Mapping[str, np.ndarray]) -> Prediction:
        seen.update(columns)
        return classify(columns)

    def double_age(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**columns, "age": columns["age"] * 2}

    inference = InferencePipeline(FEATURES, CallableModel(model), double_age).infer(_body())
    assert seen["age"].tolist() == [60.0, 140.0]
    assert inference.features["age"].tolist() == [60.0, 140.0]


# --- Monitor ------------------------------------------------------------------------------


def _samples(monitor: Monitor) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = monitor.exposition()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


IDENT = {"model": "m", "version": "1", "revision": "r"}


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset({**IDENT, **labels}.items())


def test_monitor_precreates_every_bin_and_exports_baselines() -> None:
    monitor = Monitor(_profile(), Identity("m", "1", "r"), invalid_reasons=["bad_json"])
    samples = _samples(monitor)
    for feature in FEATURES:
        for label in feature_bins(feature).labels:
            assert samples[_key(c.FEATURE_BIN_TOTAL, feature=feature.name, bin=label)] == 0
            assert samples[
                _key(c.FEATURE_BASELINE_RATIO, feature=feature.name, bin=label)
            ] == pytest.approx(feature.baseline[label])
    assert samples[_key(c.INVALID_REQUESTS_TOTAL, reason="bad_json")] == 0
    assert samples[_key(c.REQUESTS_TOTAL, code="500")] == 0
    assert samples[_key(c.PREDICTION_BIN_TOTAL, output="label", bin="yes")] == 0
    assert samples[_key(c.MODEL_INFO)] == 1


def test_monitor_counts_batches_vectorised() -> None:
    monitor = Monitor(_profile(), Identity("m", "1", "r"))
    monitor.observe_features(
        {
            "age": [1, 100, 100],
            "plan": _strings("a", "new", None),
            "vip": _strings(True, True, False),
        }
    )
    monitor.observe_predictions(np.array(["yes", "no", "yes"]), confidence=[0.55, 0.95, 1.0])
    monitor.observe_request(200, 0.003)
    monitor.observe_invalid("bad_shape")
    samples = _samples(monitor)
    assert samples[_key(c.FEATURE_BIN_TOTAL, feature="age", bin="00")] == 1
    assert samples[_key(c.FEATURE_BIN_TOTAL, feature="age", bin="09")] == 2
    assert samples[_key(c.FEATURE_BIN_TOTAL, feature="income", bin="missing")] == 3  # absent
    assert samples[_key(c.FEATURE_BIN_TOTAL, feature="plan", bin="other")] == 1
    assert samples[_key(c.FEATURE_BIN_TOTAL, feature="plan", bin="missing")] == 1
    assert samples[_key(c.FEATURE_BIN_TOTAL, feature="vip", bin="true")] == 2
    assert samples[_key(c.PREDICTION_BIN_TOTAL, output="label", bin="yes")] == 2
    assert samples[_key(c.PREDICTION_CONFIDENCE + "_bucket", le="0.6")] == 1
    assert samples[_key(c.PREDICTION_CONFIDENCE + "_bucket", le="0.95")] == 2
    assert samples[_key(c.PREDICTION_CONFIDENCE + "_count")] == 3
    assert samples[_key(c.PREDICTION_CONFIDENCE + "_sum")] == pytest.approx(2.5)
    assert samples[_key(c.REQUESTS_TOTAL, code="200")] == 1
    assert samples[_key(c.REQUEST_DURATION_SECONDS + "_count")] == 1
    assert samples[_key(c.INVALID_REQUESTS_TOTAL, reason="bad_shape")] == 1


def test_disabled_monitor_records_nothing() -> None:
    monitor = Monitor(_profile(), Identity("m", "1", "r"), enabled=False)
    monitor.observe_features({"age": [1]})
    monitor.observe_request(200, 0.1)
    samples = _samples(monitor)
    assert samples[_key(c.FEATURE_BIN_TOTAL, feature="age", bin="00")] == 0
    assert samples[_key(c.REQUESTS_TOTAL, code="200")] == 0


def test_time_request_counts_exceptions_as_500() -> None:
    monitor = Monitor(_profile(), Identity("m", "1", "r"))
    with pytest.raises(KeyError), monitor.time_request():
        raise KeyError("x")
    with monitor.time_request() as timer:
        timer.code = 404
    samples = _samples(monitor)
    assert samples[_key(c.REQUESTS_TOTAL, code="500")] == 1
    assert samples[_key(c.REQUESTS_TOTAL, code="404")] == 1


def test_identity_prefers_the_pods_environment() -> None:
    env = {c.ENV_MODEL_NAME: "churn", c.ENV_REVISION: "abc123"}
    assert Identity.resolve("local-name", "7", None, env) == Identity("churn", "7", "abc123")
    assert Identity.resolve("m", "1", None, {}).revision == "local"


# --- warm-up ------------------------------------------------------------------------------


def test_mismatch_compares_labels_exactly_and_floats_with_tolerance() -> None:
    outputs = [{"name": "label", "data": ["a"]}, {"name": "confidence", "data": [0.5]}]
    assert mismatch({"label": ["a"], "confidence": [0.5 + 1e-9]}, outputs) is None
    assert "expected 'b'" in str(mismatch({"label": ["b"]}, outputs))
    assert "expected 0.6" in str(mismatch({"confidence": [0.6]}, outputs))
    assert "missing" in str(mismatch({"value": [1.0]}, outputs))


def _golden(expected_label: str) -> GoldenRequest:
    pipeline = InferencePipeline(FEATURES, CallableModel(classify))
    outputs = pipeline.infer(_body()).outputs
    expected = {o["name"]: o["data"] for o in outputs}
    expected["label"] = [expected_label, expected["label"][1]]
    return GoldenRequest(name="g", request=_body(), expected=expected)


def _warm(model: CallableModel, golden: GoldenRequest, bound_ms: float) -> Readiness:
    readiness = Readiness()
    pipeline = InferencePipeline(FEATURES, model)
    asyncio.run(warm_up(pipeline, [golden], readiness, max_latency_ms=bound_ms, rounds=5))
    return readiness


def test_warm_up_becomes_ready_when_golden_outputs_match() -> None:
    readiness = _warm(CallableModel(classify), _golden("no"), 1000)
    assert readiness.state is State.READY
    assert not readiness.broken


def _failing(columns: Mapping[str, np.ndarray]) -> Prediction:
    raise RuntimeError("weights file truncated")


@pytest.mark.parametrize(
    ("model", "golden", "reason"),
    [
        (classify, [_golden("yes")], "golden request failed: g: output 'label'[0] is 'no', "
         "expected 'yes'"),
        (_failing, [_golden("no")], "golden request failed: g: prediction failed: "
         "RuntimeError('weights file truncated')"),
        (classify, [], "the profile has no golden requests"),
    ],
    ids=["wrong-output", "model-error", "no-golden-requests"],
)  # fmt: skip
def test_warm_up_finds_the_image_broken_for_good(
    model: Callable[[Mapping[str, np.ndarray]], Prediction],
    golden: list[GoldenRequest],
    reason: str,
) -> None:
    """The same on every node and start: `serve` exits with the reason."""
    readiness = Readiness()
    pipeline = InferencePipeline(FEATURES, CallableModel(model))
    asyncio.run(warm_up(pipeline, golden, readiness, max_latency_ms=1000, rounds=5))
    assert (readiness.state, readiness.reason, readiness.broken) == (State.FAILED, reason, True)


def _sleepy(seconds: float, calls: int) -> CallableModel:
    """A model whose first `calls` predictions take `seconds` (a cold start)."""
    done: list[int] = []

    def predict(columns: Mapping[str, np.ndarray]) -> Prediction:
        done.append(1)
        if len(done) <= calls:
            time.sleep(seconds)
        return classify(columns)

    return CallableModel(predict)


def test_warm_up_retries_slow_rounds_then_gives_up() -> None:
    readiness = _warm(_sleepy(0.03, calls=2), _golden("no"), 20)
    assert readiness.state is State.READY
    assert "round 3" in readiness.reason
    never = _warm(_sleepy(0.005, calls=100), _golden("no"), 1)
    assert never.state is State.FAILED
    assert "slower than 1 ms" in never.reason
    assert not never.broken  # a busy node, maybe: the server stays up, not ready


def test_the_termination_log_is_the_configured_one_else_the_kubelets_if_writable(
    tmp_path: Path,
) -> None:
    mounted = tmp_path / "termination-log"
    assert termination_log(str(tmp_path / "mine"), default=mounted) == tmp_path / "mine"
    assert termination_log(None, default=mounted) is None  # not mounted: nowhere
    mounted.touch()
    assert termination_log(None, default=mounted) == mounted
    assert termination_log("", default=mounted) == mounted
    mounted.chmod(0o444)
    if not os.access(mounted, os.W_OK):  # root may write anything
        assert termination_log(None, default=mounted) is None


def test_termination_messages_are_one_line_cut_to_what_a_kubelet_reads(tmp_path: Path) -> None:
    assert encode("cannot serve /model: invalid model.yaml:\n  name\n    Field required") == (
        b"cannot serve /model: invalid model.yaml: name Field required"
    )
    long = encode("\u00e9" * MAX_MESSAGE_BYTES)  # 2 bytes each
    assert len(long) == MAX_MESSAGE_BYTES
    assert long.decode() == "\u00e9" * (MAX_MESSAGE_BYTES // 2)
    written = tmp_path / "log"
    write_termination_message(written, "golden request failed: g")
    assert written.read_text() == "golden request failed: g"
    write_termination_message(tmp_path / "missing" / "log", "x")  # logged, not raised
    write_termination_message(None, "x")


@pytest.mark.parametrize("hangs", [True, False])
def test_a_server_whose_exit_a_leftover_thread_blocks_still_ends_with_its_code(
    hangs: bool, tmp_path: Path
) -> None:
    """`modeldeploy serve` of a directory it cannot serve ends with 2 through `main`, the
    console script, also when the interpreter's exit waits on a non-daemon thread that never
    ends (the deadline ends it); without that thread the exit is the interpreter's own,
    before the deadline (which would skip the atexit hook)."""
    code = (
        "import sys, threading, atexit;"
        "import modeldeploy.process_exit as p, modeldeploy.cli as cli;"
        f"p.EXIT_DEADLINE_S = {0.5 if hangs else 60};"
        f"threading.Thread(target=threading.Event().wait).start() if {hangs} else None;"
        "atexit.register(print, 'atexit ran');"
        f"sys.argv = ['modeldeploy', 'serve', '--model-dir', {str(tmp_path / 'none')!r}];"
        "cli.main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=50
    )
    assert result.returncode == 2, result.stderr
    assert "cannot serve" in result.stderr
    # Hanging, the threads are joined before atexit hooks, so they never ran.
    assert result.stdout.strip() == ("" if hangs else "atexit ran")


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (4, 4), ("a message", 1)])
def test_the_exit_status_of_a_system_exit_is_the_interpreters(code: object, status: int) -> None:
    assert exit_status(code) == status


# --- prediction log and shadow ------------------------------------------------------------


def test_log_record_redacts_named_fields() -> None:
    record = log_record(
        Identity("m", "1", "r"),
        request_id="7",
        inputs={"age": [30], "plan": ["a"]},
        outputs=[{"name": "label", "data": ["no"]}, {"name": "confidence", "data": [0.7]}],
        redact={"plan"},
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert record == {
        "time": "2026-01-01T00:00:00.000+00:00", "model": "m", "version": "1", "revision": "r",
        "id": "7", "inputs": {"age": [30], "plan": REDACTED}, "outputs": {"label": ["no"]},
        "confidence": [0.7],
    }  # fmt: skip


def test_prediction_log_samples_at_its_rate(tmp_path: Any) -> None:
    path = tmp_path / "log.jsonl"
    with path.open("w") as stream:
        log = PredictionLog(stream, Identity("m", "1", "r"), 0.25, rng=random.Random(1))
        for i in range(400):
            log.maybe_record(str(i), {"age": [i]}, [{"name": "label", "data": ["no"]}])
    lines = path.read_text().splitlines()
    assert 60 < len(lines) < 140
    assert json.loads(lines[0])["revision"] == "r"


def test_shadow_configuration_from_env_is_checked() -> None:
    monitor = Monitor(_profile(), Identity("m", "1", "r"))
    assert Mirror.from_env(monitor, {}) is None
    mirror = Mirror.from_env(monitor, {c.ENV_SHADOW_URL: "http://127.0.0.1:1/"})
    assert mirror is not None
    assert (mirror.url, mirror.percent) == ("http://127.0.0.1:1", 100.0)
    with pytest.raises(ModelDirError, match="0 to 100"):
        Mirror.from_env(monitor, {c.ENV_SHADOW_URL: "http://x", c.ENV_SHADOW_PERCENT: "150"})
    with pytest.raises(ModelDirError, match="http"):
        Mirror.from_env(monitor, {c.ENV_SHADOW_URL: "ftp://x"})


def test_shadow_offer_never_blocks_and_drops_when_full() -> None:
    monitor = Monitor(_profile(), Identity("m", "1", "r"))
    mirror = Mirror("http://127.0.0.1:9", 100, monitor, queue_size=2)  # workers not started
    for _ in range(5):
        copy = mirror.copy("/v2/models/m/infer", b"{}")
        assert copy is not None
        mirror.offer(copy)
    assert mirror._queue.qsize() == 2
    assert _samples(monitor)[_key(c.SHADOW_REQUESTS_TOTAL, result="dropped")] == 3


def test_shadow_copy_samples_its_percent_and_keeps_the_framing() -> None:
    monitor = Monitor(_profile(), Identity("m", "1", "r"))
    mirror = Mirror("http://127.0.0.1:9", 25, monitor, rng=random.Random(4))
    framing = {"inference-header-content-length": "12"}
    copies = [mirror.copy("/v2/models/m/infer", b"{}", framing) for _ in range(1000)]
    taken = [copy for copy in copies if copy is not None]
    assert 200 < len(taken) < 300
    assert taken[0].headers == framing  # tracing off: no trace context
    assert Mirror("http://127.0.0.1:9", 0, monitor).copy("/v2/models/m/infer", b"{}") is None


def test_shadow_stop_drops_what_is_queued_and_ends_its_workers() -> None:
    monitor = Monitor(_profile(), Identity("m", "1", "r"))
    mirror = Mirror("http://127.0.0.1:9", 100, monitor, queue_size=8, workers=2)
    copy = mirror.copy("/v2/models/m/infer", b"{}")
    assert copy is not None
    for _ in range(3):  # queued before the workers start: nothing has taken them yet
        mirror.offer(copy)
    mirror.start()
    mirror.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("shadow-")]
    samples = _samples(monitor)
    dropped = samples[_key(c.SHADOW_REQUESTS_TOTAL, result="dropped")]
    tried = sum(samples[_key(c.SHADOW_REQUESTS_TOTAL, result=r)] for r in ("sent", "failed"))
    assert dropped + tried == 3  # each copy either posted (port 9 refuses: failed) or dropped
    assert samples[_key(c.SHADOW_REQUESTS_TOTAL, result="sent")] == 0


class _ClosingShadow(BaseHTTPRequestHandler):
    """Answers each request, then closes the connection without saying so (as a server does
    to an idle keep-alive connection): the next request on it finds it stale."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str | None, str | None]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.seen.append((self.path, self.headers[c.SHADOW_HEADER], self.headers["x-framing"]))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


def test_shadow_workers_post_each_copy_and_reconnect_when_the_shadow_closed_the_connection() -> (
    None
):
    monitor = Monitor(_profile(), Identity("m", "1", "r"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ClosingShadow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/base"
        mirror = Mirror(url, 100, monitor, workers=1)  # one connection, reused
        mirror.start()
        for i in range(3):
            copy = mirror.copy(f"/v2/models/m/infer/{i}", b"{}", {"x-framing": "7"})
            assert copy is not None
            mirror.offer(copy)
        deadline = time.monotonic() + 10
        while len(_ClosingShadow.seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        mirror.stop()
    finally:
        server.shutdown()
        server.server_close()
    paths = [f"/base/v2/models/m/infer/{i}" for i in range(3)]
    assert _ClosingShadow.seen == [(path, "1", "7") for path in paths]
    samples = _samples(monitor)
    assert samples[_key(c.SHADOW_REQUESTS_TOTAL, result="sent")] == 3
    assert samples[_key(c.SHADOW_REQUESTS_TOTAL, result="failed")] == 0


def test_regression_outputs_are_binned_by_prediction_deciles() -> None:
    output = RegressionOutput(edges=[1.0, 2.0], baseline={"00": 0.3, "01": 0.3, "02": 0.4})
    profile = Profile(rows=10, features=FEATURES, output=output)
    monitor = Monitor(profile, Identity("m", "1", "r"))
    monitor.observe_predictions([0.5, 1.5, 7.0, 9.0])
    samples = _samples(monitor)
    assert samples[_key(c.PREDICTION_BIN_TOTAL, output="value", bin="02")] == 2
    assert not any(name.startswith(c.PREDICTION_CONFIDENCE) for name, _ in samples)
    values = output_tensors(Prediction(np.array([0.5, 1.5])), None)
    assert values == [{"name": "value", "shape": [2], "datatype": "FP64", "data": [0.5, 1.5]}]


def test_runtime_modules_import_none_of_the_operators_libraries() -> None:
    code = (
        "import sys, modeldeploy.cli, modeldeploy.serving.server, modeldeploy.serving.monitor;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kopf', 'kubernetes', 'scipy',"
        " 'sklearn', 'pandas', 'prometheus_api_client', 'opentelemetry', 'shap'}"
        " | {m for m in sys.modules if m.startswith('modeldeploy.profiling')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
