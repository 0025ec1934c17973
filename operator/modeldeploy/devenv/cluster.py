"""A local Kubernetes cluster driven by kwokctl: real apiserver, etcd, controller-manager and
scheduler processes on 127.0.0.1, with kwok simulating nodes and pod status."""

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modeldeploy.devenv.kwokstages import default_stages
from modeldeploy.devenv.tools import Toolchain

NODE_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110"}
# Address ranges for thousands of objects. The defaults, 10.0.0.0/24 for Services and for
# kwok's pods alike, hold 253 Service IPs: 84 ModelDeployments at 3 ClusterIP Services each.
# Nothing ever dials these addresses (kwok hands out pod IPs without networking). The
# controller-manager's matching flags are left out: only its node IPAM reads them, and that
# is off (no --allocate-node-cidrs; kwok nodes have no podCIDR, so kwok uses --cidr).
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"


def kwokctl_configuration(tools: Toolchain, audit_policy: Path | None = None) -> dict[str, Any]:
    """Every component from the local cache: kwokctl must plan no download. With
    `audit_policy` (a file) the apiserver writes an audit log."""
    configuration: dict[str, Any] = {
        "kind": "KwokctlConfiguration",
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "options": {
            "runtime": "binary",
            "kubeVersion": tools.kube_version,
            "kubeBinaryPrefix": str(tools.kube_bin),
            "kubectlBinary": str(tools.kubectl),
            "etcdBinary": str(tools.etcd),
            "kwokControllerBinary": str(tools.kwok),
            "bindAddress": "127.0.0.1",
            # RBAC on, so that the chart's least-privilege roles can be tested by impersonation.
            "kubeAuthorization": True,
            "disableQPSLimits": True,
            # Stages from the API, so that a pod runner can add its own (devenv.kwokstages).
            "enableCRDs": ["Stage"],
        },
        "componentsPatches": [
            component_args("kube-apiserver", {
                "advertise-address": "127.0.0.1",
                "service-cluster-ip-range": SERVICE_CIDR,
            }),
            component_args("kwok-controller", {"cidr": POD_CIDR}),
        ],
    }  # fmt: skip
    if audit_policy is not None:
        configuration["options"]["kubeAuditPolicy"] = str(audit_policy)
    return configuration


def component_args(component: str, args: dict[str, str]) -> dict[str, Any]:
    """Extra flags of one component. In the configuration, not as `--extra-args`: kwokctl
    0.8 finds a component's earlier `--extra-args` by the flag's position instead of the
    component's, so with several components a repeated one lands on the wrong one."""
    return {"name": component, "extraArgs": [{"key": k, "value": v} for k, v in args.items()]}


def fake_node(name: str) -> dict[str, Any]:
    """A Node kwok manages (no taint, so ordinary workloads schedule onto it)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "status": {"capacity": NODE_CAPACITY, "allocatable": NODE_CAPACITY},
    }


class KubectlError(RuntimeError):
    """A kubectl call failed; the message carries its stderr."""


@dataclass
class KwokCluster:
    name: str
    workdir: Path  # KWOK_WORKDIR: kwokctl keeps the cluster's files here
    tools: Toolchain
    audit_policy: dict[str, Any] | None = None  # an audit.k8s.io/v1 Policy: log requests

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / f"{self.name}.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """Where the apiserver writes audit events (one JSON line each), with `audit_policy`."""
        return self.workdir / "clusters" / self.name / "logs" / "audit.log"

    def _env(self) -> dict[str, str]:
        import os

        return {
            **os.environ,
            "KWOK_WORKDIR": str(self.workdir),
            "PATH": f"{self.tools.kube_bin}:{os.environ.get('PATH', '')}",
        }

    def _kwokctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        config = self.workdir / "kwokctl.yaml"
        return subprocess.run(
            [str(self.tools.kwokctl), "--config", str(config), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def exists(self) -> bool:
        result = self._kwokctl("get", "clusters")
        return self.name in result.stdout.split()

    def _create_args(self, timeout: float) -> list[str]:
        return [
            "create", "cluster",
            "--name", self.name,
            "--kubeconfig", str(self.kubeconfig),
            "--wait", f"{int(timeout)}s",
        ]  # fmt: skip

    def planned_downloads(self) -> list[str]:
        """What `kwokctl create cluster` would fetch from the network: must be nothing.

        kwokctl's plan lists `# Download SRC to DST` for every binary it copies; local paths
        are fine, a URL source means it would try the internet (we are offline)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        policy = None
        if self.audit_policy is not None:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(self.audit_policy))
        (self.workdir / "kwokctl.yaml").write_text(
            yaml.safe_dump(kwokctl_configuration(self.tools, policy))
        )
        result = self._kwokctl("--dry-run", *self._create_args(timeout=60))
        if result.returncode != 0:
            raise RuntimeError(f"kwokctl --dry-run failed:\n{result.stdout}\n{result.stderr}")
        return [
            line
            for line in result.stdout.splitlines()
            if line.startswith("# Download") and "://" in line.split()[2]
        ]

    def create(self, nodes: int = 3, timeout: float = 240) -> None:
        downloads = self.planned_downloads()
        if downloads:
            raise RuntimeError("kwokctl would download (offline guard):\n" + "\n".join(downloads))
        result = self._kwokctl(*self._create_args(timeout), timeout=timeout + 60)
        if result.returncode != 0:
            raise RuntimeError(f"kwokctl create cluster failed:\n{result.stdout}\n{result.stderr}")
        self.kubectl("wait", "--for=condition=Established", "crd/stages.kwok.x-k8s.io")
        self.apply_objects(default_stages(self.tools.kwok_stages))
        self.apply_objects([fake_node(f"kwok-node-{i}") for i in range(nodes)])
        self.wait_nodes_ready(nodes)
        self.install_gateway_api()

    def install_gateway_api(self, timeout: float = 60) -> None:
        """The Gateway API CRDs (HTTPRoute, Gateway, GatewayClass...: the official standard
        channel), as a cluster with a Gateway controller has them; no controller runs."""
        manifests = sorted(self.tools.gateway_api_crds.glob("*.yaml"))
        documents = [d for m in manifests for d in yaml.safe_load_all(m.read_text()) if d]
        self.apply_objects(documents, server_side=True)
        names = [
            f"crd/{d['metadata']['name']}"
            for d in documents
            if d.get("kind") == "CustomResourceDefinition"
        ]
        self.kubectl("wait", "--for=condition=Established", *names, f"--timeout={int(timeout)}s")

    def delete(self) -> None:
        self._kwokctl("delete", "cluster", "--name", self.name)
        self.kubeconfig.unlink(missing_ok=True)

    def restart_control_plane(self, down: float = 0.0, timeout: float = 120) -> None:
        """Stop every component (etcd, kube-apiserver, controller-manager, scheduler, kwok)
        and start them again on the same data and ports, as a control-plane upgrade does;
        `down` seconds in between. Returns when the apiserver is ready again."""
        for verb in ("stop", "start"):
            result = self._kwokctl(verb, "cluster", "--name", self.name, timeout=timeout)
            if result.returncode != 0:
                raise RuntimeError(f"kwokctl {verb} cluster failed:\n{result.stderr}")
            if verb == "stop":
                time.sleep(down)
        deadline = time.monotonic() + timeout
        while self.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the apiserver is not ready {timeout}s after a restart")
            time.sleep(0.2)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.tools.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply_objects(self, objects: Sequence[dict[str, Any]], server_side: bool = False) -> None:
        """`kubectl apply`; `server_side` for objects too large for the client-side apply's
        last-applied annotation (CRDs such as the Gateway API's)."""
        self.kubectl(
            "apply",
            *(["--server-side"] if server_side else []),
            "-f",
            "-",
            input=json.dumps({"kind": "List", "apiVersion": "v1", "items": list(objects)}),
        )

    def get_json(self, *args: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return result

    def wait_nodes_ready(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.get_json("nodes")["items"]
            ready = [
                n for n in nodes
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in n.get("status", {}).get("conditions", []))
            ]  # fmt: skip
            if len(ready) >= count:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{count} kwok nodes not Ready after {timeout}s")
