"""The pod runner's view of an external V2 server's pod as the operator builds it: the server's
image picks the map entry, the proxy is what serves (env, probe, status), and its command runs
locally with the init containers' copies and the server's port mapped."""

from typing import Any

import pytest

from modeldeploy import contract
from modeldeploy.api import ModelDeploymentSpec, Warmup
from modeldeploy.devenv.imagemap import ImageMap, ImageMapError
from modeldeploy.devenv.pods import pod_view
from modeldeploy.resources.common import Owner
from modeldeploy.resources.deployment import PROXY_CONTAINER_NAME, revision_deployment
from modeldeploy.resources.revision import RevisionSource

pytestmark = pytest.mark.unit

IMAGE = "registry.example/ml/churn-mlserver@sha256:" + "a" * 64
PROXY = "registry.example/modeldeploy/operator:0.1.0"


def built_pod(external: dict[str, Any]) -> dict[str, Any]:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"name": "churn", "version": "1"}, "image": IMAGE, "externalServer": external}
    )
    body = revision_deployment(
        Owner("churn", "ml", "uid"), RevisionSource.of(spec, PROXY), track="canary",
        replicas=1, warmup=Warmup(),
    )  # fmt: skip
    template = body["spec"]["template"]
    meta = {**template["metadata"], "name": "churn-x-1", "namespace": "ml", "uid": "u1"}
    return {"metadata": meta, "spec": template["spec"], "status": {"phase": "Running"}}


def test_the_server_image_is_served_with_the_proxy_in_front() -> None:
    view = pod_view(built_pod({"port": 9000, "configPath": "/etc/proxy.yaml"}), {IMAGE})
    assert view is not None
    assert view.known
    assert view.image == IMAGE
    assert view.container == PROXY_CONTAINER_NAME  # its status is the one written
    assert view.ready_path == "/v2/models/churn/ready"
    assert view.env[contract.ENV_MODEL_NAME] == "churn"
    sidecar = view.sidecar
    assert sidecar is not None
    assert sidecar.upstream_port == 9000
    assert sidecar.copies == (
        ("/modeldeploy/profile.json", "/modeldeploy-proxy/profile.json"),
        ("/etc/proxy.yaml", "/modeldeploy-proxy/model.yaml"),
    )
    command = sidecar.local_command("/tmp/pod-files", 41234)
    assert command == [
        "modeldeploy", "proxy", "--profile", "/tmp/pod-files/profile.json",
        "--upstream", "http://127.0.0.1:41234", "--upstream-model", "churn",
        "--model-name", "churn", "--config", "/tmp/pod-files/model.yaml",
    ]  # fmt: skip


def test_a_built_in_runtime_pod_has_no_sidecar() -> None:
    pod = built_pod({})
    pod["spec"]["containers"] = pod["spec"]["containers"][:1]
    view = pod_view(pod, {IMAGE})
    assert view is not None
    assert view.sidecar is None


def test_mlserver_entries_build_and_serve_from_their_output(tmp_path: Any) -> None:
    document = {"images": {IMAGE: {"build": {"script": "build_mlserver.py"}, "server": "mlserver"}}}
    images = ImageMap.parse(document, tmp_path / "map.yaml")
    launch = images.launch(IMAGE, tmp_path / "builds")
    assert launch.argv[1:] == ("start", str(launch.cwd / "model"))
    assert launch.argv[0].endswith("/bin/mlserver")
    assert launch.root == launch.cwd  # the build output stands for the image's root
    assert launch.model_dir is None  # not a modeldeploy model directory
    env = launch.environment(5000)
    assert (env["MLSERVER_HOST"], env["MLSERVER_HTTP_PORT"]) == ("127.0.0.1", "5000")
    assert len({env["MLSERVER_GRPC_PORT"], env["MLSERVER_METRICS_PORT"], "5000"}) == 3


def test_mlserver_needs_a_build(tmp_path: Any) -> None:
    document = {"images": {IMAGE: {"modelDir": "m", "server": "mlserver"}}}
    with pytest.raises(ImageMapError, match="server: mlserver needs a build entry"):
        ImageMap.parse(document, tmp_path / "map.yaml")
