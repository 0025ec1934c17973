"""A real OCI registry (CNCF Distribution, built from Go modules by `hack/testenv.sh`) on
127.0.0.1, storing under the cache so that pushed images outlive the process.

Images are pushed once (`modeldeploy dev images`) and referenced by digest; any later
registry process over the same storage serves them again, on whatever port it listens:
a reference is `<registry.host>/<repository>@sha256:...`, the digest never changes.

    with RegistryServer(registry_binary(), storage_dir()) as registry:
        registry.host            # "127.0.0.1:PORT"
"""

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from modeldeploy.devenv.children import terminate
from modeldeploy.devenv.tools import ToolsMissingError, cache_dir, free_port


def registry_binary() -> Path:
    value = os.environ.get("MODELDEPLOY_REGISTRY_BIN")
    if not value or not (Path(value) / ".stamp").is_file():
        raise ToolsMissingError(
            "the registry is not built or not exported: run `hack/testenv.sh install` and "
            '`eval "$(hack/testenv.sh env)"`'
        )
    return Path(value) / "registry"


def storage_dir() -> Path:
    return cache_dir() / "registry"


def registry_config(storage: Path, port: int) -> dict[str, object]:
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        # Loopback only: nothing but this machine's tools ever pulls.
        "http": {"addr": f"127.0.0.1:{port}"},
    }


class RegistryServer:
    """Runs `registry serve` with its config and log under `workdir`."""

    def __init__(
        self, binary: Path, storage: Path, workdir: Path | None = None, port: int | None = None
    ) -> None:
        self.binary = binary
        self.storage = storage
        self.port = port or free_port()
        self.workdir = workdir or storage.parent / "registry-runs" / str(self.port)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """What image references start with: `127.0.0.1:PORT`."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 30.0) -> "RegistryServer":
        self.storage.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(yaml.safe_dump(registry_config(self.storage, self.port)))
        log_path = self.workdir / "registry.log"
        # No tracing exporter: it would try to dial a collector.
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.binary), "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"registry exited with {self._process.returncode}; see {log_path}"
                )
            if self.answering():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"registry not answering on {self.host} after {timeout}s")

    def answering(self) -> bool:
        """The V2 API's base endpoint answers (200: no auth configured)."""
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process, timeout=10)

    def __enter__(self) -> "RegistryServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
