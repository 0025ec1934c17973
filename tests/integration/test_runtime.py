"""The serving runtime as a real `modeldeploy serve` process on 127.0.0.1 (no cluster).

The churn example is trained once per session (a few seconds); each test starts the
servers it needs on free ports and sends bounded traffic to them only.
"""

import json
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from operator_harness import wait_for
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy import contract as c
from modeldeploy.devenv.imagemap import load_build_script
from modeldeploy.profile_schema import Profile
from modeldeploy.profiling.io import read_table
from modeldeploy.profiling.stats import normalise
from modeldeploy.serving.bins import counts, feature_bins
from modeldeploy.serving.process import LOOPBACK, ServerProcess, modeldeploy_command
from modeldeploy.serving.protocol import Reason, input_tensor
from modeldeploy.serving.server import BROKEN_IMAGE_EXIT_CODE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
IDENTITY_ENV = {
    c.ENV_MODEL_NAME: "churn",
    c.ENV_MODEL_VERSION: "2026-11-20",
    c.ENV_REVISION: "rev-abc123",
}
INFER = "/v2/models/churn/infer"


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(scope="session")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Builds an example variant once per session; returns its OUT directory."""
    module = load_build_script(ROOT / "examples/churn/build.py", "churn_build")
    built: dict[str, Path] = {}

    def build(variant: str) -> Path:
        if variant not in built:
            out = tmp_path_factory.mktemp(f"churn-{variant}")
            module.build(out, variant=variant, version="1", rows=3000)
            built[variant] = out
        return built[variant]

    return build


@pytest.fixture(scope="module")
def healthy(churn: Callable[[str], Path]) -> Path:
    return churn("healthy") / "model"


@pytest.fixture(scope="module")
def profile(healthy: Path) -> Profile:
    return Profile.model_validate_json((healthy / "profile.json").read_bytes())


@pytest.fixture(scope="module")
def holdout(healthy: Path, profile: Profile) -> dict[str, np.ndarray]:
    columns = read_table(healthy.parent / "data" / "holdout.csv")
    return {f.name: normalise(columns[f.name], f.type) for f in profile.features}


@pytest.fixture(scope="module")
def prediction_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("log") / "predictions.jsonl"


@pytest.fixture(scope="module")
def server(healthy: Path, prediction_log: Path) -> Iterator[ServerProcess]:
    log_args = ["--prediction-log", str(prediction_log), "--log-sample-rate", "1"]
    args = [*log_args, "--redact", "payment_method"]
    with ServerProcess(healthy, env=IDENTITY_ENV, args=args) as process:
        process.wait_ready()
        yield process


def rows_body(
    profile: Profile, holdout: dict[str, np.ndarray], start: int, n: int
) -> dict[str, Any]:
    return {
        "id": f"rows-{start}",
        "inputs": [
            input_tensor(f, holdout[f.name][start : start + n].tolist()) for f in profile.features
        ],
    }


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url + "/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def state(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/v2/health/ready", timeout=5).json())


def wait_for_fast(predicate: Callable[[], bool]) -> None:
    wait_for(predicate, timeout=20, interval=0.05)


def copy_model(healthy: Path, target: Path) -> Path:
    shutil.copytree(healthy, target)
    return target


def python_model(model_dir: Path, module: str, source: str) -> None:
    """Serves `module:predict` (written into the model dir) instead of the joblib file."""
    (model_dir / f"{module}.py").write_text(source)
    config = (model_dir / "model.yaml").read_text()
    config = config.replace(
        "framework: sklearn", f"framework: python\nentrypoint: {module}:predict"
    )
    (model_dir / "model.yaml").write_text(config)


# --- the profile command --------------------------------------------------------------------


def test_profile_command_from_csv_matches_the_in_memory_build(
    healthy: Path, tmp_path: Path
) -> None:
    model_dir = copy_model(healthy, tmp_path / "reprofiled")
    (model_dir / "profile.json").unlink()
    data = healthy.parent / "data"
    command = [*modeldeploy_command(), "profile", "--model-dir", str(model_dir),
               "--data", str(data / "train.csv"), "--target", "churned", "--seed", "7",
               "--holdout", str(data / "holdout.csv")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads((model_dir / "profile.json").read_text()) == json.loads(
        (healthy / "profile.json").read_text()
    )


# --- endpoints ----------------------------------------------------------------------------


def test_v2_endpoints_and_error_bodies(server: ServerProcess, profile: Profile) -> None:
    get = lambda path: httpx.get(server.url + path, timeout=5)  # noqa: E731
    assert get("/v2").json()["name"] == "modeldeploy"
    assert get("/v2/health/live").json() == {"live": True}
    ready = get("/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json()["state"] == "ready"
    assert get(c.READY_PATH_TEMPLATE.format(model="churn")).status_code == 200
    assert get("/v2/models/churn/versions/2026-11-20/ready").status_code == 200
    metadata = get("/v2/models/churn").json()
    assert metadata["versions"] == ["2026-11-20"]
    assert metadata["platform"] == "sklearn"
    assert metadata["parameters"] == {"revision": "rev-abc123"}
    assert [i["name"] for i in metadata["inputs"]] == [f.name for f in profile.features]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "confidence", "probabilities"]
    unknown = get("/v2/models/fraud/ready")
    assert unknown.status_code == 404
    assert "unknown model 'fraud'" in unknown.json()["error"]
    assert get("/v2/models/churn/versions/1").status_code == 404
    missing = get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found: GET /v2/nothing"}
    assert get(INFER).status_code == 405
    assert "error" in get(INFER).json()


def test_golden_single_and_batched_inference(
    server: ServerProcess, profile: Profile, holdout: dict[str, np.ndarray]
) -> None:
    for golden in profile.golden:
        answer = httpx.post(server.url + INFER, json=golden.request, timeout=5).json()
        assert answer["id"] == golden.name
        assert {o["name"]: o["data"] for o in answer["outputs"]}["label"] == golden.expected[
            "label"
        ]
    batch = httpx.post(server.url + INFER, json=rows_body(profile, holdout, 0, 64), timeout=5)
    assert batch.status_code == 200
    outputs = {o["name"]: o for o in batch.json()["outputs"]}
    assert outputs["label"]["shape"] == [64]
    assert set(outputs["label"]["data"]) <= {"churn", "stay"}
    assert outputs["probabilities"]["shape"] == [64, 2]
    assert outputs["probabilities"]["parameters"] == {"classes": ["churn", "stay"]}
    nested = rows_body(profile, holdout, 0, 3)
    for tensor in nested["inputs"]:
        tensor["shape"], tensor["data"] = [3, 1], [[v] for v in tensor["data"]]
    nested["outputs"] = [{"name": "label"}]
    answer = httpx.post(server.url + INFER, json=nested, timeout=5).json()
    assert answer["outputs"] == [
        {**outputs["label"], "shape": [3], "data": outputs["label"]["data"][:3]}
    ]


# --- validation ---------------------------------------------------------------------------


def _bad_requests(
    profile: Profile, holdout: dict[str, np.ndarray]
) -> list[tuple[str, Any, int, Reason, str]]:
    good = rows_body(profile, holdout, 0, 2)

    def edit(name: str, **changes: Any) -> bytes:
        body = json.loads(json.dumps(good))
        for tensor in body["inputs"]:
            if tensor["name"] == name:
                tensor.update(changes)
        return json.dumps(body).encode()

    def without(name: str) -> bytes:
        body = json.loads(json.dumps(good))
        body["inputs"] = [t for t in body["inputs"] if t["name"] != name]
        return json.dumps(body).encode()

    def with_extra(tensor: Any) -> bytes:
        body = json.loads(json.dumps(good))
        body["inputs"].append(tensor)
        return json.dumps(body).encode()

    def top(**changes: Any) -> bytes:
        return json.dumps({**good, **changes}).encode()

    tenure = good["inputs"][0]
    return [
        ("malformed JSON", b'{"inputs": [', 400, Reason.BAD_JSON, "not valid JSON"),
        ("not UTF-8", b"\xff\xfe\x00{", 400, Reason.BAD_JSON, "not valid JSON"),
        ("JSON array", b"[1, 2]", 400, Reason.NOT_AN_OBJECT, "must be a JSON object"),
        ("numeric id", top(id=7), 400, Reason.BAD_ID, "'id' must be a string"),
        ("parameters list", top(parameters=[1]), 400, Reason.BAD_PARAMETERS, "'parameters'"),
        ("no inputs", top(inputs=[]), 400, Reason.NO_INPUTS, "tenure_months, monthly_charges"),
        ("input not object", top(inputs=[1]), 400, Reason.BAD_INPUT, "inputs[0] must be an object"),
        (
            "data not list",
            edit("tenure_months", data=5),
            400,
            Reason.BAD_INPUT,
            "'data' must be a list",
        ),
        (
            "duplicate input",
            with_extra(tenure),
            400,
            Reason.DUPLICATE_INPUT,
            "'tenure_months' appears twice",
        ),
        (
            "unknown feature",
            with_extra({**tenure, "name": "age"}),
            400,
            Reason.UNKNOWN_INPUT,
            "unknown input 'age'",
        ),
        (
            "missing feature",
            without("contract"),
            400,
            Reason.MISSING_INPUT,
            "missing input(s): contract",
        ),
        (
            "bogus datatype",
            edit("monthly_charges", datatype="DOUBLE"),
            400,
            Reason.BAD_DATATYPE,
            "'DOUBLE' is not a V2 datatype",
        ),
        (
            "wrong datatype",
            edit("contract", datatype="FP32"),
            400,
            Reason.BAD_DATATYPE,
            "'contract' is a string feature",
        ),
        (
            "2-D shape",
            edit("monthly_charges", shape=[1, 2]),
            400,
            Reason.BAD_SHAPE,
            "must be [batch] or [batch, 1]",
        ),
        (
            "shape vs data",
            edit("monthly_charges", shape=[3]),
            400,
            Reason.SHAPE_MISMATCH,
            "holds 3 value(s) but data has 2",
        ),
        (
            "batch sizes differ",
            edit("support_calls", shape=[1], data=[1]),
            400,
            Reason.BATCH_MISMATCH,
            "disagree on the batch size",
        ),
        (
            "too many rows",
            edit("tenure_months", shape=[2000], data=[1] * 2000),
            400,
            Reason.BATCH_MISMATCH,
            "tenure_months=2000",
        ),
        (
            "string for number",
            edit("monthly_charges", data=["80", 1.0]),
            400,
            Reason.BAD_VALUE,
            "data[0] = '80' is not a number",
        ),
        (
            "float for INT64",
            edit("tenure_months", data=[1.5, 2]),
            400,
            Reason.BAD_VALUE,
            "is not an integer (INT64)",
        ),
        (
            "number for category",
            edit("contract", data=[1, "one-year"]),
            400,
            Reason.BAD_VALUE,
            "is not a string",
        ),
        (
            "NaN literal",
            edit("monthly_charges", data=[float("nan"), 1.0]),
            400,
            Reason.NON_FINITE,
            "NaN and infinite",
        ),
        (
            "Infinity",
            b'{"inputs": [{"name": "monthly_charges", "shape": [1], "datatype": "FP64", '
            b'"data": [Infinity]}]}',
            400,
            Reason.NON_FINITE,
            "NaN and infinite",
        ),
        (
            "null not allowed",
            edit("tenure_months", data=[None, 3]),
            400,
            Reason.NULL_VALUE,
            "'tenure_months': data[0] is null",
        ),
        (
            "outputs not objects",
            top(outputs=["label"]),
            400,
            Reason.BAD_OUTPUTS,
            "'outputs' must be a list",
        ),
        (
            "unknown output",
            top(outputs=[{"name": "score"}]),
            400,
            Reason.UNKNOWN_OUTPUT,
            "unknown output(s) score",
        ),
        (
            "body too large",
            b" " * (2 << 20),
            413,
            Reason.BODY_TOO_LARGE,
            "exceeds the limit of 1048576 bytes",
        ),
    ]


def test_validation_rejects_bad_input_with_clear_messages_and_counts_them(
    server: ServerProcess, profile: Profile, holdout: dict[str, np.ndarray]
) -> None:
    cases = _bad_requests(profile, holdout)
    assert len({reason for *_, reason, _ in cases}) >= 18
    before = scrape(server.url)
    sent: dict[str, int] = {}
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for title, body, status, reason, message in cases:
            answer = client.post(INFER, content=body, headers={"content-type": "application/json"})
            assert (answer.status_code, reason) == (status, reason), title
            assert message in answer.json()["error"], (title, answer.json())
            sent[reason] = sent.get(reason, 0) + 1
        chunked = client.post(INFER, content=iter([b" " * 700_000] * 2))  # no content-length
        assert chunked.status_code == 413
        sent[Reason.BODY_TOO_LARGE] += 1
        wrong_model = client.post("/v2/models/churn/versions/0/infer", json={})
        assert wrong_model.status_code == 404
        sent[Reason.UNKNOWN_MODEL] = 1
        assert client.get("/v2/health/live").status_code == 200  # still serving
    after = scrape(server.url)
    for reason, n in sent.items():
        delta = value(after, c.INVALID_REQUESTS_TOTAL, reason=reason) - value(
            before, c.INVALID_REQUESTS_TOTAL, reason=reason
        )
        assert delta == n, reason
    rejected = value(after, c.REQUESTS_TOTAL, code="400") - value(
        before, c.REQUESTS_TOTAL, code="400"
    )
    assert rejected == sum(
        n for r, n in sent.items() if r not in (Reason.BODY_TOO_LARGE, Reason.UNKNOWN_MODEL)
    )


# --- metrics ------------------------------------------------------------------------------


def test_bins_and_baselines_exported(
    healthy: Path, profile: Profile, holdout: dict[str, np.ndarray]
) -> None:
    with ServerProcess(healthy, env=IDENTITY_ENV) as server:
        server.wait_ready()
        fresh = scrape(server.url)
        ident = {"model": "churn", "version": "2026-11-20", "revision": "rev-abc123"}
        assert value(fresh, c.MODEL_INFO, **ident) == 1
        for feature in profile.features:
            for label in feature_bins(feature).labels:
                labels = {**ident, "feature": feature.name, "bin": label}
                assert (c.FEATURE_BIN_TOTAL, frozenset(labels.items())) in fresh
                assert value(fresh, c.FEATURE_BIN_TOTAL, **labels) == 0
                baseline = value(fresh, c.FEATURE_BASELINE_RATIO, **labels)
                assert baseline == pytest.approx(feature.baseline[label])
        labels_seen: list[str] = []
        with httpx.Client(base_url=server.url, timeout=5) as client:
            for start in range(0, 400, 100):
                answer = client.post(INFER, json=rows_body(profile, holdout, start, 100)).json()
                labels_seen += answer["outputs"][0]["data"]
        after = scrape(server.url)
    for feature in profile.features:
        expected = counts(feature_bins(feature), holdout[feature.name][:400])
        got = [
            value(after, c.FEATURE_BIN_TOTAL, feature=feature.name, bin=label)
            for label in feature_bins(feature).labels
        ]
        assert got == expected.tolist(), feature.name
    for label in ("churn", "stay"):
        assert value(after, c.PREDICTION_BIN_TOTAL, output="label", bin=label) == labels_seen.count(
            label
        )
    assert value(after, c.PREDICTION_CONFIDENCE + "_count") == 400
    assert value(after, c.PREDICTION_CONFIDENCE + "_bucket", le="0.5") == 0  # argmax >= 0.5
    assert value(after, c.REQUESTS_TOTAL, code="200") == 4
    assert value(after, c.REQUEST_DURATION_SECONDS + "_count") == 4


def test_skewed_variant_shows_training_serving_skew(
    churn: Callable[[str], Path], profile: Profile, holdout: dict[str, np.ndarray]
) -> None:
    with ServerProcess(churn("skewed") / "model") as server:
        server.wait_ready()  # golden requests record what this image answers: it is Ready
        httpx.post(server.url + INFER, json=rows_body(profile, holdout, 0, 300), timeout=10)
        samples = scrape(server.url)
    charges = {
        b: value(samples, c.FEATURE_BIN_TOTAL, feature="monthly_charges", bin=b)
        for b in ("09", "00")
    }
    assert charges["09"] >= 290  # the training baseline puts 10% there
    assert value(
        samples, c.FEATURE_BASELINE_RATIO, feature="monthly_charges", bin="09"
    ) == pytest.approx(0.1, abs=0.01)
    tenure = counts(feature_bins(profile.features[0]), holdout["tenure_months"][:300]).tolist()
    assert [
        value(samples, c.FEATURE_BIN_TOTAL, feature="tenure_months", bin=f"{i:02d}")
        for i in range(len(tenure) - 1)
    ] == tenure[:-1]


# --- readiness ----------------------------------------------------------------------------

SLOW_MODEL = """
import time
from pathlib import Path

import joblib

from modeldeploy.serving.model import SklearnModel

_model = SklearnModel(joblib.load(Path(__file__).with_name("model.joblib")), {features!r})
_calls = []


def predict(columns):
    _calls.append(1)
    if len(_calls) <= 10:  # a cold start: the first calls are slow
        time.sleep(0.12)
    return _model.predict(columns)
"""

WRONG_MODEL = """
import numpy as np

from modeldeploy.serving.model import Prediction


def predict(columns):
    rows = len(columns["tenure_months"])
    return Prediction(np.array(["stay"] * rows), np.full((rows, 2), 0.5), ("churn", "stay"))
"""


def test_readiness_flips_only_after_golden_requests_pass_in_time(
    healthy: Path, profile: Profile, tmp_path: Path
) -> None:
    model_dir = copy_model(healthy, tmp_path / "slow")
    python_model(
        model_dir, "slow_model", SLOW_MODEL.format(features=[f.name for f in profile.features])
    )
    env = {c.ENV_WARMUP_MAX_LATENCY_MS: "100"}
    with ServerProcess(model_dir, env=env) as server:
        server.wait_live()
        first = httpx.get(server.url + "/v2/models/churn/ready", timeout=5)
        assert first.status_code == 503
        assert first.json()["state"] == "warming"
        early = httpx.post(server.url + INFER, json=profile.golden[0].request, timeout=5)
        assert early.status_code == 503
        assert "not ready" in early.json()["error"]
        server.wait_ready()
        reason = state(server.url)["reason"]
    assert "round 3" in reason  # rounds 1 and 2 were slower than 100 ms
    assert "<= 100 ms" in reason


def test_a_wrong_model_exits_with_its_reason_in_the_termination_log(
    healthy: Path, tmp_path: Path
) -> None:
    """Wrong golden outputs are the image's fault, on any node: not ready (503) until the
    server has shut down, then exit 4 with the reason where the kubelet reads it."""
    model_dir = copy_model(healthy, tmp_path / "wrong")
    python_model(model_dir, "wrong_model", WRONG_MODEL)
    log = tmp_path / "termination-log"
    with ServerProcess(model_dir, env={c.ENV_TERMINATION_LOG: str(log)}) as server:
        assert server.wait_exited() == BROKEN_IMAGE_EXIT_CODE, server.output()
        output = server.output()
    message = log.read_text()
    assert message.startswith("golden request failed: ")
    assert "expected" in message
    assert f"not ready: {message}" in output
    assert "Application shutdown complete" in output  # a graceful stop, not a crash


def test_a_directory_that_cannot_be_served_says_why_in_the_termination_log(
    healthy: Path, tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    env = {c.ENV_WARMUP_MAX_LATENCY_MS: "soon"}
    with ServerProcess(healthy, env=env, args=["--termination-log", str(log)]) as server:
        assert server.wait_exited() == 2, server.output()
    assert log.read_text() == (
        f"cannot serve {healthy}: {c.ENV_WARMUP_MAX_LATENCY_MS}='soon' is not a positive number"
    )


# --- shadow mirroring and the prediction log ----------------------------------------------


def _latencies(url: str, body: dict[str, Any], n: int) -> list[float]:
    latencies = []
    with httpx.Client(base_url=url, timeout=5) as client:
        for _ in range(n):
            start = time.perf_counter()
            assert client.post(INFER, json=body).status_code == 200
            latencies.append(time.perf_counter() - start)
    return latencies


def test_mirroring_to_a_hanging_shadow_does_not_slow_responses(
    healthy: Path, profile: Profile
) -> None:
    # A shadow that accepts connections and never answers: every mirror waits for timeouts.
    with socket.socket() as blackhole:
        blackhole.bind((LOOPBACK, 0))
        blackhole.listen(1024)
        shadow_url = f"http://{LOOPBACK}:{blackhole.getsockname()[1]}"
        env = {c.ENV_SHADOW_URL: shadow_url, c.ENV_SHADOW_PERCENT: "100"}
        with ServerProcess(healthy, env=env) as server:
            server.wait_ready()
            latencies = _latencies(server.url, profile.golden[0].request, 150)
            wait_for_fast(
                lambda: value(scrape(server.url), c.SHADOW_REQUESTS_TOTAL, result="failed") > 0
            )
            samples = scrape(server.url)
    # Waiting for the shadow would cost its 0.5 s timeout per request (or more).
    p95 = statistics.quantiles(latencies, n=20)[-1]
    assert p95 < 0.25, f"p95 {p95 * 1000:.0f} ms"
    assert value(samples, c.SHADOW_REQUESTS_TOTAL, result="sent") == 0
    assert value(samples, c.REQUESTS_TOTAL, code="200") == 150


def test_mirroring_reaches_a_live_shadow(
    healthy: Path, profile: Profile, server: ServerProcess
) -> None:
    # The module's server plays the shadow; the primary mirrors all its requests to it...
    env = {c.ENV_SHADOW_URL: server.url, c.ENV_SHADOW_PERCENT: "100"}
    before = value(scrape(server.url), c.REQUESTS_TOTAL, code="200")
    with ServerProcess(healthy, env=env) as primary:
        primary.wait_ready()
        body = profile.golden[-1].request
        with httpx.Client(base_url=primary.url, timeout=5) as client:
            for _ in range(20):  # ...except requests that are mirrors already (no loops)
                client.post(INFER, json=body, headers={c.SHADOW_HEADER: "1"})
        _latencies(primary.url, body, 40)

        def settled() -> bool:
            sent = value(scrape(primary.url), c.SHADOW_REQUESTS_TOTAL, result="sent")
            received = value(scrape(server.url), c.REQUESTS_TOTAL, code="200") - before
            return sent > 0 and sent == received

        wait_for_fast(settled)
        samples = scrape(primary.url)
    assert value(samples, c.SHADOW_REQUESTS_TOTAL, result="sent") == 40
    assert value(samples, c.REQUESTS_TOTAL, code="200") == 60


def test_prediction_log_is_json_lines_with_redaction(
    server: ServerProcess, profile: Profile, prediction_log: Path
) -> None:
    golden = profile.golden[0]
    request = {**golden.request, "id": "log-me"}
    httpx.post(server.url + INFER, json=request, timeout=5)

    def logged() -> list[dict[str, Any]]:
        lines = prediction_log.read_text().splitlines() if prediction_log.exists() else []
        return [r for r in map(json.loads, lines) if r["id"] == "log-me"]

    wait_for_fast(lambda: len(logged()) == 1)
    record = logged()[0]
    assert set(record) == {"time", "model", "version", "revision", "id", "inputs", "outputs",
                           "confidence"}  # fmt: skip
    assert record["revision"] == "rev-abc123"
    assert record["inputs"]["payment_method"] == "[redacted]"
    assert record["inputs"]["contract"] == golden.request["inputs"][4]["data"]
    assert record["outputs"]["label"] == golden.expected["label"]
    assert record["confidence"] == pytest.approx(golden.expected["confidence"])
