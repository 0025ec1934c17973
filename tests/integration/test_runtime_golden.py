"""Golden replays of a real `modeldeploy serve` on 127.0.0.1 (no cluster): their metrics, a
model whose answers change after warm-up (the churn `turning` variant) losing readiness,
and a stalled inference pool losing liveness."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from operator_harness import wait_for
from test_runtime import churn, copy_model, python_model, scrape, state, value  # noqa: F401

from modeldeploy import contract as c
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST_REPLAYS = {c.ENV_GOLDEN_INTERVAL_S: "1"}
INFER = "/v2/models/churn/infer"


def _profile(model_dir: Path) -> Profile:
    return Profile.model_validate_json((model_dir / "profile.json").read_bytes())


def _golden_counts(url: str) -> dict[str, float]:
    samples = scrape(url)
    return {r: value(samples, c.GOLDEN_CHECKS_TOTAL, result=r) for r in c.GOLDEN_RESULTS}


def _live(url: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(url + c.LIVE_PATH, timeout=5)
    return answer.status_code, dict(answer.json())


def test_a_healthy_server_replays_its_golden_requests_outside_the_client_metrics(
    churn: Callable[[str], Path],  # noqa: F811
) -> None:
    model_dir = churn("healthy") / "model"
    golden = len(_profile(model_dir).golden)
    with ServerProcess(model_dir, env=FAST_REPLAYS) as server:
        server.wait_ready()
        wait_for(lambda: _golden_counts(server.url)[c.GOLDEN_MATCH] >= 2 * golden, timeout=30)
        samples = scrape(server.url)
        live = _live(server.url)
        ready = state(server.url)
    assert value(samples, c.GOLDEN_CHECKS_TOTAL, result=c.GOLDEN_MISMATCH) == 0
    assert value(samples, c.GOLDEN_CHECKS_TOTAL, result=c.GOLDEN_ERROR) == 0
    assert value(samples, c.GOLDEN_CHECK_DURATION_SECONDS + "_count") >= 2 * golden
    # Never a client's request: no request counted, no drift bin, no prediction.
    assert value(samples, c.REQUESTS_TOTAL) == 0
    assert value(samples, c.REQUEST_DURATION_SECONDS + "_count") == 0
    assert value(samples, c.FEATURE_BIN_TOTAL) == 0
    assert value(samples, c.PREDICTION_BIN_TOTAL) == 0
    assert live == (200, {"live": True})
    assert ready["state"] == "ready"


def test_answers_that_change_after_warm_up_mismatch_and_take_readiness_away(
    churn: Callable[[str], Path],  # noqa: F811
) -> None:
    model_dir = churn("turning") / "model"
    env = {**FAST_REPLAYS, "CHURN_TURN_SECONDS": "3"}
    with ServerProcess(model_dir, env=env) as server:
        server.wait_ready()
        wait_for(lambda: _golden_counts(server.url)[c.GOLDEN_MISMATCH] > 0, timeout=30)
        # The variant's model.yaml limit: 5 replays in a row that did not match.
        wait_for(lambda: state(server.url)["state"] == "mismatching", timeout=30)
        ready = httpx.get(server.url + "/v2/models/churn/ready", timeout=5)
        request = _profile(model_dir).golden[0].request
        infer = httpx.post(server.url + INFER, json=request, timeout=5)
        live = _live(server.url)
        counts = _golden_counts(server.url)
    assert ready.status_code == 503
    assert "5 golden replays in a row did not match (limit 5)" in ready.json()["reason"]
    assert infer.status_code == 503
    assert live == (200, {"live": True})  # wrong answers are no stall: readiness says so
    assert counts[c.GOLDEN_MATCH] > 0  # before it turned
    assert counts[c.GOLDEN_ERROR] == 0


STALLING_MODEL = """
import time
from pathlib import Path

import joblib

from modeldeploy.serving.model import SklearnModel

_model = SklearnModel(joblib.load(Path(__file__).with_name("model.joblib")), {features!r})
STALL = Path(__file__).with_name("stall")


def predict(columns):
    while STALL.exists():  # a serving loop stuck, say on a lock
        time.sleep(0.05)
    return _model.predict(columns)
"""


def test_a_stalled_inference_pool_is_not_live_until_it_moves_again(
    churn: Callable[[str], Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    healthy = churn("healthy") / "model"
    model_dir = copy_model(healthy, tmp_path / "stalling")
    features = [f.name for f in _profile(healthy).features]
    python_model(model_dir, "stalling_model", STALLING_MODEL.format(features=features))
    with (model_dir / "model.yaml").open("a") as config:
        config.write("golden: {deadline_s: 2}\n")
    args = ["--inference-threads", "1"]
    with ServerProcess(model_dir, env=FAST_REPLAYS, args=args) as server:
        server.wait_ready()
        assert _live(server.url) == (200, {"live": True})
        (model_dir / "stall").touch()
        wait_for(lambda: _live(server.url)[0] == 503, timeout=30)
        stalled = _live(server.url)[1]
        (model_dir / "stall").unlink()
        wait_for(lambda: _live(server.url)[0] == 200, timeout=30)
        ready = state(server.url)
    assert stalled["live"] is False
    assert "over the 2 s deadline: the inference pool has stalled" in stalled["reason"]
    assert ready["state"] == "ready"  # a stall is liveness' business, not readiness'
