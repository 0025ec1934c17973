"""Traces, found in a real OpenTelemetry Collector on 127.0.0.1 (built by hack/testenv.sh):
an inference of a real `modeldeploy serve` process continuing its caller's W3C trace, with
its stages as children; a malformed request's span with its 4xx outcome; then the operator
on the real cluster with a real Prometheus, whose reconciles and analysis rounds are
spans."""

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import httpx
import pytest
from analysis_stack import NAME, V1, manifest, write_image_map
from operator_harness import (
    ClusterReader,
    OperatorProcess,
    apply_object,
    ensure_crd,
    ensure_namespace,
    wait_for,
)

from modeldeploy import contract as c
from modeldeploy.api import Phase
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.collector import (
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    Collector,
    ExportedSpan,
)
from modeldeploy.devenv.imagemap import default_build_root
from modeldeploy.devenv.prometheus import PrometheusServer
from modeldeploy.devenv.tools import otelcol_binary
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NAMESPACE = "tracing"
INFER = f"/v2/models/{NAME}/infer"
STAGES = {"decode", "validate", "preprocess", "predict", "encode"}
# Export each batch of spans within 0.1 s (the SDK's default waits 5 s).
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    with Collector(otelcol_binary(), tmp_path_factory.mktemp("otelcol")) as running:
        yield running


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn example's first version, as the analysis stack's pod runner builds it."""
    launches = write_image_map(tmp_path_factory.mktemp("images")).prepare(
        default_build_root(), print
    )
    found = launches[V1].model_dir
    assert found is not None
    return found


def traced(collector: Collector, revision: str) -> dict[str, str]:
    """The env of a traced model server of `revision`."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_url,
        **FAST_EXPORT,
        c.ENV_MODEL_NAME: NAME,
        c.ENV_MODEL_VERSION: "1",
        c.ENV_REVISION: revision,
    }


@pytest.fixture(scope="module")
def shadow(model_dir: Path, collector: Collector) -> Iterator[ServerProcess]:
    """The version the server mirrors every request to."""
    with ServerProcess(model_dir, env=traced(collector, "rev-shadow")) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def server(model_dir: Path, collector: Collector, shadow: ServerProcess) -> Iterator[ServerProcess]:
    mirrored = {c.ENV_SHADOW_URL: shadow.url, c.ENV_SHADOW_PERCENT: "100"}
    with ServerProcess(model_dir, env={**traced(collector, "rev-traced"), **mirrored}) as running:
        running.wait_ready()
        yield running


def traceparent() -> tuple[str, str, str]:
    """A caller's trace id, span id, and the header carrying both (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def server_span(spans: list[ExportedSpan], revision: str = "rev-traced") -> ExportedSpan:
    [found] = [
        s
        for s in spans
        if s.kind == SPAN_KIND_SERVER and s.attributes["modeldeploy.revision"] == revision
    ]
    return found


def test_an_inference_continues_the_callers_trace(
    server: ServerProcess, collector: Collector, model_dir: Path
) -> None:
    golden = Profile.model_validate_json((model_dir / "profile.json").read_bytes()).golden[0]
    trace_id, caller, header = traceparent()
    answer = httpx.post(
        server.url + INFER, json=golden.request, headers={"traceparent": header}, timeout=10
    )
    assert answer.status_code == 200, answer.text

    def whole(spans: list[ExportedSpan]) -> list[ExportedSpan]:
        mine = [s for s in spans if s.trace_id == trace_id]
        done = {s.name for s in mine} >= STAGES and any(s.kind == SPAN_KIND_SERVER for s in mine)
        return mine if done else []

    spans = list(collector.wait_for(whole))
    request = server_span(spans)
    assert request.name == "POST /v2/models/{model}/infer"
    assert request.parent_span_id == caller  # the caller's span, from traceparent
    assert request.service == NAME
    assert request.attributes["modeldeploy.model"] == NAME
    assert request.attributes["modeldeploy.version"] == "1"
    assert request.attributes["modeldeploy.revision"] == "rev-traced"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["modeldeploy.outcome"] == "ok"
    assert request.attributes["modeldeploy.rows"] >= 1
    assert request.status_code != STATUS_ERROR
    stages = {s.name: s for s in spans if s.name in STAGES and s.parent_span_id == request.span_id}
    assert set(stages) == STAGES
    assert all(s.status_code != STATUS_ERROR for s in stages.values())

    # The mirrored copy carries the request's context: the shadow's span is its child.
    def mirrored(spans: list[ExportedSpan]) -> list[ExportedSpan]:
        return [
            s
            for s in spans
            if s.trace_id == trace_id
            and s.kind == SPAN_KIND_SERVER
            and s.attributes["modeldeploy.revision"] == "rev-shadow"
        ]

    [copy] = collector.wait_for(mirrored)
    assert copy.parent_span_id == request.span_id
    assert copy.attributes["modeldeploy.outcome"] == "ok"


def test_a_malformed_request_is_a_span_with_its_4xx_outcome(
    server: ServerProcess, collector: Collector
) -> None:
    trace_id, caller, header = traceparent()
    answer = httpx.post(
        server.url + INFER,
        content=b'{"inputs": [',
        headers={"traceparent": header, "content-type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400

    def refused(spans: list[ExportedSpan]) -> list[ExportedSpan]:
        mine = [s for s in spans if s.trace_id == trace_id]
        done = {"decode"} <= {s.name for s in mine} and any(
            s.kind == SPAN_KIND_SERVER for s in mine
        )
        return mine if done else []

    spans = list(collector.wait_for(refused))
    request = server_span(spans)
    assert request.parent_span_id == caller
    assert request.attributes["http.response.status_code"] == 400
    assert request.attributes["modeldeploy.outcome"] == "invalid"
    assert request.attributes["modeldeploy.reason"] == "bad_json"
    assert request.status_code != STATUS_ERROR  # a client's fault (HTTP semantic conventions)
    # (Mirrored too, the shadow refusing it alike: only this server's stages here.)
    stages = [s for s in spans if s.parent_span_id == request.span_id and s.name in STAGES]
    [decode] = stages  # nothing after the stage that refused it
    assert decode.name == "decode"
    assert decode.status_code == STATUS_ERROR  # where it failed, with the exception
    assert "exception" in decode.events


def test_reconciles_and_analysis_rounds_are_spans(
    kube: KwokCluster,
    prometheus: PrometheusServer,
    collector: Collector,
    reader: ClusterReader,
    tmp_path: Path,
) -> None:
    """kwok turns the pods Ready by itself: the stable's drift monitor then runs a round every
    analysis interval, without data (no model server serves here), which its span says too.
    (Model servers are left out so that hack/lowest-deps.sh can run this on the lowest
    OpenTelemetry SDK: the example's model is built by the dev environment's scikit-learn.)"""
    ensure_crd(kube)
    ensure_namespace(kube, NAMESPACE)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_url, **FAST_EXPORT}
    operator = OperatorProcess(
        kube, NAMESPACE, tmp_path, extra_args=["--prometheus-url", prometheus.url], env=otel
    )
    with operator:
        apply_object(kube, manifest(NAMESPACE, V1, "1"))
        wait_for(lambda: reader.is_true(NAMESPACE, NAME, "Ready"), timeout=60, what="Ready")

        def of_mine(spans: list[ExportedSpan], name: str) -> list[ExportedSpan]:
            return [
                s
                for s in spans
                if s.name == name
                and s.attributes.get("k8s.namespace.name") == NAMESPACE
                and s.attributes.get("modeldeploy.name") == NAME
            ]

        rounds = collector.wait_for(lambda spans: of_mine(spans, "analysis round"), timeout=60)
        analysed = rounds[0]
        assert analysed.service == "modeldeploy-operator"
        assert analysed.attributes["modeldeploy.track"] == "stable"
        stable = reader.status(NAMESPACE, NAME)["stableRevision"]
        assert analysed.attributes["modeldeploy.revision"] == stable
        assert analysed.attributes["modeldeploy.verdict"] == "inconclusive"
        assert analysed.attributes["modeldeploy.outcome"] == "no_data"
        assert analysed.attributes["modeldeploy.samples"] == 0
        assert analysed.attributes["modeldeploy.rollback"] is False
        checks = analysed.attributes["modeldeploy.checks"]
        assert any(check.startswith("feature-psi inconclusive") for check in checks), checks

        def parent(spans: list[ExportedSpan]) -> list[ExportedSpan]:
            return [s for s in of_mine(spans, "reconcile") if s.span_id == analysed.parent_span_id]

        [reconcile] = collector.wait_for(parent)
        assert reconcile.trace_id == analysed.trace_id
        assert reconcile.parent_span_id == ""  # a reconcile starts its own trace
        assert reconcile.attributes["modeldeploy.phase.after"] in get_args(Phase)
        assert isinstance(reconcile.attributes["modeldeploy.writes"], int)

    # The first reconcile created the revision: its span says so.
    reconciles = of_mine(collector.spans(), "reconcile")
    first = next(s for s in reconciles if s.attributes["modeldeploy.phase.before"] == "")
    assert first.attributes["modeldeploy.writes"] > 0
    assert first.attributes["modeldeploy.event_reasons"] == ["Deploying"]
    assert first.attributes["modeldeploy.events"] == 1
