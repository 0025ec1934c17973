"""The Starlette application: V2 REST endpoints, /metrics, readiness after warm-up, and the
inference path that REST and the gRPC service (`v2grpc`, run by the lifespan) share.

Inference (JSON decoding, validation, the model, encoding) runs on a bounded pool of its
own threads, so the event loop stays free for health, readiness and /metrics however large
the bodies or slow the model. Client faults are 4xx with a short message and a reason; a
client hanging up is 499; anything failing past validation is a 500 "inference failed",
whose exception is logged here and never sent to the client.

With tracing on (`modeldeploy.tracing`), each inference is a server span continuing the
caller's W3C trace context, with the stages decode, validate, preprocess, predict and encode
as its children (run in the inference thread, under the request's context).
"""

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from modeldeploy import tracing
from modeldeploy.contract import CLIENT_CLOSED_REQUEST_CODE, SHADOW_HEADER
from modeldeploy.profile_schema import ClassificationOutput, Profile
from modeldeploy.serving import binary
from modeldeploy.serving.attribution_sampler import AttributionSampler
from modeldeploy.serving.config import ModelConfig, ServingConfig
from modeldeploy.serving.golden import GoldenReplays
from modeldeploy.serving.labels import LabelOutcomes, Receipt, parse_labels
from modeldeploy.serving.limits import ServerLimits
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import (
    CONFIDENCE_OUTPUT,
    FALLBACK_OUTPUT,
    LABEL_OUTPUT,
    PROBABILITIES_OUTPUT,
    VALUE_OUTPUT,
    Inference,
    InferencePipeline,
    ModelError,
)
from modeldeploy.serving.predlog import PredictionLog
from modeldeploy.serving.protocol import (
    PREFERRED_DATATYPE,
    InvalidRequest,
    Reason,
    decode_json,
    encode_json,
)
from modeldeploy.serving.shadow import Mirror, MirroredRequest
from modeldeploy.serving.upstream_health import UpstreamHealth
from modeldeploy.serving.warmup import Readiness, warm_up

log = logging.getLogger(__name__)
SERVER_NAME = "modeldeploy"
INFERENCE_FAILED = "inference failed"
INFER_ROUTE = "/v2/models/{model}/infer"
INFER_VERSION_ROUTE = "/v2/models/{model}/versions/{version}/infer"
B = TypeVar("B")  # a request as its transport received it
R = TypeVar("R")  # an answer as its transport sends it


@dataclass
class Runtime:
    """Everything one model server holds; built by `server.assemble_runtime`."""

    identity: Identity
    config: ServingConfig
    profile: Profile
    pipeline: InferencePipeline
    monitor: Monitor
    max_latency_ms: float
    mirror: Mirror | None = None
    prediction_log: PredictionLog | None = None
    readiness: Readiness = field(default_factory=Readiness)
    limits: ServerLimits = field(default_factory=ServerLimits)
    labels: LabelOutcomes | None = None  # None: made from the above (`__post_init__`)
    golden: GoldenReplays = field(default_factory=GoldenReplays)
    attribution_sampler: AttributionSampler | None = None  # None: explain.sample_rate 0
    upstream: UpstreamHealth | None = None  # a proxy's upstream server (upstream_health.py)

    def __post_init__(self) -> None:
        if self.labels is None:
            self.labels = LabelOutcomes(
                self.profile,
                self.identity.values(),
                self.monitor.registry,
                max_rows=self.config.limits.label_memory_rows,
                max_abs_error=self.config.labels.max_abs_error,
                enabled=self.monitor.enabled,
            )

    @property
    def label_outcomes(self) -> LabelOutcomes:
        assert self.labels is not None  # __post_init__
        return self.labels


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        encode_json(payload), status_code=status, media_type="application/json", headers=headers
    )


# Refusals that leave the body unread: the connection cannot carry another request.
_UNREAD_BODY_STATUSES = frozenset({408, 413})


def _error(message: str, status: int) -> Response:
    headers = {"connection": "close"} if status in _UNREAD_BODY_STATUSES else None
    return _json({"error": message}, status, headers)


def _too_large(limit: int) -> InvalidRequest:
    message = f"request body exceeds the limit of {limit} bytes"
    return InvalidRequest(Reason.BODY_TOO_LARGE, message, status=413)


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` (declared or streamed) or
    once it has taken longer than `timeout_s` to arrive."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError as err:
        message = f"request body did not arrive within {timeout_s:g} s"
        raise InvalidRequest(Reason.BODY_TIMEOUT, message, status=408) from err
    return b"".join(chunks)


NO_PROBABILITIES = (
    "labels only, no class probabilities: no confidence or probabilities outputs, no "
    "prediction_confidence metrics or confidence drift, no low-confidence fallback"
)
# How a framework's classifier would answer them, where the model file decides it.
PROBABILITIES_HINT = {"mlflow": 'log the MLflow model with pyfunc_predict_fn="predict_proba"'}


def missing_probabilities(config: ServingConfig, profile: Profile) -> str | None:
    """What a classifier without probabilities cannot do (model metadata, start log)."""
    output = profile.output
    if not isinstance(output, ClassificationOutput) or output.confidence is not None:
        return None
    # A proxy's upstream has no framework here: what it answers is its own server's business.
    hint = PROBABILITIES_HINT.get(config.framework) if isinstance(config, ModelConfig) else None
    return NO_PROBABILITIES + (f" ({hint} for them)" if hint else "")


def model_metadata(runtime: Runtime) -> dict[str, Any]:
    inputs = [
        {"name": f.name, "datatype": PREFERRED_DATATYPE[f.type], "shape": [-1]}
        for f in runtime.profile.features
    ]
    output = runtime.profile.output
    if isinstance(output, ClassificationOutput):
        label_type = "BYTES" if any(isinstance(c, str) for c in output.classes) else "INT64"
        outputs = [{"name": LABEL_OUTPUT, "datatype": label_type, "shape": [-1]}]
        if output.confidence is not None:
            outputs.append({"name": CONFIDENCE_OUTPUT, "datatype": "FP64", "shape": [-1]})
            outputs.append(
                {
                    "name": PROBABILITIES_OUTPUT,
                    "datatype": "FP64",
                    "shape": [-1, len(output.classes)],
                }
            )
    else:
        outputs = [{"name": VALUE_OUTPUT, "datatype": "FP64", "shape": [-1]}]
    if runtime.pipeline.fallback is not None:
        outputs.append({"name": FALLBACK_OUTPUT, "datatype": "BOOL", "shape": [-1]})
    parameters = {"revision": runtime.identity.revision}
    missing = missing_probabilities(runtime.config, runtime.profile)
    if missing is not None:
        parameters["probabilities"] = missing
    return {
        "name": runtime.identity.model,
        "versions": [runtime.identity.version],
        "platform": runtime.config.platform,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": parameters,
    }


def outcome(status: int) -> str:
    """What became of a request, in a word (the span attribute `modeldeploy.outcome`)."""
    if status < 400:
        return "ok"
    if status == CLIENT_CLOSED_REQUEST_CODE:
        return "disconnected"
    if status == 503:
        return "not_ready"
    return "invalid" if status < 500 else "error"


def request_attributes(identity: Identity, route: str) -> dict[str, str]:
    """An inference span's attributes known before it runs (HTTP semantic conventions)."""
    return {
        "http.request.method": "POST",
        "http.route": route,
        "modeldeploy.model": identity.model,
        "modeldeploy.version": identity.version,
        "modeldeploy.revision": identity.revision,
    }


def response_attributes(status: int, reason: str | None) -> dict[str, str | int]:
    """An inference span's attributes once answered; `reason` of a refused request."""
    attributes: dict[str, str | int] = {
        "http.response.status_code": status,
        "modeldeploy.outcome": outcome(status),
    }
    if status >= 500:
        attributes["error.type"] = str(status)
    if reason is not None:
        attributes["modeldeploy.reason"] = reason
    return attributes


@dataclass(frozen=True)
class Answer(Generic[R]):
    """What became of one inference request, whichever transport carried it: an HTTP status
    (REST sends it, gRPC maps it to its codes; metrics count it), with the transport's
    encoded result when it is 200, else the client's message and the reason of a refusal."""

    status: int
    result: R | None = None
    message: str = ""
    reason: Reason | None = None


class InferencePath:
    """The one inference path of REST and gRPC: the model check, readiness, decoding and
    validation, the model, encoding, metrics, drift bins and the prediction log."""

    def __init__(self, runtime: Runtime, inference_pool: ThreadPoolExecutor) -> None:
        self.runtime = runtime
        self._inference_pool = inference_pool

    def check_model(self, model: str, version: str | None) -> None:
        identity = self.runtime.identity
        version = version or identity.version
        if model != identity.model or version != identity.version:
            raise InvalidRequest(
                Reason.UNKNOWN_MODEL,
                f"unknown model {model!r} version {version!r}; this server serves "
                f"{identity.model!r} version {identity.version!r}",
                status=404,
            )

    async def answer(
        self,
        model: str,
        version: str | None,
        receive: Callable[[], Awaitable[B]],
        decode: Callable[[B], Any],
        encode: Callable[[Inference], R],
        *,
        span: tracing.Span,
    ) -> Answer[R]:
        """Checks the model and readiness, then `receive`s the request; `decode` (to a V2
        request body as plain data) and `encode` (the outputs, to the transport's answer)
        run on an inference thread. Never raises: a refusal or failure is its Answer,
        counted, and a failure marks `span` (the request's)."""
        start = time.perf_counter()
        monitor = self.runtime.monitor
        try:
            answer = await self._answer(model, version, receive, decode, encode)
        except InvalidRequest as err:
            monitor.observe_invalid(err.reason)
            answer = Answer(err.status, message=err.message, reason=err.reason)
        except ClientDisconnect:  # nobody reads this answer; it is counted, not an error
            log.info("client disconnected before its request body arrived")
            answer = Answer(CLIENT_CLOSED_REQUEST_CODE, message="client disconnected")
        except Exception as err:  # the model or preprocessing failed (ModelError), or a bug
            log.exception(INFERENCE_FAILED)
            span.fail(err)
            answer = Answer(500, message=INFERENCE_FAILED)
        monitor.observe_request(answer.status, time.perf_counter() - start)
        return answer

    async def _answer(
        self,
        model: str,
        version: str | None,
        receive: Callable[[], Awaitable[B]],
        decode: Callable[[B], Any],
        encode: Callable[[Inference], R],
    ) -> Answer[R]:
        runtime = self.runtime
        self.check_model(model, version)
        if not runtime.readiness.ready:
            message = f"model {runtime.identity.model!r} is not ready: {runtime.readiness.reason}"
            return Answer(503, message=message)
        received = await receive()
        loop = asyncio.get_running_loop()
        # run_in_executor does not carry context variables: the request's span would not be
        # the current one in the inference thread, and the stages would not be traced.
        context = contextvars.copy_context()
        inference, result = await loop.run_in_executor(
            self._inference_pool, context.run, self._infer, received, decode, encode
        )
        if runtime.prediction_log is not None:  # written from the event loop only: one writer
            runtime.prediction_log.maybe_record(
                inference.request.id, inference.request.inputs, inference.outputs
            )
        if runtime.attribution_sampler is not None:
            runtime.attribution_sampler.offer(inference)
        return Answer(200, result)

    def _infer(
        self, received: B, decode: Callable[[B], Any], encode: Callable[[Inference], R]
    ) -> tuple[Inference, R]:
        """Decodes, validates, infers, encodes and counts (on an inference thread)."""
        runtime = self.runtime
        with tracing.stage("decode"):
            body = decode(received)
        inference = runtime.pipeline.infer(body)
        if inference.request.id is None:  # labels need an id to name the prediction by
            inference = replace(inference, request=replace(inference.request, id=uuid.uuid4().hex))
        tracing.annotate({"modeldeploy.rows": inference.request.rows})
        with tracing.stage("encode"):
            result = encode(inference)
        runtime.monitor.observe_features(inference.features)
        prediction = inference.prediction
        runtime.monitor.observe_predictions(prediction.values, prediction.confidence)
        fallback = inference.fallback
        runtime.monitor.observe_answered(
            inference.request.rows, 0 if fallback is None else int(fallback.sum())
        )
        assert inference.request.id is not None
        runtime.label_outcomes.remember(inference.request.id, prediction.values)
        return inference, result

    async def labels(
        self, model: str, version: str | None, receive: Callable[[], Awaitable[bytes]]
    ) -> Receipt:
        """Scores a label request's labels (`labels.py`) on an inference thread; raises
        InvalidRequest, counted apart from inference (`invalid_label_requests_total`)."""
        outcomes = self.runtime.label_outcomes
        try:
            self.check_model(model, version)
            raw = await receive()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._inference_pool, self._label, raw)
        except InvalidRequest as err:
            outcomes.observe_invalid(err.reason.value)
            raise

    def _label(self, raw: bytes) -> Receipt:
        outcomes = self.runtime.label_outcomes
        entries = parse_labels(
            decode_json(raw),
            classification=outcomes.classification,
            max_labels=self.runtime.config.limits.label_memory_rows,
        )
        return outcomes.receive(entries)


class _Endpoints:
    """The REST request handlers of one runtime."""

    def __init__(self, path: InferencePath) -> None:
        self.path = path
        self.runtime = path.runtime

    def check_model(self, request: Request) -> None:
        self.path.check_model(request.path_params["model"], request.path_params.get("version"))

    async def server_metadata(self, request: Request) -> Response:
        extensions = ["binary_tensor_data"]  # binary.py
        return _json({"name": SERVER_NAME, "version": package_version(), "extensions": extensions})

    async def live(self, request: Request) -> Response:
        stalled = self.runtime.golden.stalled()  # the rule: serving/golden.py
        if stalled is not None:
            return _json({"live": False, "reason": stalled}, 503)
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        readiness = self.runtime.readiness
        payload = {"ready": readiness.ready, "state": readiness.state, "reason": readiness.reason}
        return _json(payload, 200 if readiness.ready else 503)

    async def model_ready(self, request: Request) -> Response:
        try:
            self.check_model(request)
        except InvalidRequest as err:
            return _error(err.message, err.status)
        return await self.ready(request)

    async def metadata(self, request: Request) -> Response:
        try:
            self.check_model(request)
        except InvalidRequest as err:
            return _error(err.message, err.status)
        return _json(model_metadata(self.runtime))

    async def metrics(self, request: Request) -> Response:
        body, content_type = self.runtime.monitor.exposition()
        return Response(body, media_type=content_type)

    async def infer(self, request: Request) -> Response:
        runtime = self.runtime
        route = INFER_VERSION_ROUTE if "version" in request.path_params else INFER_ROUTE
        attributes = request_attributes(runtime.identity, route)

        header_length = request.headers.get(binary.HEADER_LENGTH)
        # What the request asks its outputs to be sent as: known once it is decoded, used
        # when they are encoded (both on the same inference thread, in that order).
        asked: list[binary.OutputEncoding] = []
        mirrored: list[MirroredRequest] = []  # the copy taken in the request's trace context

        async def receive() -> bytes:
            raw = await _read_body(
                request, runtime.config.limits.max_body_bytes, runtime.limits.body_timeout_s
            )
            if runtime.mirror is not None and SHADOW_HEADER not in request.headers:
                copy = runtime.mirror.copy(
                    request.url.path, raw, binary.framing_headers(header_length)
                )
                if copy is not None:
                    mirrored.append(copy)
            return raw

        def decode(raw: bytes) -> Any:
            body = binary.decode_request(raw, header_length)
            asked.append(binary.output_encoding(body))
            return body

        with tracing.span(f"POST {route}", attributes, headers=request.headers) as span:
            answer = await self.path.answer(
                request.path_params["model"],
                request.path_params.get("version"),
                receive,
                decode,
                lambda inference: self._encode(inference, asked[0]),
                span=span,
            )
            span.set(response_attributes(answer.status, answer.reason and answer.reason.value))
        response = (
            answer.result if answer.result is not None else _error(answer.message, answer.status)
        )
        if runtime.mirror is not None and mirrored:
            response.background = _offer_when_sent(runtime.mirror, mirrored[0])
        return response

    async def labels(self, request: Request) -> Response:
        """Delayed labels of earlier predictions; not inference requests, so never in
        `requests_total`."""
        runtime = self.runtime

        async def receive() -> bytes:
            limits = runtime.config.limits
            return await _read_body(request, limits.max_body_bytes, runtime.limits.body_timeout_s)

        try:
            receipt = await self.path.labels(
                request.path_params["model"], request.path_params.get("version"), receive
            )
        except InvalidRequest as err:
            return _error(err.message, err.status)
        except ClientDisconnect:
            return _error("client disconnected", CLIENT_CLOSED_REQUEST_CODE)
        return _json(receipt.payload())

    def _encode(self, inference: Inference, encoding: binary.OutputEncoding) -> Response:
        identity = self.runtime.identity
        payload = {
            "model_name": identity.model,
            "model_version": identity.version,
            "id": inference.request.id,
            "outputs": inference.outputs,
        }
        try:
            encoded = binary.encode_response(payload, encoding)
        except ValueError as err:
            raise ModelError("the model produced NaN or infinite outputs") from err
        return Response(encoded.body, media_type=encoded.content_type, headers=encoded.headers)


def _offer_when_sent(mirror: Mirror, copy: MirroredRequest) -> BackgroundTask:
    """Starlette runs a response's background task once its body is sent: the answer never
    waits for the mirror. A coroutine, so that queueing takes no thread of its own."""

    async def offer() -> None:
        mirror.offer(copy)

    return BackgroundTask(offer)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(f"{exc.detail}: {request.method} {request.url.path}", exc.status_code)


OnBroken = Callable[[str], None]
"""Called with the reason when warm-up finds the image broken (`Readiness.broken`)."""
Service = Callable[[InferencePath], AbstractAsyncContextManager[None]]
"""Another transport on the same inference path (the gRPC service), run by the lifespan."""


def _lifespan(
    path: InferencePath,
    inference_pool: ThreadPoolExecutor,
    on_broken: OnBroken | None,
    services: Sequence[Service],
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    runtime = path.runtime

    async def warm() -> None:
        if runtime.upstream is not None:
            await runtime.upstream.wait_ready(runtime.readiness)
        await warm_up(
            runtime.pipeline,
            runtime.profile.golden,
            runtime.readiness,
            max_latency_ms=runtime.max_latency_ms,
            rounds=runtime.config.warmup.rounds,
        )
        if runtime.readiness.broken and on_broken is not None:
            on_broken(runtime.readiness.reason)
        if not runtime.readiness.ready:
            return
        golden = (runtime.pipeline, runtime.profile.golden, runtime.monitor, runtime.readiness)
        watches = [runtime.golden.run(*golden, inference_pool)]
        if runtime.upstream is not None:
            watches.append(runtime.upstream.watch(*golden, inference_pool))
        await asyncio.gather(*watches)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if runtime.mirror is not None:
            runtime.mirror.start()
        warming = asyncio.create_task(warm())
        try:
            async with contextlib.AsyncExitStack() as running:
                for service in services:
                    await running.enter_async_context(service(path))
                yield
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            if runtime.mirror is not None:
                await asyncio.to_thread(runtime.mirror.stop)  # joins its workers
            inference_pool.shutdown(wait=False, cancel_futures=True)
            if runtime.prediction_log is not None:
                runtime.prediction_log.close()
            if runtime.attribution_sampler is not None:
                runtime.attribution_sampler.close()

    return lifespan


def create_app(
    runtime: Runtime, on_broken: OnBroken | None = None, services: Sequence[Service] = ()
) -> Starlette:
    """The runtime's app; without `on_broken` a broken image stays up, answering 503.
    `services` start before it serves and stop after it (a failed start stops it)."""
    inference_pool = ThreadPoolExecutor(
        max_workers=runtime.limits.inference_threads, thread_name_prefix="inference"
    )
    path = InferencePath(runtime, inference_pool)
    api = _Endpoints(path)
    routes = [
        Route("/v2", api.server_metadata, methods=["GET"]),
        Route("/v2/health/live", api.live, methods=["GET"]),
        Route("/v2/health/ready", api.ready, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ]
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        routes += [
            Route(base, api.metadata, methods=["GET"]),
            Route(base + "/ready", api.model_ready, methods=["GET"]),
            Route(base + "/infer", api.infer, methods=["POST"]),
            Route(base + "/labels", api.labels, methods=["POST"]),
        ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
        lifespan=_lifespan(path, inference_pool, on_broken, services),
    )


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modeldeploy")
    except PackageNotFoundError:
        return "unknown"
