"""Runs `modeldeploy serve` (or `modeldeploy proxy`) as a child process on 127.0.0.1
(tests, benchmarks, demos).

with ServerProcess(model_dir) as server:
    server.wait_ready()
    httpx.post(server.url + "/v2/models/churn/infer", json=body)

with ServerProcess.proxy(profile_path, upstream_url, "churn") as proxy: ...
"""

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from modeldeploy.devenv.tools import free_port

LOOPBACK = "127.0.0.1"


def modeldeploy_command() -> list[str]:
    """The `modeldeploy` command of this Python environment."""
    script = Path(sys.executable).with_name("modeldeploy")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from modeldeploy.cli import main; main()"]


def wait_until_ok(
    url: str,
    timeout_s: float,
    *,
    running: Callable[[], bool],
    output: Callable[[], str],
    what: str = "server",
    period_s: float = 0.05,
) -> None:
    """Polls `url` until it answers 200; raises with the process's output when it exits
    first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not running():
            raise RuntimeError(f"{what} exited:\n{output()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(period_s)
    raise TimeoutError(f"{url} not 200 after {timeout_s}s:\n{output()}")


class ServerProcess:
    def __init__(
        self,
        model_dir: Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.model_dir = model_dir
        self.served = ["serve", "--model-dir", str(model_dir)]  # the command and what it serves
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._env = {**os.environ, **(env or {})}
        self._args = list(args)
        self._log = tempfile.NamedTemporaryFile(prefix="modeldeploy-serve-", suffix=".log")  # noqa: SIM115
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def proxy(
        cls,
        profile: Path,
        upstream: str,
        upstream_model: str,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> "ServerProcess":
        """`modeldeploy proxy` in front of the V2 server at `upstream`."""
        process = cls(profile.parent, port=port, env=env, args=args)
        process.served = [
            "proxy",
            "--profile", str(profile),
            "--upstream", upstream,
            "--upstream-model", upstream_model,
        ]  # fmt: skip
        return process

    def start(self) -> "ServerProcess":
        command = [
            *modeldeploy_command(),
            *self.served,
            "--host", LOOPBACK,
            "--port", str(self.port),
            *self._args,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, env=self._env, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_ready(self, timeout_s: float = 30.0, *, path: str = "/v2/health/ready") -> None:
        """Polls until `path` answers 200; raises with the server's output otherwise."""
        wait_until_ok(self.url + path, timeout_s, running=self.running, output=self.output)

    def wait_live(self, timeout_s: float = 30.0) -> None:
        self.wait_ready(timeout_s, path="/v2/health/live")

    def wait_exited(self, timeout_s: float = 30.0) -> int:
        """The exit code of a server that stops by itself (a broken image, say)."""
        assert self._process is not None, "not started"
        return self._process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
