"""`modeldeploy proxy`'s pure parts: the request sent upstream and the Prediction read back,
which upstream answers are the model's errors, the --config file, readiness transitions;
then the proxy's app called in process (ASGI) in front of a small V2 server on 127.0.0.1,
for what reaches the upstream and how each outcome is counted."""

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from test_serving import FEATURES, _body, _strings, classify
from test_serving_app import _counted, _post
from typer.testing import CliRunner

from modeldeploy import contract as c
from modeldeploy.cli import app as cli
from modeldeploy.profile_schema import (
    ClassificationOutput,
    ConfidenceProfile,
    GoldenRequest,
    Profile,
    RegressionOutput,
)
from modeldeploy.serving.app import Runtime
from modeldeploy.serving.config import ModelDirError, PredictionLogConfig
from modeldeploy.serving.keepalive import ConnectionPool
from modeldeploy.serving.model import CallableModel
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import InferencePipeline, ModelError
from modeldeploy.serving.protocol import Reason
from modeldeploy.serving.proxy import load_proxy_runtime, upstream_url
from modeldeploy.serving.proxy_config import UpstreamConfig, load_proxy_config
from modeldeploy.serving.server import RunOptions
from modeldeploy.serving.upstream import (
    check_outputs,
    prediction_from,
    status_error,
    upstream_request,
)
from modeldeploy.serving.upstream_health import (
    Probe,
    UpstreamHealth,
    http_probe,
    lost,
    regained,
)
from modeldeploy.serving.warmup import GoldenCheck, Readiness, State

pytestmark = pytest.mark.unit

CLASSES = ClassificationOutput(
    classes=["no", "yes"],
    baseline={"no": 0.5, "yes": 0.5},
    confidence=ConfidenceProfile(buckets=[0.6, 0.8, 1.0], baseline=[0.3, 0.3, 0.4, 0.0]),
)
DEFAULTS = UpstreamConfig()


def _columns() -> dict[str, np.ndarray]:
    return {
        "age": np.array([30.0, 70.0]),
        "income": np.array([12.5, np.nan]),
        "plan": _strings("a", None),
        "vip": _strings(True, False),
    }


# --- the request sent upstream -------------------------------------------------------------


def test_the_upstream_request_has_every_feature_in_profile_order_and_asks_for_outputs() -> None:
    body = upstream_request(FEATURES, _columns(), CLASSES, DEFAULTS)
    assert body["inputs"] == [
        {"name": "age", "shape": [2], "datatype": "INT64", "data": [30, 70]},
        {"name": "income", "shape": [2], "datatype": "FP64", "data": [12.5, None]},
        {
            "name": "plan",
            "shape": [2],
            "datatype": "BYTES",
            "data": ["a", None],
            "parameters": {"content_type": "str"},
        },
        {"name": "vip", "shape": [2], "datatype": "BOOL", "data": [True, False]},
    ]
    assert body["outputs"] == [{"name": "predict"}, {"name": "predict_proba"}]
    assert body["parameters"] == {"content_type": "pd"}
    assert json.dumps(body, allow_nan=False)  # NaN went out as null


def test_outputs_asked_for_follow_the_profile_and_the_configuration() -> None:
    plain = UpstreamConfig(
        label_output="label", probabilities_output=None, parameters={}, string_parameters={}
    )
    no_confidence = CLASSES.model_copy(update={"confidence": None})
    body = upstream_request(FEATURES, _columns(), no_confidence, plain)
    assert body["outputs"] == [{"name": "label"}]
    assert ("parameters" in body, "parameters" in body["inputs"][2]) == (False, False)
    regression = RegressionOutput(edges=[0.0, 1.0], baseline={"a": 1.0})
    assert upstream_request(FEATURES, _columns(), regression, plain)["outputs"] == [
        {"name": "predict"}
    ]
    assert check_outputs(CLASSES, plain) is not None  # confidence needs probabilities
    assert check_outputs(no_confidence, plain) is None


# --- the Prediction read back --------------------------------------------------------------


def _answer(**outputs: Any) -> dict[str, Any]:
    return {"outputs": [{"name": k, "data": v} for k, v in outputs.items()]}


def test_a_classifiers_answer_becomes_labels_and_probabilities() -> None:
    flat = _answer(predict=["no", "yes"], predict_proba=[0.8, 0.2, 0.3, 0.7])
    nested = _answer(predict=[["no"], ["yes"]], predict_proba=[[0.8, 0.2], [0.3, 0.7]])
    for payload in (flat, nested):
        prediction = prediction_from(payload, 2, CLASSES, DEFAULTS)
        assert prediction.values.tolist() == ["no", "yes"]
        assert prediction.classes == ("no", "yes")
        assert prediction.probabilities is not None
        assert prediction.probabilities.tolist() == [[0.8, 0.2], [0.3, 0.7]]


def test_labels_are_the_profiles_classes_whatever_number_type_the_upstream_answers() -> None:
    integers = ClassificationOutput(classes=[0, 1], baseline={"0": 0.5, "1": 0.5})
    prediction = prediction_from(_answer(predict=[1.0, 0]), 2, integers, DEFAULTS)
    assert [type(v) for v in prediction.values] == [int, int]
    assert prediction.values.tolist() == [1, 0]


def test_a_regressors_answer_becomes_values() -> None:
    regression = RegressionOutput(edges=[0.0, 1.0], baseline={"a": 1.0})
    prediction = prediction_from(_answer(predict=[1.5, 2]), 2, regression, DEFAULTS)
    assert (prediction.values.tolist(), prediction.classification) == ([1.5, 2.0], False)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ([], "no 'outputs' list"),
        ({"outputs": "x"}, "no 'outputs' list"),
        (_answer(predict_proba=[0.5] * 4), "no output 'predict'"),
        (_answer(predict=["no"], predict_proba=[0.5] * 4), "1 values for 2 rows"),
        (_answer(predict=["no", "maybe"], predict_proba=[0.5] * 4), "label(s) maybe"),
        (_answer(predict=["no", "yes"], predict_proba=[0.5] * 3), "3 values for 4 rows"),
        (_answer(predict=["no", "yes"], predict_proba=["a"] * 4), "is not numbers"),
        (_answer(predict=["no", "yes"], predict_proba=[0.5, None, 1, 0]), "NaN or infinite"),
        (_answer(predict="no"), "data is not a list"),
        (_answer(predict=[{"a": 1}, "no"], predict_proba=[0.5] * 4), "label(s) {'a': 1}"),
    ],
)
def test_an_answer_that_is_no_prediction_is_the_models_error(payload: Any, says: str) -> None:
    with pytest.raises(ModelError, match=says.replace("(", r"\(").replace(")", r"\)")):
        prediction_from(payload, 2, CLASSES, DEFAULTS)


def test_any_status_but_200_is_the_models_error_with_what_the_upstream_said() -> None:
    for status in (400, 404, 422, 500, 503):
        err = status_error(status, b'{"error": "no"}' + b"x" * 1000)
        assert str(err).startswith(f'the upstream answered {status}: {{"error": "no"}}')
        assert len(str(err)) < 300


# --- configuration ---------------------------------------------------------------------------


def test_the_config_file_is_optional_and_the_pods_version_fills_in(tmp_path: Path) -> None:
    env = {c.ENV_MODEL_VERSION: "v7"}
    config = load_proxy_config(None, "churn", env)
    assert (config.name, config.version, config.platform) == ("churn", "v7", "modeldeploy-proxy")
    assert config.upstream == UpstreamConfig()
    path = tmp_path / "proxy.yaml"
    path.write_text("version: '3'\nupstream: {timeout_s: 0.5, label_output: label}\n")
    config = load_proxy_config(path, "churn", env)
    assert (config.version, config.upstream.timeout_s) == ("3", 0.5)
    assert config.upstream.label_output == "label"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("framework: sklearn\nversion: '1'\n", "framework"),  # the upstream runs the model
        ("version: '1'\nfallback: {confidence_floor: 0.5, rules: a:b}\n", "fallback"),
        ("version: '1'\nupstream: {timeout_s: 0}\n", "timeout_s"),
        ("version: '1'\nupstream: {url: http://x}\n", "url"),
        ("[1, 2]\n", "must be a mapping"),
        ("{unclosed\n", "cannot read"),
        ("name: churn\n", "version is unknown"),
    ],
)
def test_a_config_file_the_proxy_cannot_honour_is_refused(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    with pytest.raises(ModelDirError, match=says):
        load_proxy_config(path, "churn", {})


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8080", "ftp://127.0.0.1", "http://", "http://h:x", "http://h:1/?a=1"]
)
def test_an_upstream_that_is_no_http_url_is_refused(url: str) -> None:
    with pytest.raises(ModelDirError, match="--upstream"):
        upstream_url(url)
    assert upstream_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


def test_the_prediction_log_flags_go_over_the_configuration() -> None:
    configured = PredictionLogConfig(path="a.jsonl", sample_rate=0.1, redact=["email"])
    assert RunOptions().prediction_log(configured) == configured
    flags = RunOptions(log_path="-", log_sample_rate=1.0, redact=["plan"])
    assert flags.prediction_log(configured) == PredictionLogConfig(
        path="-", sample_rate=1.0, redact=["email", "plan"]
    )


def _profile_with_golden() -> Profile:
    """Its one golden request's labels: what `classify` and the V2 server below answer."""
    golden = GoldenRequest(name="g1", request=_body(), expected={"label": ["no", "yes"]})
    return Profile(rows=100, features=FEATURES, output=CLASSES, golden=[golden])


# --- readiness ------------------------------------------------------------------------------


def test_an_upstream_lost_turns_a_serving_proxy_unready_and_golden_matches_bring_it_back() -> None:
    readiness = Readiness(State.READY, "warm")
    assert lost(readiness, "GET /v2/models/m/ready answered 503")
    assert (readiness.state, readiness.ready) == (State.UPSTREAM_UNREADY, False)
    assert not lost(readiness, "refused")  # already unready: only the reason follows
    assert readiness.reason == "upstream not ready: refused"
    failing = [GoldenCheck("match", None, 1.0), GoldenCheck("mismatch", "g2: label", 1.0)]
    assert not regained(readiness, failing)
    assert readiness.state is State.UPSTREAM_UNREADY
    assert "g2: label" in readiness.reason
    assert regained(readiness, [GoldenCheck("match", None, 1.0)])
    assert readiness.ready


def test_warm_up_and_its_failures_are_left_to_warm_up() -> None:
    for state in (State.WARMING, State.FAILED):
        readiness = Readiness(state, "as it was")
        assert not lost(readiness, "down")
        assert not regained(readiness, [])
        assert (readiness.state, readiness.reason) == (state, "as it was")


def _scripted(answers: list[str | None]) -> Probe:
    """A probe answering `answers` in turn, then cancelling whoever polls it further."""
    remaining = list(answers)

    def probe() -> str | None:
        if not remaining:
            raise asyncio.CancelledError
        return remaining.pop(0)

    return probe


def test_the_proxy_waits_for_its_upstream_saying_why() -> None:
    readiness = Readiness()
    health = UpstreamHealth(_scripted(["refused", "answered 503", None]), interval_s=0.001)
    asyncio.run(health.wait_ready(readiness))
    assert readiness.state is State.WARMING
    assert readiness.reason.endswith(": answered 503")


def test_the_watch_turns_readiness_with_the_upstream_and_the_golden_requests() -> None:
    profile = _profile_with_golden()
    pipeline = InferencePipeline(FEATURES, CallableModel(classify))
    monitor = Monitor(profile, Identity("m", "1", "r"), invalid_reasons=list(Reason))
    readiness = Readiness(State.READY, "warm")
    states: list[State] = []
    probe = _scripted(["gone", "gone", None])

    def recording() -> str | None:
        states.append(readiness.state)
        return probe()

    health = UpstreamHealth(recording, interval_s=0.001)
    with ThreadPoolExecutor(1) as pool, pytest.raises(asyncio.CancelledError):
        asyncio.run(health.watch(pipeline, profile.golden, monitor, readiness, pool))
    assert states == [State.READY, State.UPSTREAM_UNREADY, State.UPSTREAM_UNREADY, State.READY]
    assert readiness.reason == "upstream ready again; 1 golden requests through it match"


# --- the proxy in front of a V2 server on 127.0.0.1 ---------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    """A V2 server: `age` > 50 is "yes"; `status` other than 200 answers that, with a body."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the proxy's pool expects
    status: ClassVar[int] = 200
    ready: ClassVar[int] = 200
    received: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        self._send(self.ready, b"{}")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).received.append(body)
        if self.status != 200:
            self._send(self.status, b'{"error": "upstream says no"}')
            return
        ages = next(i["data"] for i in body["inputs"] if i["name"] == "age")
        labels = ["yes" if a > 50 else "no" for a in ages]
        probabilities = [
            p for label in labels for p in ((0.1, 0.9) if label == "yes" else (0.9, 0.1))
        ]
        outputs = [
            {"name": "predict", "datatype": "BYTES", "shape": [len(ages)], "data": labels},
            {"name": "predict_proba", "shape": [len(ages), 2], "data": probabilities},
        ]
        self._send(200, json.dumps({"model_name": "m", "outputs": outputs}).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    _Upstream.status, _Upstream.ready, _Upstream.received = 200, 200, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _proxy(tmp_path: Path, upstream: str) -> Runtime:
    profile = _profile_with_golden()
    path = tmp_path / "profile.json"
    path.write_text(profile.model_dump_json())
    env = {c.ENV_MODEL_VERSION: "1", c.ENV_REVISION: "r"}
    runtime = load_proxy_runtime(path, upstream, "upstream-m", model_name="m", env=env)
    runtime.readiness.state = State.READY  # no lifespan here: no warm-up
    return runtime


def test_the_proxy_answers_with_the_upstreams_prediction_counted_as_the_runtime_counts(
    tmp_path: Path, upstream: str
) -> None:
    runtime = _proxy(tmp_path, upstream)
    status, _, answer = _post(runtime, _body())
    assert status == 200, answer
    assert (answer["model_name"], answer["id"]) == ("m", "r1")
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    assert outputs == {
        "label": ["no", "yes"],
        "confidence": [0.9, 0.9],
        "probabilities": [0.9, 0.1, 0.1, 0.9],
    }
    (sent,) = _Upstream.received
    assert [i["name"] for i in sent["inputs"]] == [f.name for f in FEATURES]
    assert _counted(runtime) == ({"200": 1}, {})


def test_what_the_proxy_refuses_never_reaches_the_upstream_and_is_the_clients(
    tmp_path: Path, upstream: str
) -> None:
    runtime = _proxy(tmp_path, upstream)
    status, _, answer = _post(runtime, _body(age={"datatype": "BYTES"}))
    assert (status, "'age'" in answer["error"]) == (400, True)
    assert _post(runtime, b"{not json")[0] == 400
    assert _Upstream.received == []
    assert _counted(runtime) == ({"400": 2}, {"bad_datatype": 1, "bad_json": 1})


def test_an_upstream_refusing_or_failing_a_validated_request_is_the_models_error(
    tmp_path: Path, upstream: str
) -> None:
    runtime = _proxy(tmp_path, upstream)
    for status in (400, 503):
        _Upstream.status = status
        code, _, answer = _post(runtime, _body())
        assert (code, answer) == (500, {"error": "inference failed"})
    assert len(_Upstream.received) == 2
    assert _counted(runtime) == ({"500": 2}, {})


def test_an_upstream_that_is_gone_is_the_models_error_and_not_ready(tmp_path: Path) -> None:
    gone = "http://127.0.0.1:9"  # discard: nothing listens
    runtime = _proxy(tmp_path, gone)
    code, _, _ = _post(runtime, _body())
    assert code == 500
    assert _counted(runtime) == ({"500": 1}, {})
    probe = http_probe(ConnectionPool(gone, size=1, timeout_s=1), "m")
    assert "GET /v2/models/m/ready failed" in (probe() or "")


def test_the_upstreams_readiness_is_its_models_ready_endpoint(upstream: str) -> None:
    probe = http_probe(ConnectionPool(upstream, size=1, timeout_s=1), "m")
    assert probe() is None
    _Upstream.ready = 400
    assert probe() == "GET /v2/models/m/ready answered 400"


# --- the command ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--upstream", "127.0.0.1:1"], "must be an http(s) URL"),
        (["--upstream", "http://127.0.0.1:1", "--profile", "/nonexistent.json"], "cannot load"),
    ],
)
def test_the_command_exits_2_on_bad_input_with_the_reason(
    tmp_path: Path, args: list[str], says: str
) -> None:
    base = ["proxy", "--profile", str(tmp_path / "p.json"), "--upstream-model", "m"]
    base += ["--termination-log", str(tmp_path / "termination")]
    result = CliRunner().invoke(cli, [*base, *args], env={c.ENV_MODEL_VERSION: "1"})
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert says in (tmp_path / "termination").read_text()
