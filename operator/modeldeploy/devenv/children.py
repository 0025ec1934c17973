"""Child processes of a long-running dev tool: each in its own process group, logged to a
file, stopped with SIGTERM then SIGKILL, and recorded on disk so that a successor can reap
the orphans of a tool that was killed before it could clean up."""

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process (clock ticks since boot, /proc/PID/stat field 22): together
    with the pid it names one process, even after pid reuse. None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    start_ticks: int | None
    log_path: Path
    log_offset: int = 0  # where its output starts in the log (earlier runs come before)

    @classmethod
    def spawn(
        cls, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> "Child":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            offset = log.tell()
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: signals reach what it starts too
            )
        return cls(process, process_start_ticks(process.pid), log_path, offset)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def log_tail(self, limit: int = 2000) -> str:
        return self.output(limit).decode(errors="replace")

    def output(self, limit: int) -> bytes:
        """The last `limit` bytes of what this child wrote."""
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self.log_offset, size - limit))
                return log.read(limit)
        except OSError:
            return b""


def terminate(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a server this tool started, SIGKILL it after `timeout`; a no-op when it is
    not running."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def stop_all(children: Iterable[Child], timeout: float = 10.0) -> None:
    """SIGTERM every child's group, wait up to `timeout` in total, then SIGKILL."""
    pending = [c for c in children if c.running()]
    for child in pending:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [c for c in pending if c.running()]
    for child in pending:
        child.signal(signal.SIGKILL)
        child.process.wait(timeout=5)


def record_children(path: Path, children: Iterable[Child]) -> None:
    records = [{"pid": c.pid, "start_ticks": c.start_ticks} for c in children if c.running()]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records))
    os.replace(tmp, path)


def reap_recorded(path: Path) -> list[int]:
    """Kill the process groups recorded by a predecessor that are still alive (same pid and
    start time); returns their pids."""
    try:
        records = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    reaped = []
    for record in records:
        pid, ticks = int(record["pid"]), record.get("start_ticks")
        if ticks is not None and process_start_ticks(pid) == ticks:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                time.sleep(0.5)
            reaped.append(pid)
    path.unlink(missing_ok=True)
    return reaped
