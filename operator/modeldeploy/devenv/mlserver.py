"""MLServer (Seldon's V2 server, `hack/mlserver-env.sh`) serving a model directory's
scikit-learn artifact on 127.0.0.1: a real upstream for `modeldeploy proxy` (tests, bench).

with MLServerProcess(model_dir, name="churn") as mlserver:
    mlserver.wait_ready()
    ... mlserver.url, mlserver.grpc_port

It serves the directory's joblib file with `mlserver_sklearn.SKLearnModel` (settings.json
and model-settings.json written to a temporary directory of its own), nothing else of the
model directory: no preprocessing, no profile.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from modeldeploy.devenv.tools import free_port
from modeldeploy.serving.process import wait_until_ok

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[3]
SKLEARN_RUNTIME = "mlserver_sklearn.SKLearnModel"


def mlserver_venv() -> Path:
    """MLServer's virtualenv (`hack/mlserver-env.sh path`); FileNotFoundError when it has not
    been installed (`make setup` installs it)."""
    venv = Path(
        subprocess.run(
            [str(ROOT / "hack/mlserver-env.sh"), "path"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    if not (venv / ".stamp").exists():
        raise FileNotFoundError(f"MLServer is not installed in {venv}: run hack/mlserver-env.sh")
    return venv


def settings(http_port: int, grpc_port: int, metrics_port: int) -> dict[str, object]:
    """The server's settings.json: 127.0.0.1 only, one process (no parallel workers)."""
    return {
        "host": LOOPBACK,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0,
        "debug": False,
    }


def model_settings(name: str, version: str, artifact: Path) -> dict[str, object]:
    return {
        "name": name,
        "implementation": SKLEARN_RUNTIME,
        "parameters": {"uri": str(artifact), "version": version},
    }


class MLServerProcess:
    def __init__(
        self,
        model_dir: Path,
        *,
        name: str,
        version: str = "1",
        artifact: str = "model.joblib",
    ) -> None:
        self.name = name
        self.port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._folder = Path(tempfile.mkdtemp(prefix="modeldeploy-mlserver-"))
        (self._folder / "settings.json").write_text(
            json.dumps(settings(self.port, self.grpc_port, self.metrics_port))
        )
        model_folder = self._folder / name
        model_folder.mkdir()
        artifact_path = (model_dir / artifact).resolve()
        (model_folder / "model-settings.json").write_text(
            json.dumps(model_settings(name, version, artifact_path))
        )
        self._log = self._folder / "mlserver.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> "MLServerProcess":
        command = [str(mlserver_venv() / "bin" / "mlserver"), "start", str(self._folder)]
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._folder,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
                start_new_session=True,  # its own group: stop() ends its children too
            )
        return self

    def output(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Polls until the model is ready; raises with the server's output otherwise."""
        wait_until_ok(
            f"{self.url}/v2/models/{self.name}/ready", timeout_s,
            running=self.running, output=self.output, what="mlserver", period_s=0.2,
        )  # fmt: skip

    def kill(self) -> None:
        """Ends it at once (SIGKILL to its process group), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> "MLServerProcess":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
