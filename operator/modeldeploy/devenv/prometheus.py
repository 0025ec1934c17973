"""A real Prometheus process on 127.0.0.1 whose scrape targets come from file_sd files.

Only loopback targets are accepted (and the scrape config drops anything else), so neither
a test nor the demo can ever make Prometheus dial a pod or Service address.
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from modeldeploy.devenv.children import terminate
from modeldeploy.devenv.tools import free_port

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
Target = tuple[str, Mapping[str, str]]  # ("127.0.0.1:port", labels)


def is_loopback_address(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return host in LOOPBACK_HOSTS and port.isdigit()


def scrape_config(targets_dir: Path, scrape_interval: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": "file_sd",
                "scrape_interval": scrape_interval,
                "file_sd_configs": [
                    {"files": [str(targets_dir / "*.json")], "refresh_interval": "1s"}
                ],
                # Defence in depth: whatever lands in a targets file, only loopback is scraped.
                "relabel_configs": [
                    {
                        "source_labels": ["__address__"],
                        "regex": r"(127\.0\.0\.1|localhost):\d+",
                        "action": "keep",
                    },
                ],
            }
        ],
    }


def write_targets(targets_dir: Path, job: str, targets: Sequence[Target]) -> Path:
    """Write `targets_dir/<job>.json` (file_sd) with one group per target; also used by tools
    that publish targets to a Prometheus they did not start (the pod runner)."""
    for address, _ in targets:
        if not is_loopback_address(address):
            raise ValueError(f"refusing non-loopback scrape target {address!r}")
    groups = [
        {"targets": [address], "labels": {"job": job, **labels}} for address, labels in targets
    ]
    path = targets_dir / f"{job}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, path)  # atomic: Prometheus never reads half a file
    return path


class PrometheusServer:
    """Runs `prometheus` with its data, config and targets under `workdir`."""

    def __init__(
        self, binary: Path, workdir: Path, scrape_interval: str = "1s", port: int | None = None
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.scrape_interval = scrape_interval
        self.port = port or free_port()
        self.targets_dir = workdir / "targets"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> int:
        """Start and wait until ready; returns the process id."""
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.targets_dir, self.scrape_interval)))
        log = (self.workdir / "prometheus.log").open("ab")
        self._process = subprocess.Popen(
            [
                str(self.binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)
        return self._process.pid

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self._process.returncode}; "
                    f"see {self.workdir / 'prometheus.log'}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready on {self.url} after {timeout}s")

    def set_targets(self, job: str, targets: Sequence[Target]) -> None:
        """Replace the targets of `job` (an empty list removes them)."""
        write_targets(self.targets_dir, job, targets)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns the `result` list of a vector/matrix answer."""
        data = urllib.parse.urlencode({"query": promql}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process, timeout=15)

    def __enter__(self) -> "PrometheusServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
