"""`modeldeploy proxy` in front of a real MLServer (Seldon's, from PyPI: hack/mlserver-env.sh)
serving the churn example's joblib file, all on 127.0.0.1, driven by NVIDIA's tritonclient
over HTTP (JSON and binary tensor data) and gRPC: health, metadata, inference equal to
MLServer's own answer, refusals that are the client's and never the model's, the metrics
contract with its drift bins, and an upstream killed mid-test: readiness fails, and requests
still sent through are the model's errors."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from test_runtime import (  # noqa: F401  (fixtures)
    IDENTITY_ENV,
    INFER,
    churn,
    healthy,
    holdout,
    profile,
    scrape,
    value,
    wait_for_fast,
)
from test_runtime_grpc import complete_rows, grpc_inputs  # noqa: F401  (fixture)
from test_runtime_tritonclient import OUTPUTS, _inputs, _outputs, _rows
from tritonclient.utils import InferenceServerException

from modeldeploy import contract as c
from modeldeploy.devenv.mlserver import MLServerProcess, mlserver_venv
from modeldeploy.devenv.tools import free_port
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.bins import counts, feature_bins
from modeldeploy.serving.process import LOOPBACK, ServerProcess
from modeldeploy.serving.protocol import PREFERRED_DATATYPE, Reason

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "churn"
VERSION = IDENTITY_ENV[c.ENV_MODEL_VERSION]
START_S = 180.0  # MLServer imports pandas, scikit-learn and its own stack: ~40 s on a busy box


@pytest.fixture(scope="module")
def mlserver(healthy: Path) -> Iterator[MLServerProcess]:  # noqa: F811
    try:
        mlserver_venv()
    except FileNotFoundError as err:
        pytest.fail(f"{err} (make setup does)")
    with MLServerProcess(healthy, name=MODEL) as process:
        process.wait_ready(START_S)
        yield process


# MLServer answers a golden request in ~0.4 s on a busy box: past the 0.5 s default bound,
# warm-up would leave the proxy unready, which these tests are not about.
PROXY_ENV = {**IDENTITY_ENV, c.ENV_WARMUP_MAX_LATENCY_MS: "10000"}


def _proxy(healthy: Path, upstream: str, args: list[str]) -> ServerProcess:  # noqa: F811
    return ServerProcess.proxy(
        healthy / "profile.json",
        upstream,
        MODEL,
        env=PROXY_ENV,
        args=["--log-level", "warning", *args],
    )


@pytest.fixture(scope="module")
def proxy_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy-log") / "predictions.jsonl"


@pytest.fixture(scope="module")
def proxy(
    healthy: Path,  # noqa: F811
    mlserver: MLServerProcess,
    proxy_log: Path,
) -> Iterator[tuple[ServerProcess, int]]:
    grpc_port = free_port()
    log_args = ["--prediction-log", str(proxy_log), "--log-sample-rate", "1"]
    with _proxy(healthy, mlserver.url, ["--grpc-port", str(grpc_port), *log_args]) as process:
        process.wait_ready(START_S)
        yield process, grpc_port


@pytest.fixture(scope="module")
def http_client(proxy: tuple[ServerProcess, int]) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(f"{LOOPBACK}:{proxy[0].port}") as client:
        yield client


@pytest.fixture(scope="module")
def grpc_client(
    proxy: tuple[ServerProcess, int],
) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(f"{LOOPBACK}:{proxy[1]}") as client:
        yield client


def mlserver_answer(
    mlserver: MLServerProcess,
    profile: Profile,  # noqa: F811
    columns: dict[str, np.ndarray],
) -> dict[str, list[Any]]:
    """MLServer's own answer to the rows, asked as its docs say (a pandas request)."""
    inputs = []
    for feature in profile.features:
        data = [
            None if isinstance(v, float) and np.isnan(v) else v
            for v in columns[feature.name].tolist()
        ]
        tensor = {
            "name": feature.name,
            "shape": [len(data)],
            "datatype": PREFERRED_DATATYPE[feature.type],
            "data": data,
        }
        if feature.type == "string":
            tensor["parameters"] = {"content_type": "str"}
        inputs.append(tensor)
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": inputs,
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    answer = httpx.post(f"{mlserver.url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return {o["name"]: o["data"] for o in answer.json()["outputs"]}


# --- health and metadata ----------------------------------------------------------------------


def test_health_and_metadata_over_http_and_grpc(
    http_client: triton.InferenceServerClient,
    grpc_client: triton_grpc.InferenceServerClient,
    profile: Profile,  # noqa: F811
) -> None:
    inputs = [(f.name, PREFERRED_DATATYPE[f.type]) for f in profile.features]
    assert http_client.is_server_live()
    assert http_client.is_server_ready()
    assert http_client.is_model_ready(MODEL, VERSION)
    assert not http_client.is_model_ready("fraud")
    metadata = http_client.get_model_metadata(MODEL)
    assert (metadata["versions"], metadata["platform"]) == ([VERSION], "modeldeploy-proxy")
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == inputs
    assert [o["name"] for o in metadata["outputs"]] == list(OUTPUTS)
    with pytest.raises(InferenceServerException) as unknown:
        http_client.get_model_metadata("fraud")
    assert unknown.value.status() == "404"

    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready(MODEL)
    grpc_metadata = grpc_client.get_model_metadata(MODEL, as_json=True)
    assert [(i["name"], i["datatype"]) for i in grpc_metadata["inputs"]] == inputs


# --- inference ----------------------------------------------------------------------------


def test_inference_equals_mlservers_own_answer_in_json_binary_and_grpc(
    *,
    mlserver: MLServerProcess,
    http_client: triton.InferenceServerClient,
    grpc_client: triton_grpc.InferenceServerClient,
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
    complete_rows: dict[str, np.ndarray],  # noqa: F811
) -> None:
    columns = _rows(holdout, 0, 100)
    assert np.isnan(columns["data_usage_gb"]).any(), "the rows should have missing values"
    own = mlserver_answer(mlserver, profile, columns)
    binary = _outputs(http_client.infer(MODEL, _inputs(profile, columns, binary=True)))
    assert binary["label"] == own["predict"]
    assert binary["probabilities"] == own["predict_proba"]
    assert (
        binary["confidence"] == np.asarray(own["predict_proba"]).reshape(-1, 2).max(axis=1).tolist()
    )

    own_complete = mlserver_answer(mlserver, profile, complete_rows)
    as_json = http_client.infer(
        MODEL,
        _inputs(profile, complete_rows, binary=False),
        outputs=[triton.InferRequestedOutput(n, binary_data=False) for n in OUTPUTS],
    )
    assert _outputs(as_json)["label"] == own_complete["predict"]
    over_grpc = grpc_client.infer(MODEL, grpc_inputs(profile, complete_rows))
    labels = [v.decode() for v in over_grpc.as_numpy("label").tolist()]
    assert labels == own_complete["predict"]
    assert over_grpc.as_numpy("probabilities").reshape(-1).tolist() == own_complete["predict_proba"]


def test_the_prediction_log_records_what_the_proxy_answered(
    proxy: tuple[ServerProcess, int],
    proxy_log: Path,
    profile: Profile,  # noqa: F811
) -> None:
    golden = profile.golden[0]
    httpx.post(proxy[0].url + INFER, json={**golden.request, "id": "log-me"}, timeout=30)

    def logged() -> list[dict[str, Any]]:
        lines = proxy_log.read_text().splitlines() if proxy_log.exists() else []
        return [r for r in map(json.loads, lines) if r["id"] == "log-me"]

    wait_for_fast(lambda: len(logged()) == 1)
    record = logged()[0]
    assert (record["model"], record["revision"]) == (MODEL, IDENTITY_ENV[c.ENV_REVISION])
    assert record["outputs"]["label"] == golden.expected["label"]
    assert record["confidence"] == pytest.approx(golden.expected["confidence"])


# --- refusals -------------------------------------------------------------------------------


def test_malformed_input_is_4xx_and_counted_as_the_clients(
    *,
    proxy: tuple[ServerProcess, int],
    http_client: triton.InferenceServerClient,
    grpc_client: triton_grpc.InferenceServerClient,
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
    complete_rows: dict[str, np.ndarray],  # noqa: F811
) -> None:
    server = proxy[0]
    before = scrape(server.url)
    columns = _rows(holdout, 0, 4)
    extra = triton.InferInput("age", [4], "INT64")
    extra.set_data_from_numpy(np.arange(4, dtype=np.int64))
    with pytest.raises(InferenceServerException) as unknown:
        http_client.infer(MODEL, [*_inputs(profile, columns, binary=True), extra])
    assert (unknown.value.status(), "unknown input 'age'" in unknown.value.message()) == (
        "400",
        True,
    )
    bad_json = httpx.post(server.url + INFER, content=b"{not json", timeout=5)
    assert bad_json.status_code == 400
    wrong = grpc_inputs(profile, complete_rows)
    position = [f.name for f in profile.features].index("contract")
    as_number = triton_grpc.InferInput("contract", [len(complete_rows["contract"])], "FP64")
    as_number.set_data_from_numpy(np.zeros(len(complete_rows["contract"])))
    wrong[position] = as_number
    with pytest.raises(InferenceServerException) as refused:
        grpc_client.infer(MODEL, wrong)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sent = {Reason.UNKNOWN_INPUT: 1, Reason.BAD_JSON: 1, Reason.BAD_DATATYPE: 1}
    assert {r: delta(c.INVALID_REQUESTS_TOTAL, reason=r) for r in sent} == sent
    assert delta(c.REQUESTS_TOTAL, code="400") == 3
    assert delta(c.REQUESTS_TOTAL, code="500") == 0


# --- the metrics contract ---------------------------------------------------------------------


def test_the_metrics_contract_carries_the_drift_bins(
    healthy: Path,  # noqa: F811
    mlserver: MLServerProcess,
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
) -> None:
    """A fresh proxy: its totals are exactly what these requests made."""
    with _proxy(healthy, mlserver.url, []) as server:
        server.wait_ready(START_S)
        labels_seen: list[str] = []
        with triton.InferenceServerClient(f"{LOOPBACK}:{server.port}") as client:
            for start in range(0, 300, 100):
                result = client.infer(
                    MODEL, _inputs(profile, _rows(holdout, start, 100), binary=True)
                )
                labels_seen += _outputs(result)["label"]
        after = scrape(server.url)
    identity = {
        c.LABEL_MODEL: MODEL,
        c.LABEL_VERSION: VERSION,
        c.LABEL_REVISION: IDENTITY_ENV[c.ENV_REVISION],
    }
    for feature in profile.features:
        expected = counts(feature_bins(feature), holdout[feature.name][:300])
        got = [
            value(after, c.FEATURE_BIN_TOTAL, feature=feature.name, bin=label, **identity)
            for label in feature_bins(feature).labels
        ]
        assert got == expected.tolist(), feature.name
    for label in ("churn", "stay"):
        seen = value(after, c.PREDICTION_BIN_TOTAL, output="label", bin=label)
        assert seen == labels_seen.count(label)
    assert value(after, c.PREDICTION_CONFIDENCE + "_count") == 300
    assert value(after, c.REQUESTS_TOTAL, code="200", **identity) == 3
    assert value(after, c.REQUEST_DURATION_SECONDS + "_count") == 3
    assert value(after, c.MODEL_INFO, **identity) == 1


# --- the upstream killed --------------------------------------------------------------------


def test_a_killed_upstream_fails_readiness_and_its_errors_are_the_models(
    healthy: Path,  # noqa: F811
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two proxies in front of one MLServer of the test's own: one polling the upstream's
    readiness every second, one once a minute, the most it allows (so that requests still
    reach the dead upstream through it; started once the upstream is ready, as it waits
    that long too)."""
    slow_poll = tmp_path / "proxy.yaml"
    slow_poll.write_text("upstream: {health_interval_s: 60}\n")
    grpc_port = free_port()
    blind_args = ["--config", str(slow_poll), "--grpc-port", str(grpc_port)]
    inputs = _inputs(profile, _rows(holdout, 0, 10), binary=True)
    with MLServerProcess(healthy, name=MODEL) as upstream:
        upstream.wait_ready(START_S)
        with (
            _proxy(healthy, upstream.url, []) as watching,
            _proxy(healthy, upstream.url, blind_args) as blind,
        ):
            watching.wait_ready(START_S)
            blind.wait_ready(START_S)
            with triton.InferenceServerClient(f"{LOOPBACK}:{blind.port}") as client:
                client.infer(MODEL, inputs)
                before = scrape(blind.url)
                upstream.kill()
                for _ in range(3):
                    with pytest.raises(InferenceServerException) as failed:
                        client.infer(MODEL, inputs)
                    assert (failed.value.status(), failed.value.message()) == (
                        "500",
                        "inference failed",
                    )
                assert client.is_server_ready()  # it has not looked
            with triton_grpc.InferenceServerClient(f"{LOOPBACK}:{grpc_port}") as grpc_client:
                with pytest.raises(InferenceServerException) as over_grpc:
                    grpc_client.infer(MODEL, grpc_inputs(profile, _rows(holdout, 0, 1)))
                assert over_grpc.value.status() == "StatusCode.INTERNAL"
            after = scrape(blind.url)

            def gone() -> bool:
                return httpx.get(watching.url + "/v2/health/ready", timeout=5).status_code == 503

            wait_for_fast(gone)
            ready = httpx.get(watching.url + "/v2/health/ready", timeout=5).json()
            assert (ready["state"], ready["reason"].startswith("upstream not ready: ")) == (
                "upstream_unready",
                True,
            )
            with triton.InferenceServerClient(f"{LOOPBACK}:{watching.port}") as client:
                assert client.is_server_live()
                assert not client.is_server_ready()
                with pytest.raises(InferenceServerException) as unready:
                    client.infer(MODEL, inputs)
                assert unready.value.status() == "503"

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(c.REQUESTS_TOTAL, code="500") == 4
    assert delta(c.INVALID_REQUESTS_TOTAL) == 0
    assert delta(c.FEATURE_BIN_TOTAL) == 0  # a failed prediction is not binned
