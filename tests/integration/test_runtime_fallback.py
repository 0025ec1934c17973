"""The low-confidence fallback of a real `modeldeploy serve` process on 127.0.0.1 (the churn
`unsure` variant: a tempered model whose rows under a 0.6 confidence are answered by the
rules in its image), driven by NVIDIA's tritonclient over REST (JSON and binary tensors) and
gRPC: the same rows are tagged alike on every transport, and /metrics counts them.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from test_runtime import IDENTITY_ENV, churn, holdout, profile, scrape, value
from test_runtime_grpc import complete_rows, grpc_inputs
from test_runtime_tritonclient import _inputs

from modeldeploy import contract as c
from modeldeploy.devenv.tools import free_port
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.process import LOOPBACK, ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
__all__ = ["churn", "complete_rows", "holdout", "profile"]  # the fixtures
MODEL = "churn"
FLOOR = 0.6  # examples/churn/build.py FALLBACK_FLOOR
RULE_CONFIDENCE = 0.7  # examples/churn/churn_features.py: what the rules answer with
OUTPUTS = ("label", "confidence", "fallback")


@pytest.fixture(scope="module")
def healthy(churn: Callable[[str], Path]) -> Path:
    """The model the shared fixtures (profile, holdout rows) read: here the unsure one."""
    return churn("unsure") / "model"


@pytest.fixture(scope="module")
def server(healthy: Path) -> Iterator[tuple[ServerProcess, int]]:
    grpc_port = free_port()
    args = ["--grpc-port", str(grpc_port), "--log-level", "warning"]
    with ServerProcess(healthy, env=IDENTITY_ENV, args=args) as process:
        process.wait_ready()
        yield process, grpc_port


def _plain(array: np.ndarray | None, name: str) -> list[Any]:
    assert array is not None, name
    values = array.reshape(-1).tolist()
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def test_answers_are_tagged_alike_on_every_transport_and_counted(
    server: tuple[ServerProcess, int], profile: Profile, complete_rows: dict[str, np.ndarray]
) -> None:
    process, grpc_port = server
    before = scrape(process.url)
    # Warm-up answered the golden requests, some of them from the fallback: never counted.
    assert any(True in g.expected.get("fallback", []) for g in profile.golden)
    assert value(before, c.ANSWERED_ROWS_TOTAL, answered_by="fallback") == 0
    assert value(before, c.ANSWERED_ROWS_TOTAL, answered_by="model") == 0
    metadata = httpx.get(f"{process.url}/v2/models/{MODEL}", timeout=5).json()
    assert {"name": "fallback", "datatype": "BOOL", "shape": [-1]} in metadata["outputs"]

    answers: dict[str, dict[str, list[Any]]] = {}
    with triton_http.InferenceServerClient(f"{LOOPBACK}:{process.port}") as rest:
        for binary in (False, True):
            result = rest.infer(MODEL, _inputs(profile, complete_rows, binary=binary))
            answers["binary" if binary else "json"] = {
                n: _plain(result.as_numpy(n), n) for n in OUTPUTS
            }
    with triton_grpc.InferenceServerClient(f"{LOOPBACK}:{grpc_port}") as grpc:
        result = grpc.infer(MODEL, grpc_inputs(profile, complete_rows))
        answers["grpc"] = {n: _plain(result.as_numpy(n), n) for n in OUTPUTS}
    json_answer = answers["json"]
    for transport in ("binary", "grpc"):
        assert answers[transport]["label"] == json_answer["label"], transport
        assert answers[transport]["fallback"] == json_answer["fallback"], transport
        assert answers[transport]["confidence"] == pytest.approx(json_answer["confidence"])

    tags, confidence = json_answer["fallback"], json_answer["confidence"]
    rows = len(tags)
    fell_back = sum(tags)
    print(f"\n{fell_back} of {rows} rows answered by the fallback")
    assert 0 < fell_back < rows, "the rows should mix sure and unsure answers"
    for tag, sure in zip(tags, confidence, strict=True):
        if tag:  # the rules' answer, not the model's unsure one
            assert sure == pytest.approx(RULE_CONFIDENCE)
        else:
            assert sure >= FLOOR

    after = scrape(process.url)
    counted = {
        by: value(after, c.ANSWERED_ROWS_TOTAL, answered_by=by)
        - value(before, c.ANSWERED_ROWS_TOTAL, answered_by=by)
        for by in (c.ANSWERED_BY_MODEL, c.ANSWERED_BY_FALLBACK)
    }
    assert counted == {
        c.ANSWERED_BY_MODEL: 3 * (rows - fell_back),
        c.ANSWERED_BY_FALLBACK: 3 * fell_back,
    }
    labels = {"model": MODEL, "revision": IDENTITY_ENV[c.ENV_REVISION]}
    assert value(after, c.ANSWERED_ROWS_TOTAL, **labels) == 3 * rows


def test_the_tag_alone_may_be_asked_for(
    server: tuple[ServerProcess, int], profile: Profile, complete_rows: dict[str, np.ndarray]
) -> None:
    process, _ = server
    with triton_http.InferenceServerClient(f"{LOOPBACK}:{process.port}") as rest:
        only = triton_http.InferRequestedOutput("fallback", binary_data=True)
        result = rest.infer(MODEL, _inputs(profile, complete_rows, binary=True), outputs=[only])
    assert result.as_numpy("label") is None
    tags = result.as_numpy("fallback")
    assert tags is not None
    assert tags.dtype == np.bool_
    assert tags.any()
