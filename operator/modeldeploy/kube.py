"""Kubernetes API I/O of the operator: one small synchronous client over the official
`kubernetes` package's REST machinery (auth, TLS, kubeconfig or in-cluster config).

Raw JSON in and out: the pure core builds and reads plain dicts, so no generated model
classes are needed. Every request is counted and logged on the `modeldeploy.kube` logger
(`read GET ...`, `write PATCH ...`), so that "no requests while idle" can be checked from the
outside; the operator's reads come from its watch cache (`watchcache`), not from here.
"""

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from modeldeploy.api import GROUP, PLURAL, VERSION, PendingEvent
from modeldeploy.resources.kinds import LISTED_KINDS, OWNED_KINDS
from modeldeploy.resources.names import FIELD_MANAGER, LABEL_NAME
from modeldeploy.rollout.plan import Event, ObjectRef
from modeldeploy.routing.gateway_api import HTTP_ROUTE, RoutePatch

log = logging.getLogger("modeldeploy.kube")
Body = dict[str, Any]

MODEL_DEPLOYMENTS = f"/apis/{GROUP}/{VERSION}"
CREATE_ONLY = "1"
LEASES = "/apis/coordination.k8s.io/v1"


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Conflict(KubeError):
    """409: the object changed since it was read (or a field is owned by someone else)."""


class NotLeader(KubeError):
    """A write refused before it was sent: this replica does not hold the leader lease."""

    def __init__(self) -> None:
        super().__init__(0, "not the leader: writes are left to the replica holding the lease")


def _error(status: int, data: bytes) -> KubeError:
    try:
        message = str(json.loads(data).get("message", ""))
    except (ValueError, AttributeError):
        message = data[:500].decode(errors="replace")
    return (Conflict if status == 409 else KubeError)(status, message)


class Kube:
    def __init__(
        self,
        kubeconfig: str | None = None,
        timeout: float = 10.0,
        *,
        may_write: Callable[[], bool] | None = None,
        connections: int | None = None,
    ) -> None:
        """Configured from `kubeconfig`; else the in-cluster service account (token, CA and
        KUBERNETES_SERVICE_HOST/PORT, the token re-read as the kubelet rotates it), else
        $KUBECONFIG / ~/.kube/config. That is the order Kopf logs in with, so its watches and
        these calls always act as one identity. `may_write`: asked before every write to a
        ModelDeployment, its objects or Events (never two writers: the leader lease holder
        only); a refused write raises NotLeader. `connections`: how many stay open at once."""
        from kubernetes import client, config

        configuration = client.Configuration()
        if kubeconfig:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration
            )
            self.source = f"kubeconfig {kubeconfig}"
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                self.source = "in-cluster service account"
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                self.source = "kubeconfig"
        self.server = str(configuration.host)
        if connections is not None:
            # One per thread that calls at once; the default (5 per core) makes the rest
            # open and drop a connection per request.
            configuration.connection_pool_maxsize = connections
        self._api: Any = client.ApiClient(configuration)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._may_write = may_write
        self.writes = 0
        """Writes to ModelDeployments, their objects and Events (lease renewals apart)."""
        self.requests = 0
        """Every request but the lease's: reads from the watch cache are not requests."""

    def close(self) -> None:
        self._api.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        lease: bool = False,
    ) -> Any:
        """One API call. `lease`: the leader election's own call, never refused, counted
        or logged as a write (a renewal every few seconds is how a lease works)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if not lease:
            if method != "GET" and self._may_write is not None and not self._may_write():
                raise NotLeader()
            with self._lock:
                self.requests += 1
                self.writes += method != "GET"
            # Both are rare (a read: only before a destructive step or a create; a write:
            # only when something differs), so every one is logged.
            log.info("%s %s %s", "read" if method == "GET" else "write", method, path)
        serialized = self._api.param_serialize(
            method,
            path,
            query_params=list(query.items()) if query else None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(*serialized, _request_timeout=self._timeout)
        data = response.read()
        if not 200 <= response.status < 300:
            raise _error(response.status, data)
        return json.loads(data) if data else None

    # --- reads ------------------------------------------------------------------------

    def get(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        """GET any API path, e.g. /apis/apps/v1/namespaces/ml/deployments (parsed JSON)."""
        return self._request("GET", path, query=query)

    def get_model_deployment(self, namespace: str, name: str) -> Body | None:
        try:
            body: Body = self._request(
                "GET", f"{MODEL_DEPLOYMENTS}/namespaces/{namespace}/{PLURAL}/{name}"
            )
        except KubeError as err:
            if err.status == 404:
                return None
            raise
        return body

    def list_owned(self, namespace: str, name: str) -> list[Body]:
        """Deployments, Services, HPAs, PDBs and Pods labelled with the ModelDeployment's
        name (whether it controls them, or their revision's Deployment, is the core's
        business)."""
        items: list[Body] = []
        for kind in LISTED_KINDS.values():
            listed = self._request(
                "GET",
                kind.collection(namespace),
                query={"labelSelector": f"{LABEL_NAME}={name}"},
            )
            for item in listed.get("items") or []:
                items.append({**item, "apiVersion": kind.api_version, "kind": kind.kind})
        return items

    # --- writes -----------------------------------------------------------------------

    def apply(self, body: Body) -> Body:
        """Server-side apply as field manager `modeldeploy` (force: the operator owns these
        objects; a Deployment's replicas it passes are the HPA's own value when one owns
        them). Returns the object as stored."""
        meta = body["metadata"]
        collection = OWNED_KINDS[body["kind"]].collection(meta["namespace"])
        result: Body = self._request(
            "PATCH",
            f"{collection}/{meta['name']}",
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
        )
        return result

    def create(self, body: Body) -> Body:
        """A server-side apply that only creates: Conflict where the name exists. Not a
        POST: a created object's fields would belong to the manager's Update, and a later
        apply that leaves a field out (an annotation, an env var) could not remove it. A
        resourceVersion in an apply is a precondition on an existing object, ignored by a
        create; no object has version 1 (etcd's revision before its first write)."""
        meta = {**body["metadata"], "resourceVersion": CREATE_ONLY}
        return self.apply({**body, "metadata": meta})

    def get_route(self, namespace: str, name: str) -> Body | None:
        """The HTTPRoute `name` (None when there is none, or no Gateway API in the cluster)."""
        try:
            body: Body = self._request("GET", f"{HTTP_ROUTE.collection(namespace)}/{name}")
        except KubeError as err:
            if err.status == 404:
                return None
            raise
        return {**body, "apiVersion": HTTP_ROUTE.api_version, "kind": HTTP_ROUTE.kind}

    def patch_route(self, namespace: str, patch: RoutePatch) -> Body:
        """A JSON patch of the user's HTTPRoute (its `test` operations make a route changed
        since it was read refuse it whole: 422), as field manager `modeldeploy`."""
        result: Body = self._request(
            "PATCH",
            f"{HTTP_ROUTE.collection(namespace)}/{patch.name}",
            query={"fieldManager": FIELD_MANAGER},
            body=list(patch.operations),
            content_type="application/json-patch+json",
        )
        return result

    def delete(self, namespace: str, ref: ObjectRef) -> None:
        try:
            self._request(
                "DELETE",
                f"{OWNED_KINDS[ref.kind].collection(namespace)}/{ref.name}",
                query={"propagationPolicy": "Background"},
            )
        except KubeError as err:
            if err.status != 404:
                raise

    def replace_status(self, body: Body, status: Body) -> Body:
        """PUT .status with the resourceVersion read: a decision taken on a stale read is
        refused (Conflict) instead of overwriting a newer one."""
        meta = body["metadata"]
        result: Body = self._request(
            "PUT",
            f"{MODEL_DEPLOYMENTS}/namespaces/{meta['namespace']}/{PLURAL}/{meta['name']}/status",
            body={
                "apiVersion": body["apiVersion"],
                "kind": body["kind"],
                "metadata": {
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "resourceVersion": meta["resourceVersion"],
                },
                "status": status,
            },
        )
        return result

    def remove_annotations(self, namespace: str, name: str, keys: Iterable[str]) -> Body:
        result: Body = self._request(
            "PATCH",
            f"{MODEL_DEPLOYMENTS}/namespaces/{namespace}/{PLURAL}/{name}",
            body={"metadata": {"annotations": dict.fromkeys(keys)}},
            content_type="application/merge-patch+json",
        )
        return result

    def post_event(
        self, involved: Body, event: Event | PendingEvent, now: datetime, name: str
    ) -> None:
        """Create the Event `name` about `involved`; a second post of the same name is
        refused (Conflict: AlreadyExists)."""
        meta = involved["metadata"]
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        self._request(
            "POST",
            f"/api/v1/namespaces/{meta['namespace']}/events",
            body={
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                },
                "involvedObject": {
                    "apiVersion": involved["apiVersion"],
                    "kind": involved["kind"],
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                    "resourceVersion": meta.get("resourceVersion", ""),
                },
                "type": event.type,
                "reason": event.reason,
                "message": event.message[:1024],
                "source": {"component": FIELD_MANAGER},
                "reportingComponent": f"{GROUP}/operator",
                "reportingInstance": FIELD_MANAGER,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            },
        )

    # --- the leader lease (coordination.k8s.io) ---------------------------------------

    def get_lease(self, namespace: str, name: str) -> Body | None:
        try:
            body: Body = self._request(
                "GET", f"{LEASES}/namespaces/{namespace}/leases/{name}", lease=True
            )
        except KubeError as err:
            if err.status == 404:
                return None
            raise
        return body

    def write_lease(self, body: Body) -> Body:
        """Create the Lease (no resourceVersion) or replace it (resourceVersion: the one
        read; a Conflict means another replica wrote it first)."""
        meta = body["metadata"]
        path = f"{LEASES}/namespaces/{meta['namespace']}/leases"
        if meta.get("resourceVersion"):
            result: Body = self._request("PUT", f"{path}/{meta['name']}", body=body, lease=True)
        else:
            result = self._request("POST", path, body=body, lease=True)
        return result
