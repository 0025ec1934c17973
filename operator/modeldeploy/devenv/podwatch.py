"""A level-based cache of labelled pods: list, then watch from the list's resourceVersion
until the server ends the watch (every `resync` seconds) or it fails, then list again.

Raw JSON objects (no generated models): the pod runner's decisions read plain dicts.
"""

import json
import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from modeldeploy.devenv.prometheus import LOOPBACK_HOSTS

log = logging.getLogger("modeldeploy.podrunner")
Pod = dict[str, Any]


def core_api(kubeconfig: str | None) -> Any:
    """A CoreV1Api for the cluster of `kubeconfig` (else $KUBECONFIG / ~/.kube/config),
    refused unless its apiserver is on loopback: the pod runner is for the local cluster."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, client_configuration=configuration
    )
    host = urllib.parse.urlsplit(configuration.host).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"refusing apiserver {configuration.host}: the pod runner only drives a local "
            "(127.0.0.1) cluster"
        )
    return client.CoreV1Api(client.ApiClient(configuration))


class PodWatcher:
    def __init__(
        self,
        api: Any,
        namespace: str | None,
        label_selector: str,
        on_change: Callable[[], None],
        resync: float = 15.0,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._selector = label_selector
        self._on_change = on_change
        self._resync = resync
        self._pods: dict[str, Pod] | None = None  # uid -> pod; None until the first list
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self.lists = 0  # how often the state was relisted (resyncs and recoveries)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=1.0)  # a watch in flight ends within `resync` (daemon)

    def snapshot(self) -> list[Pod] | None:
        """The current pods; None until the first list succeeded (then nothing may be
        concluded about pods, e.g. that they are gone)."""
        with self._lock:
            return None if self._pods is None else list(self._pods.values())

    def _list_call(self) -> tuple[Any, tuple[Any, ...]]:
        if self._namespace:
            return self._api.list_namespaced_pod, (self._namespace,)
        return self._api.list_pod_for_all_namespaces, ()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopped.is_set():
            try:
                version = self._list()
                backoff = 0.5
                self._watch(version)
            except Exception as err:  # any API or connection failure: list again, later
                log.warning("pod watch failed (%s); relisting in %.1fs", err, backoff)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _list(self) -> str:
        call, args = self._list_call()
        response = call(
            *args, label_selector=self._selector, _preload_content=False, _request_timeout=10
        )
        body = json.loads(response.data)
        with self._lock:
            self._pods = {p["metadata"]["uid"]: p for p in body.get("items") or []}
        self.lists += 1
        self._on_change()
        return str(body["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        from kubernetes import watch

        call, args = self._list_call()
        stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(
            call,
            *args,
            label_selector=self._selector,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=int(self._resync),
            _request_timeout=self._resync + 10,
            deserialize=False,
        ):
            if self._stopped.is_set():
                stream.stop()
                return
            kind, pod = event["type"], event["object"]
            if kind == "ERROR":
                raise RuntimeError(f"watch error: {pod.get('message', pod)}")
            if kind == "BOOKMARK":
                continue
            with self._lock:
                assert self._pods is not None
                if kind == "DELETED":
                    self._pods.pop(pod["metadata"]["uid"], None)
                else:
                    self._pods[pod["metadata"]["uid"]] = pod
            self._on_change()
