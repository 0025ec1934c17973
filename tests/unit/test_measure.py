"""The analysis' I/O shell with a fake Prometheus and a fake Kubernetes client: which
Prometheus with which credentials, bounded rounds, never raising; and what the pure
conclusion makes of what it measured."""

import base64
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modeldeploy import contract
from modeldeploy.analysis.data import LabelValues, QueryResult, QueryStatus
from modeldeploy.analysis.endpoints import SECRET_ENDPOINT_LABEL
from modeldeploy.analysis.prometheus import PrometheusAuth
from modeldeploy.analysis.rounds import HOLD, conclude
from modeldeploy.api import AnalysisResult, ModelDeploymentSpec, ModelDeploymentStatus
from modeldeploy.kube import KubeError
from modeldeploy.measure import (
    AnalysisSettings,
    CredentialsError,
    Measure,
    auth_from_values,
    decode_secret_data,
    read_auth_dir,
)
from modeldeploy.rollout import NO_ANALYSIS, AnalysisInput, AnalysisSignal, Event, Subject, World
from modeldeploy.rollout.world import ObservedDeployment

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
URL = "http://127.0.0.1:9"
TEAM_URL = "http://127.0.0.1:9999"
IMAGE = "registry.example/churn@sha256:" + "1" * 64
FAST = {("0.025",): 300.0, ("0.05",): 300.0, ("+Inf",): 300.0}
SLOW = {("0.025",): 0.0, ("0.05",): 10.0, ("0.1",): 300.0, ("+Inf",): 300.0}


class FakePrometheus:
    """Answers by metric name; `gate` makes every query wait until it is set."""

    def __init__(self, latency: Mapping[LabelValues, float], requests: float = 300) -> None:
        self.answers = {
            contract.MODEL_INFO: {(): 1.0},
            contract.REQUESTS_TOTAL: {("200",): requests},
            contract.REQUEST_DURATION_SECONDS: dict(latency),
        }
        self.asked: list[str] = []
        self.instants: set[float | None] = set()
        self.gate: threading.Event | None = None
        self.closed = False

    def query(self, promql: str, by: Sequence[str] = (), at: float | None = None) -> QueryResult:
        self.asked.append(promql)
        self.instants.add(at)
        if self.gate is not None:
            self.gate.wait(5)
        for metric, values in self.answers.items():
            if metric in promql:
                return QueryResult.of(values)
        return QueryResult.of({})

    def close(self) -> None:
        self.closed = True


class FakeKube:
    """Secrets by name; each labelled for the endpoint `team` unless `labels` says else."""

    def __init__(
        self,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.secrets = dict(secrets or {})
        self.labels = dict(labels or {})
        self.events: list[Event] = []
        self.read: list[str] = []

    def get(self, path: str, query: Any = None) -> Any:
        self.read.append(path)
        name = path.rsplit("/", 1)[-1]
        if name not in self.secrets:
            raise KubeError(404, f'secrets "{name}" not found')
        data = {k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[name].items()}
        labels = self.labels.get(name, {SECRET_ENDPOINT_LABEL: "team"})
        return {"metadata": {"name": name, "labels": labels}, "data": data}


class Connector:
    def __init__(self, provider: FakePrometheus) -> None:
        self.provider = provider
        self.calls: list[tuple[str, PrometheusAuth | None]] = []

    def __call__(self, url: str, auth: PrometheusAuth | None) -> FakePrometheus:
        self.calls.append((url, auth))
        return self.provider


ANALYSIS = {
    "interval": "2s",
    "window": "30s",
    "minSamples": 200,
    "failureLimit": 2,
    "latency": {"p95Ms": 50},
    "errorRate": {"max": 1},
    "invalidInputRate": {"maxIncrease": 1},
    "fallbackRate": {"maxIncrease": 1},
    "drift": {"enabled": False},
    "golden": {"enabled": False},
}


def canary_subject(status: ModelDeploymentStatus | None = None, **spec: Any) -> Subject:
    body = {"model": {"name": "churn", "version": "2"}, "image": IMAGE, "analysis": ANALYSIS}
    status = status or ModelDeploymentStatus(
        phase="Progressing", stable_revision="s", canary_revision="c"
    )
    return Subject("churn", "ml", "uid", 1, ModelDeploymentSpec.model_validate(body | spec), status)


WORLD = World(
    {
        f"churn-{rev}": ObservedDeployment(f"churn-{rev}", rev, None, 2, 2, None, None)
        for rev in ("s", "c")
    }
)


class Judge:
    """Measure (the shell), then conclude (pure), as one reconcile does: the Events the
    conclusion asks for are collected in `events`."""

    def __init__(self, measure: Measure) -> None:
        self.measure = measure
        self.events: list[Event] = []

    def __call__(self, subject: Subject, world: World, now: datetime) -> AnalysisInput:
        analysis, events = conclude(subject, self.measure(subject, world, now), now)
        self.events += events
        return analysis


def judge_with(
    provider: FakePrometheus, kube: FakeKube | None = None, **settings: Any
) -> tuple[Judge, Connector]:
    connector = Connector(provider)
    options = {"prometheus_url": URL, "endpoints": {"team": TEAM_URL}, **settings}
    measure = Measure(kube, AnalysisSettings(**options), connect=connector)  # type: ignore[arg-type]
    return Judge(measure), connector


def recorded(previous: Subject, signal: AnalysisSignal) -> Subject:
    """The subject as the state machine leaves it after recording `signal`."""
    status = previous.status.model_copy(
        update={
            "last_analysis": AnalysisResult(
                time=signal.time,
                revision=signal.revision,
                verdict=signal.verdict,
                samples=signal.samples,
                checks=list(signal.checks),
                since=signal.since,
                waiting=signal.waiting,
            ),
            "consecutive_failures": signal.consecutive_failures,
            "no_data_since": signal.no_data_since,
        }
    )
    return Subject(previous.name, previous.namespace, previous.uid, 1, previous.spec, status)


def test_without_any_prometheus_analysis_is_off_and_said_once() -> None:
    judge = Judge(Measure(FakeKube(), AnalysisSettings()))  # type: ignore[arg-type]
    analysis = judge(canary_subject(), WORLD, T0)
    assert (analysis.gated, analysis.signal) == (False, None)  # steps advance on time
    assert "no Prometheus to analyse with" in analysis.disabled
    assert judge.events == []  # said by the machine when a rollout starts
    assert (
        judge(
            canary_subject(
                analysis={
                    "drift": {"enabled": False},
                    "golden": {"enabled": False},
                    "errorRate": {"max": 1},
                    "invalidInputRate": {"maxIncrease": 1},
                    "fallbackRate": {"maxIncrease": 1},
                }
            ),
            WORLD,
            T0,
        )
        is NO_ANALYSIS
    )


def test_a_slow_canary_fails_and_rolls_back_at_once() -> None:
    judge, _ = judge_with(FakePrometheus(SLOW))
    md = canary_subject()
    first = judge(md, WORLD, T0).signal
    assert first is not None
    # A sequential test's failure is final: no second round (failureLimit) needed.
    assert (first.revision, first.verdict, first.rollback) == ("c", "fail", True)
    assert "latency-p95: p95 97.4 ms (max 50 ms)" in first.reason
    assert (first.since, first.consecutive_failures) == (T0, 1)


def test_queries_select_the_revision_and_namespace() -> None:
    provider = FakePrometheus(FAST)
    judge, _ = judge_with(provider, namespace_label="kubernetes_namespace")
    signal = judge(canary_subject(), WORLD, T0).signal
    assert signal is not None
    assert signal.verdict == "pass"
    assert provider.asked
    assert all('revision="c"' in q and 'kubernetes_namespace="ml"' in q for q in provider.asked)


def test_a_round_is_asked_at_the_whole_second_status_records_it_at() -> None:
    provider = FakePrometheus(FAST)
    judge, _ = judge_with(provider)
    now = T0 + timedelta(seconds=3, microseconds=870_000)
    signal = judge(canary_subject(), WORLD, now).signal
    assert signal is not None
    # The report replays the round at its recorded `time`: the same instant, not 0.87 s earlier.
    assert provider.instants == {(T0 + timedelta(seconds=3)).timestamp()}


def test_a_round_waits_for_prometheus_at_most_round_timeout() -> None:
    provider = FakePrometheus(FAST)
    provider.gate = threading.Event()
    judge, _ = judge_with(provider, round_timeout=0.2)
    try:
        signal = judge(canary_subject(), WORLD, T0).signal
    finally:
        provider.gate.set()
        judge.measure.close()
    assert signal is not None
    assert (signal.verdict, signal.rollback) == ("inconclusive", False)
    assert signal.no_data_since == T0
    assert "no answer within 0.2s" in signal.reason


def test_credentials_come_from_the_secret_the_spec_names() -> None:
    provider = FakePrometheus(FAST)
    kube = FakeKube({"prom": {"token": "s3cret\n"}})
    judge, connector = judge_with(provider, kube)
    prometheus = {"endpoint": "team", "auth": {"secretRef": {"name": "prom"}}}
    signal = judge(canary_subject(prometheus=prometheus), WORLD, T0).signal
    assert signal is not None
    assert signal.verdict == "pass"
    assert connector.calls == [(TEAM_URL, PrometheusAuth(bearer_token="s3cret"))]
    assert kube.read == ["/api/v1/namespaces/ml/secrets/prom"]


def test_a_legacy_url_is_honoured_only_as_one_of_the_endpoints() -> None:
    kube = FakeKube()
    judge, connector = judge_with(FakePrometheus(FAST), kube)
    signal = judge(canary_subject(prometheus={"url": TEAM_URL + "/"}), WORLD, T0).signal
    assert signal is not None
    assert signal.verdict == "pass"
    assert connector.calls == [(TEAM_URL, None)]
    elsewhere = canary_subject(prometheus={"url": "http://127.0.0.1:8888"})
    for second in range(2):
        refused = judge(elsewhere, WORLD, T0 + timedelta(seconds=2 * second)).signal
        assert refused is not None
        assert (refused.verdict, refused.rollback) == ("inconclusive", False)
        assert "Prometheus refused: spec.prometheus.url is not the URL of one" in refused.reason
        elsewhere = recorded(elsewhere, refused)
    assert len(connector.calls) == 1
    assert [e.reason for e in judge.events] == ["PrometheusRefused"]  # once: status says so
    assert "name one with spec.prometheus.endpoint" in judge.events[0].message


def test_an_endpoint_the_operator_does_not_list_is_refused() -> None:
    kube = FakeKube()
    judge, connector = judge_with(FakePrometheus(FAST), kube)
    signal = judge(canary_subject(prometheus={"endpoint": "nope"}), WORLD, T0).signal
    assert signal is not None
    assert signal.verdict == "inconclusive"
    assert connector.calls == []
    assert judge.events[0].reason == "PrometheusRefused"
    assert "'nope' is not one of the operator's Prometheus endpoints (default, team)" in (
        judge.events[0].message
    )


@pytest.mark.parametrize("labels", [{}, {SECRET_ENDPOINT_LABEL: "default"}])
def test_a_secret_not_labelled_for_the_endpoint_is_never_sent(labels: dict[str, str]) -> None:
    provider = FakePrometheus(FAST)
    kube = FakeKube({"other": {"token": "not-for-prometheus"}}, labels={"other": labels})
    judge, connector = judge_with(provider, kube)
    prometheus = {"endpoint": "team", "auth": {"secretRef": {"name": "other"}}}
    signal = judge(canary_subject(prometheus=prometheus), WORLD, T0).signal
    assert signal is not None
    assert signal.verdict == "inconclusive"
    assert connector.calls == []
    assert provider.asked == []
    assert judge.events[0].reason == "PrometheusRefused"
    assert (
        "Secret ml/other may not be sent to Prometheus endpoint 'team': an admin allows it "
        f"with the label {SECRET_ENDPOINT_LABEL}=team"
    ) in judge.events[0].message
    assert "not-for-prometheus" not in signal.reason


def test_unreadable_credentials_are_no_data_never_a_pass() -> None:
    provider = FakePrometheus(FAST)
    kube = FakeKube({"prom": {"user": "x"}})
    judge, connector = judge_with(provider, kube)
    for secret in ("missing", "prom"):
        auth = {"type": "basic", "secretRef": {"name": secret}}
        md = canary_subject(prometheus={"endpoint": "team", "auth": auth})
        signal = judge(md, WORLD, T0).signal
        assert signal is not None
        assert (signal.verdict, signal.rollback) == ("inconclusive", False)
        assert "Prometheus credentials" in signal.reason
    assert connector.calls == []
    assert provider.asked == []
    assert [e.reason for e in judge.events] == ["AnalysisNoData", "AnalysisNoData"]


def test_operator_credentials_go_to_its_default_prometheus_only(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("operator-token\n")
    judge, connector = judge_with(FakePrometheus(FAST), auth_type="bearer", auth_dir=tmp_path)
    judge(canary_subject(), WORLD, T0)
    judge(canary_subject(prometheus={"endpoint": "team"}), WORLD, T0)
    assert connector.calls == [
        (URL, PrometheusAuth(bearer_token="operator-token")),
        (TEAM_URL, None),
    ]


def test_credentials_parsing() -> None:
    assert auth_from_values("basic", {"username": "u", "password": "p"}, "S") == PrometheusAuth(
        username="u", password="p"
    )
    with pytest.raises(CredentialsError, match="S has no token"):
        auth_from_values("bearer", {"token": ""}, "S")
    assert decode_secret_data({"token": base64.b64encode(b"t \n").decode()}, "S") == {"token": "t"}
    with pytest.raises(CredentialsError, match="not base64"):
        decode_secret_data({"token": "%%%"}, "S")


def test_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "username").write_text("u")
    with pytest.raises(CredentialsError, match="cannot read"):
        read_auth_dir("basic", tmp_path)
    (tmp_path / "password").write_text("p\n")
    assert read_auth_dir("basic", tmp_path) == PrometheusAuth(username="u", password="p")


def test_an_unexpected_error_holds_the_canary() -> None:
    def broken(url: str, auth: PrometheusAuth | None) -> FakePrometheus:
        raise RuntimeError("boom")

    judge = Judge(Measure(None, AnalysisSettings(prometheus_url=URL), connect=broken))
    assert judge(canary_subject(), WORLD, T0) == HOLD


def test_waiting_is_reported_once_per_change() -> None:
    kube = FakeKube()
    few = dict.fromkeys(FAST, 50.0)
    judge, _ = judge_with(FakePrometheus(few, requests=50), kube)
    md = canary_subject()
    now = T0
    for _ in range(3):
        signal = judge(md, WORLD, now).signal
        assert signal is not None
        assert signal.verdict == "inconclusive"
        md, now = recorded(md, signal), now + timedelta(seconds=2)
    assert [e.reason for e in judge.events] == ["AnalysisInconclusive"]
    assert "n=50, 200 samples needed" in judge.events[0].message


def test_the_stable_is_judged_when_no_canary_runs() -> None:
    judge, _ = judge_with(FakePrometheus(FAST))
    stable = ModelDeploymentStatus(phase="Stable", stable_revision="s")
    analysis = {**ANALYSIS, "drift": {"enabled": True}}
    assert judge(canary_subject(stable), WORLD, T0) == HOLD  # drift off: nothing to judge
    signal = judge(canary_subject(stable, analysis=analysis), WORLD, T0).signal
    assert signal is not None
    assert signal.revision == "s"
    assert not signal.rollback
    # The fake has no feature bins: the drift checks have no data.
    assert signal.verdict == "inconclusive"
    assert {c.name for c in signal.checks} == {"feature-psi", "missing-rate"}


def test_settings_refuse_credentials_without_a_directory() -> None:
    with pytest.raises(ValueError, match="credentials directory"):
        AnalysisSettings(auth_type="bearer")
    assert QueryStatus.UNREACHABLE.value == "unreachable"


def test_the_operator_loads_numpy_and_scipy_only_for_a_round() -> None:
    """They are most of its memory; ModelDeployments without analysis never need them."""
    probe = "import sys, modeldeploy.cli, modeldeploy.handlers; print(*sys.modules, sep='\\n')"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    packages = {module.split(".")[0] for module in run.stdout.splitlines()}
    assert not {"numpy", "scipy", "pandas"} & packages
