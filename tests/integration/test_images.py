"""The project's images are real: in the local registry by digest, runnable with podman.

`make images` (or the `images` fixture) built them offline; here skopeo reads each digest
back from the registry, the operator image starts as its non-root user on a read-only root
filesystem, and a model image pulled by digest turns Ready only after its golden requests.
"""

import json
import subprocess

import httpx
import pytest
from operator_harness import wait_for

from modeldeploy.devenv.images import RECIPES, BuiltImage
from modeldeploy.devenv.registry import RegistryServer
from modeldeploy.devenv.tools import free_port

pytestmark = pytest.mark.integration


def run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def test_every_recipe_is_in_the_registry_by_digest(
    images: dict[str, BuiltImage], registry: RegistryServer
) -> None:
    assert set(images) == {recipe.name for recipe in RECIPES}
    for image in images.values():
        inspected = run(
            "skopeo", "inspect", "--tls-verify=false", f"docker://{image.reference(registry.host)}"
        )
        assert inspected.returncode == 0, inspected.stderr
        info = json.loads(inspected.stdout)
        assert info["Digest"] == image.digest
        assert image.compressed_bytes > 0


def test_operator_image_labels_user_and_read_only_start(
    images: dict[str, BuiltImage], registry: RegistryServer
) -> None:
    reference = images["operator"].reference(registry.host)
    pulled = run("podman", "pull", "--tls-verify=false", reference)
    assert pulled.returncode == 0, pulled.stderr
    config = json.loads(run("podman", "image", "inspect", reference).stdout)[0]["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == images["operator"].tag.split("-")[0]
    assert {"org.opencontainers.image.source", "org.opencontainers.image.revision"} <= set(labels)
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["modeldeploy", "operator"]
    started = run(
        "podman", "run", "--rm", "--network", "host", "--read-only", reference, "--help"
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "Run the operator" in started.stdout
    # No compilers in the final image (it is what a cluster runs).
    probe = run(
        "podman", "run", "--rm", "--entrypoint", "/bin/sh", reference, "-c",
        "command -v gcc cc g++ || echo none",
    )  # fmt: skip
    assert probe.stdout.strip() == "none"


def test_model_image_turns_ready_after_its_golden_requests(
    images: dict[str, BuiltImage], registry: RegistryServer
) -> None:
    reference = images["churn-v1"].reference(registry.host)
    assert run("podman", "pull", "--tls-verify=false", reference).returncode == 0
    port = free_port()
    name = f"md-test-churn-{port}"
    started = run(
        "podman", "run", "-d", "--rm", "--name", name, "--network", "host", "--read-only",
        "--tmpfs", "/tmp", "-e", f"MODELDEPLOY_PORT={port}", "-e", "MODELDEPLOY_HOST=127.0.0.1",
        "-e", "MODELDEPLOY_MODEL_NAME=churn", reference,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        with httpx.Client(trust_env=False, timeout=2) as http:

            def ready() -> bool:
                try:
                    url = f"http://127.0.0.1:{port}/v2/models/churn/ready"
                    return http.get(url).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, timeout=60, interval=0.1, what="the model container Ready")
            metrics = http.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'modeldeploy_model_info{model="churn"' in metrics
        logs = run("podman", "logs", name).stdout + run("podman", "logs", name).stderr
        assert "golden requests passed" in logs
    finally:
        run("podman", "rm", "-f", "-t", "2", name)
