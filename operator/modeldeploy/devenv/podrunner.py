"""The pod runner: real model servers behind kwok's container-less pods.

It watches the pods of ModelDeployments (label `modeldeploy.io/name`) and, for each Running
pod whose image it can serve, runs one model server on a free 127.0.0.1 port with the pod's
env: in process mode (an `ImageMap`) a local `modeldeploy serve` process; in container mode
(`ContainerImages`) the pod's own image, pulled by podman from the local registry by the
pod's reference and run as a container. It stops the server when the pod goes, restarts it
with a backoff when it exits, publishes the servers as Prometheus file_sd targets labelled
with the pod, and writes the pod -> 127.0.0.1:port mapping for the load generator.

It reports each served pod's container status as a kubelet would: ContainerCreating while
pulling, ErrImagePull then ImagePullBackOff when the image cannot be pulled, running with
restartCount, and CrashLoopBackOff with the last exit code and termination message when the
server exits. As a kubelet does, it hands every start a fresh, empty termination message
file (mounted at a container's terminationMessagePath; a process gets its path in
MODELDEPLOY_TERMINATION_LOG) and reads it after the exit; left empty after a failed exit,
FallbackToLogsOnError takes the end of that run's log instead.

With `reflect_readiness` (the default) it also owns the pods' Ready condition: Ready is True
only while the process answers its readiness path (the pod's readiness probe path) with 200,
as a kubelet would. While it runs, a kwok Stage of its own (`devenv.kwokstages`) starts the
pods it serves Running but not Ready, where kwok's default would mark them Ready at once;
on a cluster whose kwok has only its built-in Stages the runner sets Ready back to False as
soon as it sees the pod. kwok's `pod-ready` Stage only matches Pending pods, so the runner's
condition sticks.

    runner = PodRunner(RunnerConfig(ImageMap.load(path), state_dir, namespace="ml",
                                    targets_dir=prometheus.targets_dir))
    with runner:                      # prepares images, starts watching
        runner.endpoints()            # what runs: [Endpoint(pod, address, ready, ...)]

A pod env value naming a cluster Service by its DNS name (the stable's shadow URL,
`http://<name>-canary.<namespace>.svc`) is given to the process as the address of a local
forwarder of that Service (`devenv.forwarder`), which spreads the requests over the Ready
local endpoints behind it; the forwarder lives while a served pod names its Service.

A pod of an external V2 server (spec.externalServer: the server's container plus the
operator's `modeldeploy proxy` beside it) runs as two local processes: the server, as its
image's map entry says (e.g. `server: mlserver`), on a port of its own, and the proxy
container's own command, with the files its init containers copy out of the model image
(`cp` from the entry's build output, which stands for the image's root) in a directory of
the pod's and its upstream URL on that port. The proxy is the pod's process (its port, its
readiness, its targets); the server is its companion, stopped and restarted with it.

Traffic only ever goes to 127.0.0.1: the pod's addresses are never read.
"""

import fcntl
import functools
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, cast

import httpx

from modeldeploy.contract import ENV_SERVE_HOST, ENV_SERVE_PORT, ENV_TERMINATION_LOG
from modeldeploy.devenv.children import Child, reap_recorded, record_children, stop_all
from modeldeploy.devenv.containers import (
    LOOPBACK_REGISTRY,
    ContainerImages,
    ContainerLaunch,
    container_name,
    remove_containers,
    runner_label,
)
from modeldeploy.devenv.endpoints import Endpoint, Published, write_published
from modeldeploy.devenv.forwarder import Forwarders
from modeldeploy.devenv.imagemap import (
    DEFAULT_READY_PATH,
    LOOPBACK,
    ImageMap,
    Launch,
    default_build_root,
)
from modeldeploy.devenv.kubewatch import ObjectWatcher, core_api
from modeldeploy.devenv.kwokstages import (
    DEFAULT_POD_READY,
    STAGE_GROUP,
    STAGE_PLURAL,
    STAGE_VERSION,
    ImageRule,
    served_pods_stage,
)
from modeldeploy.devenv.pods import (
    FALLBACK_LOG_BYTES,
    MAX_TERMINATION_MESSAGE_BYTES,
    ContainerReport,
    PodKey,
    PodView,
    plan_processes,
    pod_view,
    service_members,
    status_patch,
    target_labels,
    termination_message,
)
from modeldeploy.devenv.prometheus import write_targets
from modeldeploy.devenv.tools import cache_dir, free_port
from modeldeploy.resources.names import LABEL_FALLBACK, LABEL_NAME
from modeldeploy.serving.process import modeldeploy_command

log = logging.getLogger("modeldeploy.podrunner")

MAX_PROCESSES_LIMIT = 100
ENDPOINTS_FILE = "endpoints.json"
CHILDREN_FILE = "children.json"
LOCK_FILE = "runner.lock"
DEFAULT_JOB = "modeldeploy-pods"
STOP_GRACE_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 30.0
# A failed pull is reported as ErrImagePull, then (as a kubelet does) as ImagePullBackOff
# while the next attempt waits.
PULL_ERROR_SHOWN_SECONDS = 1.0


def default_state_dir() -> Path:
    return cache_dir() / "pod-runner"


@dataclass(frozen=True)
class RunnerConfig:
    image_map: ImageMap | ContainerImages  # process mode | container mode
    state_dir: Path  # endpoints.json, children.json, logs/
    namespace: str | None = None  # None: all namespaces
    targets_dir: Path | None = None  # Prometheus file_sd directory; None: no targets
    job: str = DEFAULT_JOB  # file_sd file name and `job` label
    max_processes: int = 20
    max_starting: int = 4  # processes warming up at once (each loads a model: CPU-bound)
    reflect_readiness: bool = True
    tick: float = 0.5  # seconds between reconciles when nothing changes
    probe_period: float = 1.0
    resync: float = 15.0  # watch restarts and relists at least this often
    build_root: Path = field(default_factory=default_build_root)

    def __post_init__(self) -> None:
        if not 1 <= self.max_processes <= MAX_PROCESSES_LIMIT:
            raise ValueError(f"max_processes must be in 1..{MAX_PROCESSES_LIMIT}")


@dataclass
class _Served:
    """One pod's server: a local process or a container (restarted on a fresh port when it
    exits); in container mode `child` is first the image pull."""

    view: PodView
    launch: Launch | ContainerLaunch
    child: Child | None = None
    pulling: bool = False
    port: int = 0
    ready: bool = False
    restarts: int = 0
    next_start: float = 0.0
    next_probe: float = 0.0
    started_at: str | None = None  # the running server's start (RFC 3339)
    pull_error: tuple[float, str] | None = None  # when the last pull failed, and why
    pull_failures: int = 0  # in a row
    last_exit: tuple[int, str] | None = None  # exit code, termination message of the last run
    companion: Child | None = None  # an external server's process, beside its proxy (child)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def running(self) -> bool:
        return self.child is not None and self.child.running()

    def ready_url(self) -> str:
        path = self.launch.ready_path or self.view.ready_path or DEFAULT_READY_PATH
        return f"http://{self.address}{path}"


def process_env(pod_env: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment without its own MODELDEPLOY_* settings, plus the pod's."""
    return {
        **{k: v for k, v in base.items() if not k.startswith("MODELDEPLOY_")},
        **pod_env,
    }


def _log_name(key: PodKey) -> str:
    return f"{key.namespace}_{key.name}.log"


def _written(path: Path) -> bytes:
    """What a server wrote to its termination message file (a kubelet reads 4096 bytes)."""
    try:
        with path.open("rb") as file:
            return file.read(MAX_TERMINATION_MESSAGE_BYTES)
    except OSError:
        return b""


class PodRunner:
    def __init__(
        self,
        config: RunnerConfig,
        kubeconfig: str | None = None,
        say: Callable[[str], None] = log.info,
    ) -> None:
        self.config = config
        self._say = say
        self._api = core_api(kubeconfig)
        self._launches: dict[str, Launch] = {}
        self._pulled: set[str] = set()  # images pulled by this runner (IfNotPresent)
        self._label = runner_label(config.state_dir)
        self._state_lock: TextIO | None = None
        self._served: dict[PodKey, _Served] = {}
        self._stopping: list[tuple[Child, float]] = []  # SIGTERMed; SIGKILL after the time
        self._patched: dict[PodKey, tuple[ContainerReport, float]] = {}  # last written, when
        self._reported: set[str] = set()  # one-time messages already logged
        self._published: tuple[Published, list[Any]] | None = None
        self._stage_api: Any = None  # a CustomObjectsApi, once this runner made its Stage
        # Read by the forwarders' threads without the lock: the tuple is replaced whole.
        self._forwarders = Forwarders(
            lambda: self._published[0] if self._published else Published(), say
        )
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._http = httpx.Client(timeout=0.5, trust_env=False)
        # Pods of ModelDeployments and of their fallbacks (a selector cannot say "or"), and
        # the operator's Services (for the load generator: which pods each one picks).
        watch = functools.partial(
            ObjectWatcher, self._api, on_change=self._wake.set, resync=config.resync
        )
        self._pods = [
            watch("pod", config.namespace, label) for label in (LABEL_NAME, LABEL_FALLBACK)
        ]
        self._services = watch("service", config.namespace, LABEL_NAME)
        self._watchers = [*self._pods, self._services]
        self._loop = threading.Thread(target=self._run, name="pod-runner", daemon=True)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> "PodRunner":
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._claim_state_dir()
        reaped = reap_recorded(config.state_dir / CHILDREN_FILE)
        if reaped:
            self._say(f"reaped {len(reaped)} orphaned process(es) of a previous runner")
        if self.containers and (removed := remove_containers(self._label)):
            self._say(f"removed {removed} container(s) of a previous runner")
        if isinstance(config.image_map, ImageMap):
            self._launches = config.image_map.prepare(config.build_root, self._say)
        self._publish([], force=True)
        self._start_pods_unready()
        for watcher in self._watchers:
            watcher.start()
        self._loop.start()
        scope = config.namespace or "all namespaces"
        serves = (
            "images on a loopback registry, as containers"
            if self.containers
            else f"{len(self._launches)} image(s) of {config.image_map.path}"
        )
        self._say(
            f"watching pods with {LABEL_NAME} in {scope}; serving {serves}; endpoints in "
            f"{self.endpoints_path}"
        )
        return self

    @property
    def _stage_name(self) -> str:
        return f"modeldeploy-pod-runner-{self._label}"

    def _start_pods_unready(self) -> None:
        """The Stage that starts the pods this runner serves Running but not Ready, made
        from the cluster's own `pod-ready` Stage (none when kwok serves built-in Stages)."""
        if not self.config.reflect_readiness:
            return
        from kubernetes.client import CustomObjectsApi
        from kubernetes.client.exceptions import ApiException

        custom = CustomObjectsApi(self._api.api_client)
        stages = (STAGE_GROUP, STAGE_VERSION, STAGE_PLURAL)
        try:
            pod_ready = cast(
                dict[str, Any], custom.get_cluster_custom_object(*stages, DEFAULT_POD_READY)
            )
        except ApiException as err:
            if err.status != 404:
                raise
            self._say(
                "kwok serves its built-in Stages: the pods are Ready for a moment before the "
                "runner sees them and sets Ready to False until their server answers"
            )
            return
        images = (
            ImageRule.matching(LOOPBACK_REGISTRY)
            if self.containers
            else ImageRule.listed(self._launches)
        )
        labels = (LABEL_NAME, LABEL_FALLBACK)
        body = served_pods_stage(pod_ready, self._stage_name, self.config.namespace, labels, images)
        try:
            custom.create_cluster_custom_object(*stages, body)
        except ApiException as err:
            if err.status != 409:
                raise
            custom.patch_cluster_custom_object(*stages, self._stage_name, body)
        self._stage_api = custom

    def _remove_stage(self) -> None:
        if self._stage_api is None:
            return
        from kubernetes.client.exceptions import ApiException

        try:
            self._stage_api.delete_cluster_custom_object(
                STAGE_GROUP, STAGE_VERSION, STAGE_PLURAL, self._stage_name
            )
        except ApiException as err:
            if err.status != 404:
                log.warning("could not remove Stage %s: %s", self._stage_name, err.reason)
        except Exception as err:  # the cluster may be gone first; stopping goes on
            log.warning("could not remove Stage %s: %s", self._stage_name, err)
        self._stage_api = None

    @property
    def containers(self) -> bool:
        return isinstance(self.config.image_map, ContainerImages)

    def _launch(self, image: str) -> Launch | ContainerLaunch:
        if isinstance(self.config.image_map, ContainerImages):
            return self.config.image_map.launch(image)
        return self._launches[image]

    def stop(self) -> None:
        """Stop watching and every process; withdraw the targets and endpoints (only when
        this runner claimed the state directory: never another runner's)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._state_lock is None:
            self._http.close()
            return
        self._wake.set()
        for watcher in self._watchers:
            watcher.stop()
        if self._loop.is_alive():
            self._loop.join(timeout=10)
        with self._lock:
            children = [c for s in self._served.values() for c in (s.child, s.companion) if c]
            self._say(f"stopping {len(children)} process(es); withdrawing targets and endpoints")
            stop_all([*children, *(child for child, _ in self._stopping)])
            if self.containers:
                remove_containers(self._label)
            self._served.clear()
            self._stopping.clear()
            self._forwarders.close()
            self._publish([], force=True)
        self._remove_stage()
        (self.config.state_dir / CHILDREN_FILE).unlink(missing_ok=True)
        self._http.close()
        self._state_lock.close()  # releases the claim

    def _claim_state_dir(self) -> None:
        """One runner per state directory (its endpoints, and the orphans it reaps): an
        exclusive lock, released by the kernel however this process ends."""
        lock = (self.config.state_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise RuntimeError(
                f"another pod runner (pid {holder}) uses {self.config.state_dir}; "
                "give this one its own --state-dir"
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        self._state_lock = lock

    def __enter__(self) -> "PodRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoints_path(self) -> Path:
        return self.config.state_dir / ENDPOINTS_FILE

    def published(self) -> Published:
        """Every running process, ready or warming, and the pods of each Service (the same
        as the endpoints file)."""
        with self._lock:
            return self._published[0] if self._published else Published()

    def endpoints(self) -> list[Endpoint]:
        return self.published().endpoints

    # --- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.config.tick)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                with self._lock:
                    self.reconcile()
            except Exception:  # never let one bad pass end the runner
                log.exception("reconcile failed")

    def reconcile(self) -> None:
        """One pass: pods -> processes, health, readiness, published targets."""
        snapshots = [w.snapshot() for w in self._pods]
        services = self._services.snapshot()
        if services is None or any(s is None for s in snapshots):
            return  # not listed yet: nothing can be concluded about pods going away
        pods = list({p["metadata"]["uid"]: p for s in snapshots for p in s or ()}.values())
        now = time.monotonic()
        views = [v for v in (pod_view(p, self.config.image_map) for p in pods) if v]
        self._report_unknown(views)
        served_images = {k: s.view.image for k, s in self._served.items()}
        plan = plan_processes(
            views, served_images, self.config.max_processes, self.config.reflect_readiness
        )
        for key in plan.stop:
            self._stop(key)
        for view in plan.start:
            if view.sidecar is not None and self.containers:
                self._once(f"sidecar {view.key}", f"not serving {view.key}: container mode "
                           "runs no external server with its proxy yet")  # fmt: skip
                continue
            self._served[view.key] = _Served(view, self._launch(view.image), next_start=now)
        for view in plan.refused:
            self._once(f"refused {view.key}", f"refusing {view.key}: at the limit of "
                       f"{self.config.max_processes} processes")  # fmt: skip
        current = {v.key: v for v in views}
        for key, served in self._served.items():
            served.view = current.get(key, served.view)
        self._supervise(now)
        self._launch_due(now)
        self._probe(now)
        if self.config.reflect_readiness:
            self._reflect(views, {v.key for v in plan.refused})
        self._reap_stopping()
        self._forwarders.retain(
            {url.service for s in self._served.values() for url in s.view.service_env.values()}
        )
        self._publish(services)

    def _report_unknown(self, views: list[PodView]) -> None:
        for view in views:
            if not view.known:
                self._once(
                    f"unknown {view.image}",
                    f"no entry for image {view.image} (pod {view.key}) in "
                    f"{self.config.image_map.path}: not serving it",
                )

    def _once(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self._say(message)

    def _stop(self, key: PodKey) -> None:
        served = self._served.pop(key)
        self._patched.pop(key, None)
        if served.child is not None and served.child.running():
            self._say(f"stopping {key} (pid {served.child.pid}, {served.address})")
            kill_at = time.monotonic() + STOP_GRACE_SECONDS
            if isinstance(served.launch, ContainerLaunch) and not served.pulling:
                # The container stops with its podman process; SIGKILLing that one would
                # leave the container running.
                name = container_name(key.namespace, key.name, key.uid)
                argv = ["podman", "stop", "-t", str(int(STOP_GRACE_SECONDS)), name]
                logs = self.config.state_dir / "logs" / _log_name(key)
                stopper = Child.spawn(argv, dict(os.environ), served.launch.cwd, logs)
                self._stopping.append((stopper, kill_at + STOP_GRACE_SECONDS))
            else:
                served.child.signal(signal.SIGTERM)
            self._stopping.append((served.child, kill_at + STOP_GRACE_SECONDS))
        self._stop_companion(served)

    def _stop_companion(self, served: _Served) -> None:
        companion, served.companion = served.companion, None
        if companion is not None and companion.running():
            companion.signal(signal.SIGTERM)
            self._stopping.append((companion, time.monotonic() + STOP_GRACE_SECONDS))

    def _supervise(self, now: float) -> None:
        """A finished pull starts the container; a failed one is retried after a backoff. A
        server that exited is started again on a fresh port, after a backoff that doubles per
        restart (1 s .. 30 s), like a kubelet's CrashLoopBackOff."""
        for key, served in self._served.items():
            child = served.child
            companion = served.companion
            if child is not None and child.running() and companion and not companion.running():
                # The server is half of the pod: the proxy goes too, and both start again.
                self._say(f"server beside the proxy of {key} exited:\n{companion.log_tail(800)}")
                served.companion = None  # said once; the proxy's exit restarts the pair
                child.signal(signal.SIGTERM)
            if child is None or child.running():
                continue
            self._stop_companion(served)
            code = child.process.returncode
            served.child, served.ready, served.started_at = None, False, None
            if served.pulling:
                served.pulling = False
                if code == 0:
                    self._pulled.add(served.view.image)
                    served.pull_error, served.pull_failures, served.next_start = None, 0, now
                    continue
                why = child.log_tail(400).strip().splitlines()[-1:] or [f"exit {code}"]
                served.pull_error = (now, why[0])
                served.pull_failures += 1
                self._say(f"pulling {served.view.image} for {key} failed: {why[0]}")
            else:
                written = _written(self._termination_file(key))
                policy = served.view.termination_message_policy
                output = child.output(FALLBACK_LOG_BYTES)
                served.last_exit = (code, termination_message(written, output, policy, code))
                served.restarts += 1
                self._say(
                    f"server of {key} exited with {code}; restarting "
                    f"(restart {served.restarts}):\n{child.log_tail(800)}"
                )
            served.next_start = now + self._backoff(served)

    @staticmethod
    def _backoff(served: _Served) -> float:
        """1, 2, 4 .. 30 s after restarts; 2, 4, 8 .. 30 s after failed pulls (so that
        ImagePullBackOff is seen between two attempts, as on a kubelet)."""
        if served.pull_error is not None:
            return min(MAX_BACKOFF_SECONDS, 2.0**served.pull_failures)
        return min(MAX_BACKOFF_SECONDS, 2.0 ** max(0, served.restarts - 1))

    def _launch_due(self, now: float) -> None:
        warming = sum(1 for s in self._served.values() if s.running() and not s.ready)
        spawned = False
        for key, served in sorted(self._served.items()):
            if served.child is not None or served.next_start > now:
                continue
            if warming >= self.config.max_starting:
                break
            logs = self.config.state_dir / "logs" / _log_name(key)
            launch = served.launch
            if isinstance(launch, ContainerLaunch) and launch.image not in self._pulled:
                served.child = Child.spawn(launch.pull_argv(), dict(os.environ), launch.cwd, logs)
                served.pulling = True
                self._say(f"pulling {launch.image} for {key}")
            else:
                served.port = free_port()
                pod_env = self._pod_env(served.view)
                served.child = self._spawn_server(served, pod_env, logs)
                served.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                served.next_probe = now + 0.5
                notes = [
                    f"{name}={pod_env[name]} (Service {url.service})"
                    for name, url in sorted(served.view.service_env.items())
                ]
                if served.view.skipped_env:
                    notes.append(f"env left out: {', '.join(served.view.skipped_env)}")
                self._say(
                    f"serving {key} ({served.view.image}) on {served.address}, pid "
                    f"{served.child.pid}{''.join(f'; {n}' for n in notes)}"
                )
            warming += 1
            spawned = True
        if spawned:  # so that a successor can reap them if this runner is killed
            record_children(
                self.config.state_dir / CHILDREN_FILE,
                [c for s in self._served.values() for c in (s.child, s.companion) if c],
            )

    def _termination_file(self, key: PodKey) -> Path:
        return self.config.state_dir / "termination" / _log_name(key)

    def _pod_env(self, view: PodView) -> dict[str, str]:
        """The pod's env with each value naming a cluster Service on its local forwarder."""
        local = {
            name: url.on(self._forwarders.address(url.service))
            for name, url in view.service_env.items()
        }
        return {**view.env, **local}

    def _spawn_server(self, served: _Served, pod_env: dict[str, str], logs: Path) -> Child:
        launch, view = served.launch, served.view
        termination = self._termination_file(view.key)
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.write_bytes(b"")
        termination.chmod(0o666)  # as a kubelet's: the container's user is not the runner's
        if isinstance(launch, ContainerLaunch):
            name = container_name(view.key.namespace, view.key.name, view.key.uid)
            mount = (termination, view.termination_message_path)
            argv = launch.run_argv(name, served.port, pod_env, self._label, mount)
            return Child.spawn(argv, dict(os.environ), launch.cwd, logs)
        env = {**process_env(pod_env, os.environ), ENV_TERMINATION_LOG: str(termination)}
        if view.sidecar is not None:
            return self._spawn_pair(served, env, logs)
        return Child.spawn(launch.command(served.port), env, launch.cwd, logs)

    def _spawn_pair(self, served: _Served, env: dict[str, str], logs: Path) -> Child:
        """An external server's pod: its init containers' copies, the server on a port of
        its own (the companion), then the proxy container's command on the pod's port."""
        launch, view = served.launch, served.view
        sidecar = view.sidecar
        assert isinstance(launch, Launch)
        assert sidecar is not None
        files = self.config.state_dir / "files" / _log_name(view.key).removesuffix(".log")
        shutil.rmtree(files, ignore_errors=True)  # an emptyDir: empty at each start
        files.mkdir(parents=True)
        for source, target in sidecar.copies:
            copied = files / Path(target).relative_to(sidecar.files_dir)
            if launch.root is None or not (launch.root / source.lstrip("/")).is_file():
                self._say(f"{view.key}: init copy of {source}: no such file in the image")
                continue
            shutil.copyfile(launch.root / source.lstrip("/"), copied)
        upstream = free_port()
        server_env = {**process_env({}, os.environ), **launch.environment(upstream)}
        server_logs = logs.with_name(logs.stem + ".server.log")
        served.companion = Child.spawn(
            launch.command(upstream), server_env, launch.cwd, server_logs
        )
        argv = [*modeldeploy_command(), *sidecar.local_command(str(files), upstream)[1:]]
        local = {ENV_SERVE_HOST: LOOPBACK, ENV_SERVE_PORT: str(served.port)}
        return Child.spawn(argv, {**env, **local}, launch.cwd, logs)

    def _probe(self, now: float) -> None:
        for key, served in self._served.items():
            if not served.running() or served.next_probe > now:
                continue
            served.next_probe = now + self.config.probe_period
            try:
                ready = self._http.get(served.ready_url()).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready != served.ready:
                self._say(f"{key} is {'ready' if ready else 'not ready'} ({served.address})")
            served.ready = ready

    def _report(self, served: _Served | None, now: float) -> ContainerReport:
        if served is None:
            limit = f"pod runner at its limit of {self.config.max_processes} processes"
            return ContainerReport(False, limit, ("ContainerCreating", limit))
        waiting = self._waiting(served, now)
        if waiting is None:
            ready, message = served.ready, f"local server {served.address}: {served.ready_url()}"
        else:
            ready, message = False, f"{waiting[0]}: {waiting[1]}"
        code, tail = served.last_exit or (None, "")
        started = served.started_at if waiting is None else None
        return ContainerReport(ready, message, waiting, started, served.restarts, code, tail)

    def _waiting(self, served: _Served, now: float) -> tuple[str, str] | None:
        """Why the pod's container is not running, as a kubelet says it; None: it runs."""
        image = served.view.image
        if served.running() and not served.pulling:
            return None
        if served.pulling:
            return ("ContainerCreating", f"pulling image {image!r}")
        if served.pull_error is not None:
            failed_at, why = served.pull_error
            if now - failed_at < PULL_ERROR_SHOWN_SECONDS:
                return ("ErrImagePull", why)
            return ("ImagePullBackOff", f'Back-off pulling image "{image}": {why}')
        if served.restarts:
            return (
                "CrashLoopBackOff",
                f"back-off {self._backoff(served):.0f}s restarting failed "
                f"container={served.view.container} pod={served.view.key}",
            )
        return ("ContainerCreating", "")

    def _reflect(self, views: list[PodView], refused: set[PodKey]) -> None:
        """Write each served (or refused) pod's status when what the runner knows of it
        changed, or when the pod's Ready differs from it (a write not yet seen, or
        overwritten) and 2 s passed since the last write."""
        now = time.monotonic()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for view in views:
            served = self._served.get(view.key)
            if served is None and view.key not in refused:
                continue
            report = self._report(served, now)
            last = self._patched.get(view.key)
            if last is not None and last[0] == report:
                settled = view.ready == report.ready or now - last[1] < 2.0
                if settled:
                    continue
            body = status_patch(view.container, report, stamp)
            try:
                self._api.patch_namespaced_pod_status(
                    view.key.name,
                    view.key.namespace,
                    body,
                    _content_type="application/strategic-merge-patch+json",
                    _request_timeout=5,
                )
                self._patched[view.key] = (report, now)
            except Exception as err:  # gone meanwhile, or the apiserver is busy: next pass
                log.debug("status of %s not written: %s", view.key, err)

    def _reap_stopping(self) -> None:
        """Forget stopped processes; SIGKILL the group of one past its grace period."""
        now = time.monotonic()
        self._stopping = [(c, kill_at) for c, kill_at in self._stopping if c.running()]
        for child, kill_at in self._stopping:
            if now > kill_at:
                child.signal(signal.SIGKILL)

    def _running(self) -> list[_Served]:
        return [s for _, s in sorted(self._served.items()) if s.running()]

    def _endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                namespace=s.view.key.namespace,
                pod=s.view.key.name,
                name=s.view.md_name,
                revision=s.view.revision,
                model=s.view.model,
                address=s.address,
                ready=s.ready,
                pid=s.child.pid if s.child is not None else 0,
                image=s.view.image,
            )
            for s in self._running()
        ]

    def _publish(self, services: list[dict[str, Any]], force: bool = False) -> None:
        running = self._running()
        published = Published(
            self._endpoints(), service_members(services, [s.view for s in running])
        )
        targets = [(s.address, target_labels(s.view)) for s in running]
        if not force and self._published == (published, targets):
            return
        self._published = (published, targets)
        write_published(self.endpoints_path, published)
        if self.config.targets_dir is not None:
            write_targets(self.config.targets_dir, self.config.job, targets)


def run_until_signalled(runner: PodRunner) -> None:
    """Run until SIGTERM/SIGINT (the CLI); the processes are stopped on the way out, also
    when the interpreter exits otherwise (atexit)."""
    import atexit

    done = threading.Event()

    def finish(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    atexit.register(runner.stop)
    runner.start()
    try:
        while not done.wait(1.0):
            pass
    finally:
        runner.stop()
