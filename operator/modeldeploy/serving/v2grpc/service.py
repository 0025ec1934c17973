"""`inference.GRPCInferenceService` on the runtime: the same model, readiness, validation,
metrics and drift bins as REST, through the same inference path (`app.InferencePath`).

It runs on uvicorn's event loop (grpc.aio), started and stopped by the app's lifespan, so
both transports share one process, one inference pool and one readiness. Answers carry the
HTTP status REST would give, mapped to gRPC codes; metrics count that status, so the
operator's analysis reads gRPC traffic exactly as REST's.
"""

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from modeldeploy import tracing
from modeldeploy.contract import CLIENT_CLOSED_REQUEST_CODE
from modeldeploy.serving.app import (
    SERVER_NAME,
    InferencePath,
    Service,
    model_metadata,
    outcome,
    package_version,
)
from modeldeploy.serving.pipeline import Inference
from modeldeploy.serving.protocol import InvalidRequest
from modeldeploy.serving.v2grpc import convert
from modeldeploy.serving.v2grpc import grpc_predict_v2_pb2 as pb
from modeldeploy.serving.v2grpc import grpc_predict_v2_pb2_grpc as pb_grpc

SERVICE_NAME = "inference.GRPCInferenceService"
# In-flight calls get this long to finish when the server stops (uvicorn has by then let
# REST's finish); later ones are refused.
STOP_GRACE_S = 5.0
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
    CLIENT_CLOSED_REQUEST_CODE: grpc.StatusCode.CANCELLED,
}


def status_code(status: int) -> grpc.StatusCode:
    """The gRPC code of an inference answer's HTTP status."""
    if status < 400:
        return grpc.StatusCode.OK
    return _CODES.get(
        status, grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL
    )


def trace_headers(metadata: Sequence[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """A call's text metadata, where W3C trace context travels as it does in HTTP headers."""
    return {k: v for k, v in metadata or () if isinstance(v, str)}


class InferenceServicer:
    """The six RPCs of the V2 protocol that a single-model server answers."""

    def __init__(self, path: InferencePath) -> None:
        self.path = path
        self.runtime = path.runtime

    async def _check_model(self, name: str, version: str, context: Any) -> None:
        try:
            self.path.check_model(name, version or None)
        except InvalidRequest as err:
            await context.abort(status_code(err.status), err.message)

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Any
    ) -> pb.ServerLiveResponse:
        # REST's /v2/health/live rule (serving/golden.py): one process, one inference pool.
        return pb.ServerLiveResponse(live=self.runtime.golden.stalled() is None)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Any
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.runtime.readiness.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self.runtime.readiness.ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=package_version())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        await self._check_model(request.name, request.version, context)
        return convert.model_metadata(model_metadata(self.runtime))

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        identity = self.runtime.identity
        attributes = {
            "rpc.system": "grpc",
            "rpc.service": SERVICE_NAME,
            "rpc.method": "ModelInfer",
            "modeldeploy.model": identity.model,
            "modeldeploy.version": identity.version,
            "modeldeploy.revision": identity.revision,
        }

        async def receive() -> pb.ModelInferRequest:
            return request

        def encode(inference: Inference) -> pb.ModelInferResponse:
            return convert.infer_response(
                identity.model, identity.version, inference.request.id, inference.outputs
            )

        headers = trace_headers(context.invocation_metadata())
        with tracing.span(f"{SERVICE_NAME}/ModelInfer", attributes, headers=headers) as span:
            answer = await self.path.answer(
                request.model_name,
                request.model_version or None,
                receive,
                convert.request_body,
                encode,
                span=span,
            )
            code = status_code(answer.status)
            finished: dict[str, str | int] = {
                "rpc.grpc.status_code": code.value[0],
                "modeldeploy.outcome": outcome(answer.status),
            }
            if answer.reason is not None:
                finished["modeldeploy.reason"] = answer.reason.value
            span.set(finished)
        if answer.result is not None:
            return answer.result
        context.set_code(code)
        context.set_details(answer.message)
        return pb.ModelInferResponse()


def grpc_service(address: str, max_message_bytes: int) -> Service:
    """The gRPC server on `address` (host:port), for `create_app(services=...)`. Messages
    are bounded like REST's bodies (model.yaml limits.max_body_bytes)."""

    @contextlib.asynccontextmanager
    async def serving(path: InferencePath) -> AsyncIterator[None]:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                # Without it a second server binds a taken port and the two share its calls.
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(path), server)
        server.add_insecure_port(address)  # RuntimeError when it cannot bind: start fails
        await server.start()
        try:
            yield
        finally:
            await server.stop(STOP_GRACE_S)

    return serving
