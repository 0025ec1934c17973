"""A level-based cache of labelled objects (the pod runner's pods and services, the scale
bench's Deployments and ModelDeployments): list, then watch from the list's resourceVersion
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
Object = dict[str, Any]


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


class ObjectWatcher:
    def __init__(
        self,
        api: Any,
        kind: str,
        namespace: str | None,
        label_selector: str,
        *,
        on_change: Callable[[], None] | None = None,
        on_object: Callable[[Object], None] | None = None,
        resync: float = 15.0,
    ) -> None:
        """`api` lists `kind` with `list_namespaced_<kind>` / `list_<kind>_for_all_namespaces`
        (CoreV1Api for "pod", AppsV1Api for "deployment"). `on_change` (if any) runs after
        every change, `on_object` (if any) with each object listed, added or modified."""
        self._api = api
        self._kind = kind
        self._namespace = namespace
        self._selector = label_selector
        self._on_change = on_change
        self._on_object = on_object
        self._resync = resync
        self._objects: dict[str, Object] | None = None  # uid -> object; None until listed
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{kind}", daemon=True)
        self.lists = 0  # how often the state was relisted (resyncs and recoveries)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next event or when the server ends the watch (within `resync`); the
        thread is a daemon, so nobody waits for it."""
        self._stopped.set()

    def snapshot(self) -> list[Object] | None:
        """The current objects; None until the first list succeeded (until then nothing
        may be concluded, e.g. that a pod is gone)."""
        with self._lock:
            return None if self._objects is None else list(self._objects.values())

    def _list_call(self) -> tuple[Any, tuple[Any, ...]]:
        if self._namespace:
            return getattr(self._api, f"list_namespaced_{self._kind}"), (self._namespace,)
        return getattr(self._api, f"list_{self._kind}_for_all_namespaces"), ()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopped.is_set():
            try:
                version = self._list()
                backoff = 0.5
                self._watch(version)
            except Exception as err:  # any API or connection failure: list again, later
                if self._stopped.is_set():
                    return  # e.g. the cluster went away after stop(): nothing to report
                log.warning("%s watch failed (%s); relisting in %.1fs", self._kind, err, backoff)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _list(self) -> str:
        call, args = self._list_call()
        response = call(
            *args, label_selector=self._selector, _preload_content=False, _request_timeout=10
        )
        body = json.loads(response.data)
        items = body.get("items") or []
        with self._lock:
            self._objects = {o["metadata"]["uid"]: o for o in items}
        self.lists += 1
        if self._on_object is not None:
            for item in items:
                self._on_object(item)
        if self._on_change is not None:
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
            kind, obj = event["type"], event["object"]
            if kind == "ERROR":
                raise RuntimeError(f"watch error: {obj.get('message', obj)}")
            if kind == "BOOKMARK":
                continue
            with self._lock:
                assert self._objects is not None
                if kind == "DELETED":
                    self._objects.pop(obj["metadata"]["uid"], None)
                else:
                    self._objects[obj["metadata"]["uid"]] = obj
            if self._on_object is not None and kind != "DELETED":
                self._on_object(obj)
            if self._on_change is not None:
                self._on_change()
