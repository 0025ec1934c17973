"""The real operator as a subprocess against the session cluster, and tools to watch it.

Reusable by every test that needs the operator (core, analysis, end to end):

    ensure_crd(kube); ensure_namespace(kube, "my-ns")
    with OperatorProcess(kube, "my-ns", tmp_path) as op:      # `modeldeploy operator`
        apply_object(kube, model_deployment("churn", "my-ns", IMAGE))
        api = ClusterReader(kube); wait_for(lambda: api.condition("my-ns", "churn", "Ready"))
        with WarmWatcher(api, "my-ns", "churn", min_warm=2) as watcher: ...
        watcher.assert_never_below()

Only 127.0.0.1 is ever dialled: the apiserver of the kwokctl cluster and the operator's own
liveness endpoint.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy.api import GROUP, PLURAL, VERSION
from modeldeploy.crd import CRD_FILENAME, CRD_NAME
from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.tools import free_port
from modeldeploy.kube import Kube
from modeldeploy.resources.kinds import OWNED_KINDS
from modeldeploy.resources.names import LABEL_NAME, LABEL_TRACK

ROOT = Path(__file__).resolve().parents[2]
WRITE_MARK = "write "  # what modeldeploy.kube logs for every API write
READ_MARK = "read "  # ... and for every API read (the watch cache's streams apart)
Body = dict[str, Any]


def wait_for(
    condition: Callable[[], Any], timeout: float = 60, interval: float = 0.2, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout}s")
        time.sleep(interval)


def ensure_crd(kube: KwokCluster) -> None:
    applied = kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / CRD_FILENAME),
        check=False,
    )  # fmt: skip
    assert applied.returncode == 0, f"the apiserver refused the CRD:\n{applied.stderr}"

    def established() -> bool:
        got = kube.kubectl("get", "crd", CRD_NAME, "-o", "json", check=False)
        conditions = (
            (json.loads(got.stdout).get("status") or {}).get("conditions") or []
            if got.stdout
            else []
        )
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for(established, timeout=60, what=f"CRD {CRD_NAME} established")


def ensure_namespace(kube: KwokCluster, namespace: str) -> None:
    exists = kube.kubectl("get", "namespace", namespace, check=False).returncode == 0
    if not exists:
        kube.kubectl("create", "namespace", namespace)


def model_deployment(name: str, namespace: str, image: str, **spec: Any) -> Body:
    """A ModelDeployment with short test-friendly durations; `spec` overrides top-level
    spec fields."""
    body: Body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": name, "version": "1"},
            "image": image,
            "imagePolicy": "allowTags",
            "replicas": {"minWarm": 2, "max": 6},
            "rollout": {"canary": {"steps": [25, 50]}, "stepInterval": "3s", "bakeTime": "5s"},
            "analysis": {"interval": "1s", "window": "1s"},
            "warmup": {"timeout": "2m"},
        },
    }
    body["spec"].update(spec)
    return body


def kubectl(kube: KwokCluster, *args: str, input: str | None = None) -> str:
    """kubectl that fails with its error message."""
    result = kube.kubectl(*args, input=input, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def apply_object(kube: KwokCluster, body: Body) -> None:
    kubectl(kube, "apply", "-f", "-", input=json.dumps(body))


def patch_model_deployment(kube: KwokCluster, namespace: str, name: str, patch: Body) -> None:
    kubectl(
        kube, "patch", f"{PLURAL}.{GROUP}", name, "-n", namespace, "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip


def lease_holder(kube: KwokCluster, namespace: str, name: str) -> str:
    """holderIdentity of the leader Lease `namespace/name` ("" while none holds it or it
    does not exist yet)."""
    answer = kube.kubectl(
        "get", "lease", name, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}",
        check=False,
    )  # fmt: skip
    return answer.stdout.strip() if answer.returncode == 0 else ""


def annotate(kube: KwokCluster, namespace: str, name: str, key: str, value: str) -> None:
    patch_model_deployment(kube, namespace, name, {"metadata": {"annotations": {key: value}}})


class OperatorProcess:
    """`modeldeploy operator --namespace <ns>` (no --namespace when None: every namespace)
    with KUBECONFIG of the test cluster (`env` may name another), reconciling what is due
    every `interval` seconds and everything every `resync` seconds (None: the operator's
    defaults); its log (every API write is a
    `write <METHOD> <path>` line) goes to `workdir/operator-N.log`."""

    def __init__(
        self,
        kube: KwokCluster,
        namespace: str | None,
        workdir: Path,
        *,
        interval: float | None = 1.0,
        resync: float | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.workdir = workdir
        self.interval = interval
        self.resync = resync
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "operator-0.log"
        self.liveness_url = ""
        self.started = 0

    def command(self, port: int) -> list[str]:
        script = shutil.which("modeldeploy", path=str(Path(sys.executable).parent))
        base = [script] if script else [sys.executable, "-m", "modeldeploy.cli"]
        return [
            *base, "operator",
            *(["--namespace", self.namespace] if self.namespace is not None else []),
            *(["--interval", str(self.interval)] if self.interval is not None else []),
            *(["--resync", str(self.resync)] if self.resync is not None else []),
            "--liveness", f"http://127.0.0.1:{port}/healthz",
            "--metrics-port", "0",  # many operators share this machine; tests opt in
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        port = free_port()
        self.log_path = self.workdir / f"operator-{self.started}.log"
        self.started += 1
        env = {**os.environ, "KUBECONFIG": str(self.kube.kubeconfig), **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(port), env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}/healthz"
        self.liveness_url = url

        def live() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"operator exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_for(live, timeout, what="operator liveness")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stats(self) -> dict[str, Any]:
        """The operator's counters from its liveness endpoint (refreshed every 10 s)."""
        with urllib.request.urlopen(self.liveness_url, timeout=5) as response:
            stats: dict[str, Any] = json.load(response).get("stats", {})
            return stats

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def writes(self, since: int = 0) -> list[str]:
        """API writes logged since byte offset `since` of the current log."""
        text = self.log()[since:]
        return [line for line in text.splitlines() if f" {WRITE_MARK}" in line]

    def requests(self, since: int = 0) -> list[str]:
        """API requests (reads and writes) logged since byte offset `since`."""
        text = self.log()[since:]
        marks = (f" {WRITE_MARK}", f" {READ_MARK}")
        return [line for line in text.splitlines() if any(m in line for m in marks)]

    def mark(self) -> int:
        return len(self.log())

    def __enter__(self) -> "OperatorProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class OperatorKiller:
    """SIGKILLs `operator` `limit` times at random moments in a thread (gaps drawn from `gap`
    seconds, down for up to `max_down` seconds each time), starting it again each time;
    notes what `moment()` said at each kill. Leaves the operator running."""

    operator: OperatorProcess
    rng: random.Random
    moment: Callable[[], str]
    limit: int
    gap: tuple[float, float] = (2.0, 8.0)
    max_down: float = 2.0
    first_work: float = 30.0  # at most, seconds a started operator has to touch a ModelDeployment
    kills: list[str] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _await_work(self) -> None:
        """A gap counts from the operator's first request about a ModelDeployment, not from
        its liveness: on a loaded machine the first reconcile can come seconds after it, and
        kills before it would test start-up only."""
        deadline = time.monotonic() + self.first_work
        while time.monotonic() < deadline and not self._stop.is_set():
            if any("/modeldeployments/" in line for line in self.operator.requests()):
                return
            time.sleep(0.2)

    def _loop(self) -> None:
        try:
            while not self.done:
                self._await_work()
                if self._stop.wait(self.rng.uniform(*self.gap)):
                    break
                try:
                    seen = self.moment()
                except Exception as err:  # a read that failed is no reason to stop killing
                    seen = f"unread ({type(err).__name__})"
                self.operator.kill()
                self.kills.append(seen)
                time.sleep(self.rng.uniform(0.0, self.max_down))
                self.operator.start()
        except BaseException as err:  # re-raised in the test's thread on exit
            self.error = err

    @property
    def done(self) -> bool:
        return len(self.kills) >= self.limit

    def __enter__(self) -> "OperatorKiller":
        self._thread = threading.Thread(target=self._loop, daemon=True, name="killer")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        if self.operator.process is None or self.operator.process.poll() is not None:
            self.operator.start()
        if self.error is not None:
            raise self.error


class ClusterReader:
    """Reads straight from the apiserver (no cache), for assertions."""

    def __init__(self, kube: KwokCluster) -> None:
        self.api = Kube(str(kube.kubeconfig))

    def model_deployment(self, namespace: str, name: str) -> Body:
        body = self.api.get_model_deployment(namespace, name)
        assert body is not None, f"ModelDeployment {namespace}/{name} is gone"
        return body

    def status(self, namespace: str, name: str) -> Body:
        status: Body = self.model_deployment(namespace, name).get("status") or {}
        return status

    def condition(self, namespace: str, name: str, kind: str) -> Body:
        for cond in self.status(namespace, name).get("conditions") or []:
            if cond["type"] == kind:
                return dict(cond)
        return {}

    def is_true(self, namespace: str, name: str, kind: str) -> bool:
        return self.condition(namespace, name, kind).get("status") == "True"

    def items(self, path: str, name: str | None = None) -> list[Body]:
        query = {"labelSelector": f"{LABEL_NAME}={name}"} if name else None
        items: list[Body] = self.api.get(path, query).get("items") or []
        return items

    def labelled(self, kind: str, namespace: str, name: str) -> dict[str, Body]:
        """The objects of an owned kind labelled with `name`, by their name."""
        path = OWNED_KINDS[kind].collection(namespace)
        return {o["metadata"]["name"]: o for o in self.items(path, name)}

    def deployments(self, namespace: str, name: str) -> dict[str, Body]:
        return self.labelled("Deployment", namespace, name)

    def services(self, namespace: str, name: str) -> dict[str, Body]:
        return self.labelled("Service", namespace, name)

    def hpas(self, namespace: str, name: str) -> dict[str, Body]:
        return self.labelled("HorizontalPodAutoscaler", namespace, name)

    def pdbs(self, namespace: str, name: str) -> dict[str, Body]:
        return self.labelled("PodDisruptionBudget", namespace, name)

    def owned(self, namespace: str, name: str) -> dict[str, Body]:
        """Every owned object by `Kind/name`."""
        return {
            f"{kind}/{n}": body
            for kind in OWNED_KINDS
            for n, body in self.labelled(kind, namespace, name).items()
        }

    def by_track(self, namespace: str, name: str, track: str) -> list[Body]:
        return [
            d
            for d in self.deployments(namespace, name).values()
            if d["metadata"]["labels"].get(LABEL_TRACK) == track
        ]


def ready(deployment: Body) -> int:
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def serving(deployments: dict[str, Body], selector: dict[str, str]) -> int:
    """Ready pods behind a Service selector (pods carry their Deployment's template labels)."""
    return sum(
        ready(d)
        for d in deployments.values()
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    )


@dataclass
class WarmWatcher:
    """Samples the cluster every `period` seconds *while* things happen and records every
    moment with fewer than `min_warm` Ready pods on the stable Deployment, or behind the
    client Service `<name>`."""

    reader: ClusterReader
    namespace: str
    name: str
    min_warm: int
    period: float = 0.2
    samples: int = 0
    violations: list[str] = field(default_factory=list)
    lowest_stable: int = 1_000_000
    lowest_serving: int = 1_000_000
    failed_samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        deployments = self.reader.deployments(self.namespace, self.name)
        client = self.reader.services(self.namespace, self.name).get(self.name)
        stable = [
            ready(d)
            for d in deployments.values()
            if d["metadata"]["labels"].get(LABEL_TRACK) == "stable"
        ]
        best_stable = max(stable, default=0)
        behind = serving(deployments, client["spec"]["selector"]) if client else 0
        self.samples += 1
        self.lowest_stable = min(self.lowest_stable, best_stable)
        self.lowest_serving = min(self.lowest_serving, behind)
        if best_stable < self.min_warm or behind < self.min_warm:
            tracks = {
                n: (d["metadata"]["labels"].get(LABEL_TRACK), ready(d))
                for n, d in deployments.items()
            }
            self.violations.append(
                f"t={time.monotonic():.1f} stable={best_stable} serving={behind} {tracks}"
            )

    def _sample_or_count(self) -> None:
        try:
            self.sample()
        except Exception:  # a transient read error is no violation; counted
            self.failed_samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample_or_count()
            self._stop.wait(self.period)

    def __enter__(self) -> "WarmWatcher":
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sample_or_count()  # the end state too, however short the window was

    def assert_never_below(self) -> None:
        # A fast rollout may last a second: what matters is that the watch saw its start,
        # its end and sampled in between, not how many times.
        assert self.samples >= 3, f"only {self.samples} samples"
        assert self.failed_samples < self.samples, f"{self.failed_samples} reads failed"
        assert not self.violations, "\n".join(self.violations[:10])


def printed(label: str, seconds: float) -> None:
    print(f"[timing] {label}: {seconds:.2f}s")


@contextmanager
def operator_in(
    kube: KwokCluster, namespace: str, workdir: Path, extra_args: Sequence[str] = ()
) -> Iterator["OperatorProcess"]:
    """An operator watching `namespace` (created, with the CRD, when missing)."""
    ensure_crd(kube)
    ensure_namespace(kube, namespace)
    with OperatorProcess(kube, namespace, workdir, extra_args=extra_args) as op:
        yield op


@contextmanager
def operator_with(
    kube: KwokCluster,
    reader: "ClusterReader",
    body: Body,
    workdir: Path,
    extra_args: Sequence[str] = (),
) -> Iterator["OperatorProcess"]:
    """An operator watching `body`'s namespace, with `body` applied and Ready."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    with operator_in(kube, namespace, workdir, extra_args) as op:
        apply_object(kube, body)
        wait_for(lambda: reader.is_true(namespace, name, "Ready"), timeout=60)
        yield op
