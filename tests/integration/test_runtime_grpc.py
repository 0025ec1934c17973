"""The V2 gRPC service of a real `modeldeploy serve` process on 127.0.0.1, driven by NVIDIA's
tritonclient: the same model, readiness, validation and metrics as its REST side.

Only tritonclient's stubs are imported here (never the runtime's own), as any client would.
"""

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from test_runtime import (
    IDENTITY_ENV,
    INFER,
    churn,
    copy_model,
    healthy,
    holdout,
    profile,
    python_model,
    scrape,
    value,
)
from tritonclient.utils import InferenceServerException

from modeldeploy import contract as c
from modeldeploy.devenv.collector import SPAN_KIND_SERVER, Collector, ExportedSpan
from modeldeploy.devenv.tools import free_port, otelcol_binary
from modeldeploy.profile_schema import FeatureProfile, Profile
from modeldeploy.serving.process import LOOPBACK, ServerProcess
from modeldeploy.serving.protocol import PREFERRED_DATATYPE, Reason, input_tensor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
__all__ = ["churn", "healthy", "holdout", "profile"]  # the fixtures, shared with test_runtime
MODEL = "churn"
ROWS = 32
_NUMPY = {"float": np.float64, "int": np.int64, "bool": np.bool_, "string": np.object_}


@pytest.fixture(scope="module")
def server(healthy: Path) -> Iterator[tuple[ServerProcess, int]]:
    grpc_port = free_port()
    with ServerProcess(healthy, env=IDENTITY_ENV, args=["--grpc-port", str(grpc_port)]) as process:
        process.wait_ready()
        yield process, grpc_port


@pytest.fixture(scope="module")
def client(server: tuple[ServerProcess, int]) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(f"{LOOPBACK}:{server[1]}") as grpc_client:
        yield grpc_client


@pytest.fixture(scope="module")
def complete_rows(profile: Profile, holdout: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ROWS holdout rows without a missing value (gRPC tensors have no null)."""
    missing = np.zeros(len(next(iter(holdout.values()))), dtype=bool)
    for column in holdout.values():
        missing |= np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in column])
    keep = np.flatnonzero(~missing)[:ROWS]
    assert len(keep) == ROWS
    return {f.name: holdout[f.name][keep] for f in profile.features}


def grpc_input(feature: FeatureProfile, values: np.ndarray) -> triton.InferInput:
    array = np.asarray(values.tolist(), dtype=_NUMPY[feature.type])
    tensor = triton.InferInput(feature.name, [len(array)], PREFERRED_DATATYPE[feature.type])
    tensor.set_data_from_numpy(array)
    return tensor


def grpc_inputs(profile: Profile, rows: dict[str, np.ndarray]) -> list[triton.InferInput]:
    return [grpc_input(f, rows[f.name]) for f in profile.features]


def test_health_readiness_and_metadata(
    server: tuple[ServerProcess, int], client: triton.InferenceServerClient, profile: Profile
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, IDENTITY_ENV[c.ENV_MODEL_VERSION])
    assert client.get_server_metadata().name == "modeldeploy"
    grpc_metadata = client.get_model_metadata(MODEL, as_json=True)
    rest_metadata = httpx.get(f"{server[0].url}/v2/models/{MODEL}", timeout=5).json()
    assert grpc_metadata["name"] == rest_metadata["name"] == MODEL
    assert grpc_metadata["versions"] == rest_metadata["versions"]
    assert grpc_metadata["platform"] == rest_metadata["platform"]
    for side in ("inputs", "outputs"):
        # JSON of protobuf writes int64 as strings
        grpc_tensors = [{**t, "shape": [int(d) for d in t["shape"]]} for t in grpc_metadata[side]]
        assert grpc_tensors == rest_metadata[side]
    assert [t["name"] for t in grpc_metadata["inputs"]] == [f.name for f in profile.features]


def test_infer_matches_rest_for_the_same_rows(
    server: tuple[ServerProcess, int],
    client: triton.InferenceServerClient,
    profile: Profile,
    complete_rows: dict[str, np.ndarray],
) -> None:
    assert any(f.type == "string" for f in profile.features)  # BYTES inputs are exercised
    assert any(f.type != "string" for f in profile.features)  # and numeric ones
    before = scrape(server[0].url)
    result = client.infer(MODEL, grpc_inputs(profile, complete_rows), request_id="grpc-rows")
    rest = httpx.post(
        server[0].url + INFER,
        json={
            "inputs": [input_tensor(f, complete_rows[f.name].tolist()) for f in profile.features]
        },
        timeout=5,
    ).json()
    expected = {o["name"]: o for o in rest["outputs"]}
    response = result.get_response()
    assert response.id == "grpc-rows"
    assert response.model_name == MODEL
    assert response.model_version == IDENTITY_ENV[c.ENV_MODEL_VERSION]
    labels = result.as_numpy("label")
    assert labels.shape == (ROWS,)
    assert [v.decode() for v in labels.tolist()] == expected["label"]["data"]
    np.testing.assert_allclose(result.as_numpy("confidence"), expected["confidence"]["data"])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == tuple(expected["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities.ravel(), expected["probabilities"]["data"])
    assert result.get_output("probabilities").parameters["classes"].string_param == (
        '["churn","stay"]'
    )
    only = client.infer(
        MODEL,
        grpc_inputs(profile, complete_rows),
        outputs=[triton.InferRequestedOutput("label")],
    )
    assert [o.name for o in only.get_response().outputs] == ["label"]
    after = scrape(server[0].url)
    # Both transports' requests are the model's: counted, and their rows binned for drift.
    assert (
        value(after, c.REQUESTS_TOTAL, code="200") - value(before, c.REQUESTS_TOTAL, code="200")
        == 3
    )
    binned = {"feature": profile.features[0].name}
    assert (
        value(after, c.FEATURE_BIN_TOTAL, **binned) - value(before, c.FEATURE_BIN_TOTAL, **binned)
        == 3 * ROWS
    )


def _expect_error(call: Callable[[], Any], status: str, words: str) -> None:
    with pytest.raises(InferenceServerException) as raised:
        call()
    assert raised.value.status() == f"StatusCode.{status}"
    assert words in raised.value.message()


def test_errors_have_their_status_and_are_counted(
    server: tuple[ServerProcess, int],
    client: triton.InferenceServerClient,
    profile: Profile,
    complete_rows: dict[str, np.ndarray],
) -> None:
    before = scrape(server[0].url)
    first = profile.features[0]

    unknown = triton.InferInput("no_such_feature", [ROWS], "FP64")
    unknown.set_data_from_numpy(np.zeros(ROWS))
    _expect_error(
        lambda: client.infer(MODEL, [*grpc_inputs(profile, complete_rows), unknown]),
        "INVALID_ARGUMENT",
        "unknown input 'no_such_feature'",
    )

    wide = triton.InferInput(first.name, [ROWS // 2, 2], PREFERRED_DATATYPE[first.type])
    wide.set_data_from_numpy(
        np.asarray(complete_rows[first.name].tolist(), dtype=_NUMPY[first.type]).reshape(-1, 2)
    )
    rest = [grpc_input(f, complete_rows[f.name]) for f in profile.features[1:]]
    _expect_error(
        lambda: client.infer(MODEL, [wide, *rest]),
        "INVALID_ARGUMENT",
        "must be [batch] or [batch, 1]",
    )

    _expect_error(
        lambda: client.infer("no-such-model", grpc_inputs(profile, complete_rows)),
        "NOT_FOUND",
        "unknown model 'no-such-model'",
    )
    _expect_error(lambda: client.get_model_metadata("no-such-model"), "NOT_FOUND", "unknown")

    after = scrape(server[0].url)
    for reason, count in [
        (Reason.UNKNOWN_INPUT, 1),
        (Reason.BAD_SHAPE, 1),
        (Reason.UNKNOWN_MODEL, 1),  # the metadata lookup is no inference request
    ]:
        counted = value(after, c.INVALID_REQUESTS_TOTAL, reason=reason) - value(
            before, c.INVALID_REQUESTS_TOTAL, reason=reason
        )
        assert counted == count, reason
    for code, count in [("400", 2), ("404", 1)]:
        counted = value(after, c.REQUESTS_TOTAL, code=code) - value(
            before, c.REQUESTS_TOTAL, code=code
        )
        assert counted == count, code


FAILING_ROWS = 17
FAILING_MODEL = """
from pathlib import Path

import joblib

from modeldeploy.serving.model import SklearnModel

_model = SklearnModel(joblib.load(Path(__file__).with_name("model.joblib")), {features!r})


def predict(columns):
    if len(next(iter(columns.values()))) == {rows}:
        raise RuntimeError("a batch this model cannot take")
    return _model.predict(columns)
"""


def test_a_model_failure_is_internal_and_counted_as_its_500(
    healthy: Path, profile: Profile, complete_rows: dict[str, np.ndarray], tmp_path: Path
) -> None:
    model_dir = copy_model(healthy, tmp_path / "failing")
    source = FAILING_MODEL.format(features=[f.name for f in profile.features], rows=FAILING_ROWS)
    python_model(model_dir, "failing_model", source)
    grpc_port = free_port()
    with (
        ServerProcess(model_dir, env=IDENTITY_ENV, args=["--grpc-port", str(grpc_port)]) as server,
        triton.InferenceServerClient(f"{LOOPBACK}:{grpc_port}") as grpc_client,
    ):
        server.wait_ready()
        rows = {name: column[:FAILING_ROWS] for name, column in complete_rows.items()}
        _expect_error(
            lambda: grpc_client.infer(MODEL, grpc_inputs(profile, rows)),
            "INTERNAL",
            "inference failed",
        )
        samples = scrape(server.url)
        assert value(samples, c.REQUESTS_TOTAL, code="500") == 1
        assert value(samples, c.INVALID_REQUESTS_TOTAL) == 0
        assert "a batch this model cannot take" in server.output()  # logged, never sent


def test_not_ready_is_unavailable(
    healthy: Path, profile: Profile, complete_rows: dict[str, np.ndarray]
) -> None:
    """A server whose golden requests stay too slow stays up, not ready: UNAVAILABLE."""
    grpc_port = free_port()
    env = {**IDENTITY_ENV, c.ENV_WARMUP_MAX_LATENCY_MS: "0.000001"}
    args = ["--grpc-port", str(grpc_port)]
    with (
        ServerProcess(healthy, env=env, args=args) as process,
        triton.InferenceServerClient(f"{LOOPBACK}:{grpc_port}") as grpc_client,
    ):
        process.wait_live()
        assert grpc_client.is_server_live()
        assert not grpc_client.is_server_ready()
        assert not grpc_client.is_model_ready(MODEL)
        _expect_error(
            lambda: grpc_client.infer(MODEL, grpc_inputs(profile, complete_rows)),
            "UNAVAILABLE",
            "is not ready",
        )


def test_grpc_port_taken_fails_the_start(healthy: Path) -> None:
    with ServerProcess(healthy, env=IDENTITY_ENV) as taken:
        taken.wait_live()
        port = taken.port  # REST holds it: the gRPC server cannot bind there
        with ServerProcess(healthy, env=IDENTITY_ENV, args=["--grpc-port", str(port)]) as second:
            assert second.wait_exited() == 3  # uvicorn's exit when its startup fails
            assert f"Failed to bind to address {LOOPBACK}:{port}" in second.output()


STAGES = {"decode", "validate", "preprocess", "predict", "encode"}


def test_model_infer_is_a_span_continuing_the_callers_trace(
    healthy: Path,
    profile: Profile,
    complete_rows: dict[str, np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """gRPC metadata carries W3C trace context as HTTP headers do: the server span continues
    it, with the inference stages as children; a refusal's span carries its code and reason."""
    grpc_port = free_port()
    with Collector(otelcol_binary(), tmp_path_factory.mktemp("otelcol")) as collector:
        env = {
            **IDENTITY_ENV,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s
        }
        with (
            ServerProcess(healthy, env=env, args=["--grpc-port", str(grpc_port)]) as server,
            triton.InferenceServerClient(f"{LOOPBACK}:{grpc_port}") as grpc_client,
        ):
            server.wait_ready()
            spans_of: dict[str, tuple[str, str]] = {}
            for case in ("ok", "invalid"):
                trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
                spans_of[case] = trace_id, caller
                headers = {"traceparent": f"00-{trace_id}-{caller}-01"}
                inputs = grpc_inputs(profile, complete_rows)
                if case == "ok":
                    grpc_client.infer(MODEL, inputs, headers=headers)
                else:
                    with pytest.raises(InferenceServerException):
                        grpc_client.infer(MODEL, inputs[1:], headers=headers)

            def request_span(trace_id: str, stages: set[str]) -> Callable[..., list[Any]]:
                def found(spans: list[ExportedSpan]) -> list[Any]:
                    mine = [s for s in spans if s.trace_id == trace_id]
                    server_spans = [s for s in mine if s.kind == SPAN_KIND_SERVER]
                    done = server_spans and {s.name for s in mine} >= stages
                    return [(server_spans[0], mine)] if done else []

                return found

            trace_id, caller = spans_of["ok"]
            [(request, spans)] = collector.wait_for(request_span(trace_id, STAGES))
            assert request.name == "inference.GRPCInferenceService/ModelInfer"
            assert request.parent_span_id == caller
            assert request.attributes["rpc.system"] == "grpc"
            assert request.attributes["rpc.method"] == "ModelInfer"
            assert request.attributes["rpc.grpc.status_code"] == 0
            assert request.attributes["modeldeploy.outcome"] == "ok"
            assert request.attributes["modeldeploy.revision"] == IDENTITY_ENV[c.ENV_REVISION]
            assert request.attributes["modeldeploy.rows"] == ROWS
            children = {s.name for s in spans if s.parent_span_id == request.span_id}
            assert children == STAGES

            trace_id, caller = spans_of["invalid"]
            [(refused, _)] = collector.wait_for(request_span(trace_id, {"decode", "validate"}))
            assert refused.parent_span_id == caller
            assert refused.attributes["rpc.grpc.status_code"] == 3  # INVALID_ARGUMENT
            assert refused.attributes["modeldeploy.outcome"] == "invalid"
            assert refused.attributes["modeldeploy.reason"] == Reason.MISSING_INPUT
