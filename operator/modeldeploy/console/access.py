"""The cluster as the kubeconfig describes it: the CLI's only I/O.

Built on the official `kubernetes` client (kubeconfig, contexts, TLS, exec plugins,
in-cluster config), imported only when a command runs. Every failure leaves this module as
a CliError in a person's terms: bad kubeconfig or context, cluster unreachable, no
permission, no such object, CRD not installed.
"""

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from modeldeploy.api import GROUP, KIND, PLURAL, VERSION
from modeldeploy.console.exits import CliError, ExitCode, api_error
from modeldeploy.console.steering import Change
from modeldeploy.console.views import Body

REQUEST_TIMEOUT = (5.0, 30.0)
"""Seconds to connect, to read."""
COMPLETION_TIMEOUT = (1.0, 2.0)
"""Shell completion waits no longer: a slow cluster must not hang the prompt."""
HTTP_ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
RETRIES = 1
CONFLICT_ATTEMPTS = 3
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """Where to talk to, as on kubectl's command line."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    as_user: str | None = None


def _config_error(message: str, hint: str = "") -> CliError:
    return CliError(ExitCode.CONFIG, message, hint)


def _configure(target: Target) -> tuple[Any, str, str]:
    """(client Configuration, context name, the context's namespace)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    explicit = target.kubeconfig or os.environ.get("KUBECONFIG")
    path = explicit or "~/.kube/config"
    files = [Path(p).expanduser() for p in path.split(os.pathsep) if p]
    if not any(f.is_file() for f in files):
        if not explicit and os.environ.get("KUBERNETES_SERVICE_HOST") and not target.context:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except ConfigException as err:
                raise _config_error(f"no kubeconfig, no in-cluster config: {err}") from err
            own = IN_CLUSTER_NAMESPACE
            namespace = own.read_text().strip() if own.exists() else ""
            return configuration, "in-cluster", namespace or "default"
        raise _config_error(f"no kubeconfig at {path}", "pass --kubeconfig FILE or set KUBECONFIG")
    try:
        contexts, current = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
        names = [c["name"] for c in contexts or []]
        chosen = target.context or (current or {}).get("name")
        if not chosen:
            raise _config_error(
                f"the kubeconfig {path} has no current-context",
                f"pass --context (one of: {', '.join(names) or 'none defined'})",
            )
        if chosen not in names:
            raise _config_error(
                f"context {chosen!r} is not in the kubeconfig {path}",
                f"its contexts: {', '.join(names) or 'none'}",
            )
        context = next(c for c in contexts if c["name"] == chosen)
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path,
            context=chosen,
            client_configuration=configuration,
            persist_config=False,
        )
    except CliError:
        raise
    except ConfigException as err:
        raise _config_error(f"cannot use the kubeconfig {path}: {err}") from err
    except Exception as err:  # malformed YAML, unreadable files, odd entries
        raise _config_error(f"cannot read the kubeconfig {path}: {err}") from err
    namespace = (context.get("context") or {}).get("namespace") or "default"
    return configuration, str(chosen), str(namespace)


def unreachable_reason(err: BaseException) -> str:
    """ "Connection refused", "timed out", "TLS: ..." from a urllib3 error."""
    cause = getattr(err, "reason", None) or err
    message = str(cause)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", message)
    if errno:
        return errno.group(1).strip()
    if "timed out" in message.lower():
        return "timed out"
    if "ssl" in type(cause).__name__.lower() or "certificate" in message.lower():
        return f"TLS: {message}"
    return message


def _namespace_and_name(obj: Body) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class Cluster:
    """ModelDeployments (and their Events) of one kubeconfig context."""

    def __init__(
        self,
        target: Target,
        version: str = VERSION,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        retries: int = RETRIES,
    ) -> None:
        from kubernetes import client

        configuration, self.context, default_namespace = _configure(target)
        configuration.retries = retries
        self.timeout = timeout
        self.server: str = configuration.host
        self.namespace = target.namespace or default_namespace
        self.version = version
        self._client: Any = client.ApiClient(configuration)
        if target.as_user:
            self._client.set_default_header(  # type: ignore[no-untyped-call]
                "Impersonate-User", target.as_user
            )
        self._objects: Any = client.CustomObjectsApi(self._client)
        self._core: Any = client.CoreV1Api(self._client)
        self._listers: dict[str, Callable[..., Any]] = {
            "Deployment": client.AppsV1Api(self._client).list_namespaced_deployment,
            "Service": self._core.list_namespaced_service,
            "HorizontalPodAutoscaler": client.AutoscalingV2Api(
                self._client
            ).list_namespaced_horizontal_pod_autoscaler,
            "PodDisruptionBudget": client.PolicyV1Api(
                self._client
            ).list_namespaced_pod_disruption_budget,
            "Pod": self._core.list_namespaced_pod,
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def where(self, namespace: str | None = None) -> str:
        ns = namespace or self.namespace
        return f"in namespace {ns} (context {self.context}, {self.server})"

    def _call(self, what: str, where: str, call: Callable[..., T], *args: Any, **kw: Any) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call(*args, **kw, _request_timeout=self.timeout)
        except ApiException as err:
            api = f"{GROUP}/{self.version}"
            raise api_error(err.status or 0, err.body, what=what, where=where, api=api) from err
        except (HTTPError, OSError) as err:
            raise CliError(
                ExitCode.UNREACHABLE,
                f"cannot reach the cluster at {self.server} (context {self.context}): "
                f"{unreachable_reason(err)}",
                "is the cluster up, and is this the right context (--context, --kubeconfig)?",
            ) from err

    def get(self, name: str) -> Body:
        body: Body = self._call(
            f"modeldeployment {name}",
            self.where(),
            self._objects.get_namespaced_custom_object,
            GROUP,
            self.version,
            self.namespace,
            PLURAL,
            name,
        )
        return body

    def model_deployments(self, all_namespaces: bool = False) -> list[Body]:
        if all_namespaces:
            listed = self._call(
                "modeldeployments",
                f"in any namespace (context {self.context}, {self.server})",
                self._objects.list_cluster_custom_object,
                GROUP,
                self.version,
                PLURAL,
            )
        else:
            listed = self._call(
                "modeldeployments",
                self.where(),
                self._objects.list_namespaced_custom_object,
                GROUP,
                self.version,
                self.namespace,
                PLURAL,
            )
        items: list[Body] = listed.get("items") or []
        return sorted(items, key=_namespace_and_name)

    def events(self, obj: Body) -> list[Body] | None:
        """Events about `obj` (None when they cannot be read, e.g. no permission: the
        status view then says so instead of failing)."""
        namespace, name = _namespace_and_name(obj)
        uid = (obj.get("metadata") or {}).get("uid")
        listed = self._readable(
            "events",
            namespace,
            self._core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.kind={KIND},involvedObject.name={name}",
        )
        if listed is None:
            return None
        items: list[Body] = self._client.sanitize_for_serialization(listed).get("items") or []
        return [
            e for e in items if not uid or (e.get("involvedObject") or {}).get("uid") in (uid, None)
        ]

    def _readable(
        self, what: str, namespace: str, call: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """The answer, or None when it cannot be read (no permission, not served): the
        views show the rest. An unreachable cluster still fails the command."""
        try:
            return self._call(what, self.where(namespace), call, *args, **kw)
        except CliError as err:
            if err.code is ExitCode.UNREACHABLE:
                raise
            return None

    def owned(self, obj: Body) -> dict[str, list[Body] | None]:
        """The objects `obj` owns, by kind (views.objects.KINDS), found by the labels the
        operator puts on them (fallback pods carry `modeldeploy.io/fallback` instead); None
        for a kind that cannot be listed."""
        from modeldeploy.resources.names import LABEL_FALLBACK, LABEL_NAME

        namespace, name = _namespace_and_name(obj)
        found: dict[str, list[Body] | None] = {}
        for kind, lister in self._listers.items():
            selectors = [f"{LABEL_NAME}={name}"]
            if kind == "Pod":
                selectors.append(f"{LABEL_FALLBACK}={name}")
            items: list[Body] | None = []
            for selector in selectors:
                listed = self._readable(kind, namespace, lister, namespace, label_selector=selector)
                if listed is None or items is None:
                    items = None
                    continue
                items += self._client.sanitize_for_serialization(listed).get("items") or []
            found[kind] = items
        return found

    def http_route(self, namespace: str, name: str) -> Body | None:
        """The HTTPRoute `name` (None when absent or not readable)."""
        route: Body | None = self._readable(
            f"httproute {name}", namespace, self._objects.get_namespaced_custom_object,
            HTTP_ROUTE[0], HTTP_ROUTE[1], namespace, HTTP_ROUTE[2], name,
        )  # fmt: skip
        return route

    def names(self) -> list[str]:
        """Names of the ModelDeployments in the namespace (for shell completion)."""
        return [_namespace_and_name(obj)[1] for obj in self.model_deployments()]

    def patch(self, name: str, patch: Body) -> Body:
        body: Body = self._call(
            f"modeldeployment {name}",
            self.where(),
            self._objects.patch_namespaced_custom_object,
            GROUP,
            self.version,
            self.namespace,
            PLURAL,
            name,
            patch,
            _content_type="application/merge-patch+json",
        )
        return body

    def steer(self, name: str, decide: Callable[[Body], Change]) -> Change:
        """Read, decide, write; decided again on a fresh read when the object changed in
        between (a conditional change carries the resourceVersion it was decided on)."""
        for attempt in range(CONFLICT_ATTEMPTS):
            change = decide(self.get(name))
            if change.patch is None:
                return change
            try:
                self.patch(name, change.patch)
            except CliError as err:
                if err.http_status == 409 and attempt + 1 < CONFLICT_ATTEMPTS:
                    continue
                raise
            return change
        raise AssertionError("unreachable")  # the loop returns or raises
