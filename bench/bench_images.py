"""The project's images: sizes, build times, and pull + start -> Ready of a model container
beside the same model as a local process.

    python bench/bench_images.py [--runs 5]

Needs `make images` (or builds what is missing) and the container tools' environment
(`eval "$(hack/testenv.sh env)"`). For each run the model image is pulled by digest from a
local registry on 127.0.0.1 into an empty container storage of its own (a node that never
ran it: every layer is transferred and unpacked), and started with podman on the host
network; "Ready" is the runtime's readiness endpoint answering 200, which it does only
after the image's golden requests passed. The process side runs `modeldeploy serve` on the
image map's build of the same model. Prints figures; asserts nothing (goal: Ready, golden
requests included, within 3 s of the container's start).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from modeldeploy import contract as c
from modeldeploy.devenv.containers import ContainerLaunch
from modeldeploy.devenv.imagemap import ImageMap, default_build_root
from modeldeploy.devenv.images import BuiltImage, ensure_images, read_index
from modeldeploy.devenv.registry import RegistryServer, registry_binary, storage_dir
from modeldeploy.devenv.tools import cache_dir, free_port
from modeldeploy.serving.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
IMAGE_MAP = ROOT / "examples" / "churn" / "images.yaml"
MODEL = "churn"
READY_TIMEOUT = 60.0


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=300, check=True
    )


def empty_storage(workdir: Path) -> dict[str, str]:
    """The environment of podman with a storage of its own under `workdir` (same driver)."""
    shared = Path(os.environ["CONTAINERS_STORAGE_CONF"]).read_text()
    driver = next(line.split("=")[1].strip() for line in shared.splitlines() if "driver" in line)
    conf = workdir / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = {driver}\ngraphroot = "{workdir}/root"\nrunroot = "{workdir}/run"\n'
    )
    return {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}


def seconds_until(ready: Callable[[], bool], timeout: float = READY_TIMEOUT) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ready():
            return time.monotonic() - started
        time.sleep(0.02)
    raise TimeoutError(f"not ready within {timeout}s")


def answers_ready(http: httpx.Client, port: int) -> bool:
    try:
        return http.get(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready").status_code == 200
    except httpx.HTTPError:
        return False


def container_run(reference: str, http: httpx.Client) -> tuple[float, float]:
    """(pull seconds, start -> Ready seconds) of one fresh container on a fresh storage."""
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        env = empty_storage(Path(tmp))
        try:
            return _pull_and_start(reference, http, env)
        finally:  # the storage's mounts and files go with it
            subprocess.run(["podman", "system", "reset", "-f"], env=env, capture_output=True,
                           timeout=120, check=False)  # fmt: skip


def _pull_and_start(
    reference: str, http: httpx.Client, storage: dict[str, str]
) -> tuple[float, float]:
    """Pull as the pod runner does, then start the container with the pod runner's own
    `podman run` (ContainerLaunch), so the figure is what a pod in container mode sees."""
    launch = ContainerLaunch(reference)
    started = time.monotonic()
    subprocess.run(launch.pull_argv(), env=storage, capture_output=True, timeout=300, check=True)
    pulled = time.monotonic() - started
    port = free_port()
    name = f"md-bench-{port}"
    argv = launch.run_argv(name, port, {c.ENV_MODEL_NAME: MODEL}, "bench")
    started = time.monotonic()
    container = subprocess.Popen(argv, env=storage, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        ready = time.monotonic() - started + seconds_until(lambda: answers_ready(http, port))
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", name], env=storage, capture_output=True,
                       check=False)  # fmt: skip
        container.wait(timeout=30)
    return pulled, ready


def process_run(model_dir: Path, http: httpx.Client) -> float:
    server = ServerProcess(model_dir)
    started = time.monotonic()
    with server:
        return time.monotonic() - started + seconds_until(lambda: answers_ready(http, server.port))


def median(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, choices=range(1, 21), metavar="1..20")
    runs = parser.parse_args().runs
    with RegistryServer(registry_binary(), storage_dir()) as registry:
        images: dict[str, BuiltImage] = ensure_images(registry, lambda line: print(f"  {line}"))
        recorded = read_index()
        print("\nimage                         compressed  uncompressed  last build")
        for image in images.values():
            (inspected,) = json.loads(podman("image", "inspect", image.tagged("localhost")).stdout)
            built = recorded.get(image.name, image).build_seconds
            name = f"{image.repository}:{image.tag}"
            print(f"{name:<30}{image.compressed_bytes / 2**20:7.1f} MiB"
                  f"{inspected['Size'] / 2**20:10.1f} MiB  {built:6.0f} s")  # fmt: skip
        reference = images["churn-v1"].reference(registry.host)
        launches = ImageMap.load(IMAGE_MAP).prepare(default_build_root(), print)
        model = next(launch.model_dir for launch in launches.values() if launch.model_dir)
        pulls: list[float] = []
        containers: list[float] = []
        processes: list[float] = []
        with httpx.Client(trust_env=False, timeout=2) as http:
            for _ in range(runs):  # alternating, so background load hits both alike
                pulled, ready = container_run(reference, http)
                pulls.append(pulled)
                containers.append(ready)
                processes.append(process_run(model, http))
    print(f"\nchurn v1, {runs} runs each ({reference}):")
    print(f"  pull by digest from the local registry   {median(pulls)}")
    print(f"  container: podman run -> Ready (golden)  {median(containers)}")
    print(f"  process: modeldeploy serve -> Ready      {median(processes)}")
    ratio = statistics.median(containers) / statistics.median(processes)
    print(f"  container / process start -> Ready       {ratio:5.2f}x  (goal: container <= 3 s)")


if __name__ == "__main__":
    main()
