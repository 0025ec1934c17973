"""The Starlette app called in process through ASGI: what a client sees for its own faults,
for a model failing, for hanging up and for stalling, and what is counted for each."""

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from starlette.types import Message
from test_serving import FEATURES, _body, _profile, _samples, classify

from modeldeploy import contract as c
from modeldeploy.serving.app import INFERENCE_FAILED, Runtime, create_app
from modeldeploy.serving.config import ModelConfig
from modeldeploy.serving.limits import ServerLimits
from modeldeploy.serving.model import CallableModel, Prediction
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.protocol import Reason
from modeldeploy.serving.shadow import Mirror
from modeldeploy.serving.warmup import Readiness, State

pytestmark = pytest.mark.unit

INFER = "/v2/models/m/infer"
IDENTITY = Identity("m", "1", "r")
STALL_TIMEOUT_S = 0.05


def _runtime(model: Any = classify) -> Runtime:
    profile = _profile()
    runtime = Runtime(
        identity=IDENTITY,
        config=ModelConfig(name="m", version="1"),
        profile=profile,
        pipeline=InferencePipeline(FEATURES, CallableModel(model)),
        monitor=Monitor(profile, IDENTITY, invalid_reasons=list(Reason)),
        max_latency_ms=500,
        limits=ServerLimits(body_timeout_s=STALL_TIMEOUT_S, inference_threads=2),
    )
    runtime.readiness.state = State.READY  # no lifespan here: no warm-up
    return runtime


def _chunk(body: bytes, *, more: bool = False) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def _call(
    runtime: Runtime, messages: list[Message], on_send: Callable[[Message], None] | None = None
) -> tuple[int, dict[str, str], Any]:
    """POSTs to the infer path; `messages` is what the client sends, after which it stalls.
    `on_send` sees each message the app sends, as it sends it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": INFER,
        "raw_path": INFER.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }
    incoming = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # nothing more ever arrives
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)
        if on_send is not None:
            on_send(message)

    await create_app(runtime)(scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], headers, json.loads(body)


def _post(runtime: Runtime, body: Any) -> tuple[int, dict[str, str], Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return asyncio.run(_call(runtime, [_chunk(raw)]))


def _counted(runtime: Runtime) -> tuple[dict[str, float], dict[str, float]]:
    """(requests_total by code, invalid_requests_total by reason), non-zero ones."""
    by_code: dict[str, float] = {}
    by_reason: dict[str, float] = {}
    for (name, labels), value in _samples(runtime.monitor).items():
        label = dict(labels)
        if name == c.REQUESTS_TOTAL and value:
            by_code[label[c.LABEL_CODE]] = value
        elif name == c.INVALID_REQUESTS_TOTAL and value:
            by_reason[label[c.LABEL_REASON]] = value
    return by_code, by_reason


def test_a_valid_request_is_answered_from_the_inference_pool() -> None:
    runtime = _runtime()
    status, _, answer = _post(runtime, _body())
    assert status == 200
    assert answer["outputs"][0]["data"] == ["no", "yes"]
    assert _counted(runtime) == ({"200": 1}, {})


MALFORMED: list[tuple[str, Any, Reason, str]] = [
    ("truncated JSON", b'{"inputs": [', Reason.BAD_JSON, "request body is not valid JSON"),
    ("deep nesting", b"[" * 100_000, Reason.BAD_JSON, "request body is not valid JSON"),
    ("huge integer", b'{"id": ' + b"9" * 5000 + b"}", Reason.BAD_JSON, "not valid JSON"),
    ("list as datatype", _body(age={"datatype": []}), Reason.BAD_DATATYPE, "datatype []"),
    ("object as datatype", _body(age={"datatype": {}}), Reason.BAD_DATATYPE, "an object"),
    ("object as shape", _body(age={"shape": {}}), Reason.BAD_SHAPE, "shape an object"),
    ("nested data", _body(age={"data": [[[1]], 2]}), Reason.BAD_VALUE, "a nested list"),
    ("parameters", _body(vip={"parameters": {"a": []}}), Reason.BAD_PARAMETERS, "'vip'"),
    ("list as name", _body(age={"name": []}), Reason.BAD_INPUT, "no 'name'"),
]


@pytest.mark.parametrize(("title", "body", "reason", "message"), MALFORMED)
def test_malformed_requests_are_400s_with_fixed_messages_counted_by_reason(
    title: str, body: Any, reason: Reason, message: str
) -> None:
    runtime = _runtime()
    status, _, answer = _post(runtime, body)
    assert (status, reason) == (400, reason), title
    assert message in answer["error"]
    assert len(answer["error"]) < 200
    assert _counted(runtime) == ({"400": 1}, {reason.value: 1})


def test_a_failing_model_is_a_500_whose_exception_is_logged_never_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(columns: Mapping[str, np.ndarray]) -> Prediction:
        raise ValueError("cannot open /srv/models/secret.bin")

    runtime = _runtime(broken)
    with caplog.at_level(logging.ERROR, logger="modeldeploy.serving.app"):
        status, _, answer = _post(runtime, _body())
    assert (status, answer) == (500, {"error": INFERENCE_FAILED})
    assert "/srv/models/secret.bin" in caplog.text  # the operator of the server sees it
    assert _counted(runtime) == ({"500": 1}, {})


def test_nan_outputs_are_the_models_failure() -> None:
    def nan_model(columns: Mapping[str, np.ndarray]) -> Prediction:
        rows = len(columns["age"])
        return Prediction(np.array(["no"] * rows), np.full((rows, 2), np.nan), ("no", "yes"))

    runtime = _runtime(nan_model)
    status, _, answer = _post(runtime, _body())
    assert (status, answer) == (500, {"error": INFERENCE_FAILED})


def test_a_client_hanging_up_mid_upload_is_499_neither_an_error_nor_invalid() -> None:
    runtime = _runtime()
    messages = [_chunk(b'{"inputs": [', more=True), {"type": "http.disconnect"}]
    status, _, _ = asyncio.run(_call(runtime, messages))
    assert status == c.CLIENT_CLOSED_REQUEST_CODE
    assert _counted(runtime) == ({"499": 1}, {})


def test_a_stalled_upload_is_cut_off_with_408_and_the_connection_closed() -> None:
    runtime = _runtime()
    status, headers, answer = asyncio.run(_call(runtime, [_chunk(b'{"inp', more=True)]))
    assert status == 408
    assert answer == {"error": f"request body did not arrive within {STALL_TIMEOUT_S:g} s"}
    assert headers["connection"] == "close"
    assert _counted(runtime) == ({"408": 1}, {Reason.BODY_TIMEOUT.value: 1})


def test_a_body_streamed_past_the_limit_is_413_and_closes_the_connection() -> None:
    runtime = _runtime()
    limit = runtime.config.limits.max_body_bytes
    messages = [_chunk(b" " * limit, more=True), _chunk(b" ", more=True)]
    status, headers, _ = asyncio.run(_call(runtime, messages))
    assert (status, headers["connection"]) == (413, "close")
    assert _counted(runtime) == ({"413": 1}, {Reason.BODY_TOO_LARGE.value: 1})


def test_warm_up_hands_a_broken_image_to_on_broken_once() -> None:
    """`serve` passes a callback that writes the termination message and stops the server."""
    runtime = _runtime()  # its profile has no golden requests
    runtime.readiness = Readiness()  # warming, as at the start
    reasons: list[str] = []

    async def lifespan() -> list[Message]:
        incoming: asyncio.Queue[Message] = asyncio.Queue()
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        app = create_app(runtime, on_broken=reasons.append)
        await incoming.put({"type": "lifespan.startup"})
        running = asyncio.create_task(app({"type": "lifespan"}, incoming.get, send))
        async with asyncio.timeout(10):
            while not reasons:
                await asyncio.sleep(0.01)
        await incoming.put({"type": "lifespan.shutdown"})
        await running
        return sent

    sent = asyncio.run(lifespan())
    assert reasons == ["the profile has no golden requests"]
    assert runtime.readiness.state is State.FAILED
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_the_mirrored_copy_is_queued_only_once_the_answer_is_sent() -> None:
    runtime = _runtime()
    mirror = Mirror("http://127.0.0.1:9", 100, runtime.monitor)  # no lifespan: no workers
    runtime.mirror = mirror
    queued_while_answering: list[int] = []

    def on_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            queued_while_answering.append(mirror._queue.qsize())

    raw = json.dumps(_body()).encode()
    status, _, _ = asyncio.run(_call(runtime, [_chunk(raw)], on_send))
    assert status == 200
    assert queued_while_answering == [0]
    queued = mirror._queue.get_nowait()
    assert queued is not None
    assert queued.body == raw
