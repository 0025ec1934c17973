"""The termination message: why `serve` exited, where the kubelet picks it up.

A kubelet mounts an empty file at the container's `terminationMessagePath`
(`/dev/termination-log` unless the pod says otherwise) and copies what the container wrote
there, at most 4096 bytes, into the pod's `lastState.terminated.message`. That is how a
container's own reason reaches the pod status: a probe's answer never does.
"""

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/dev/termination-log")
MAX_MESSAGE_BYTES = 4096
"""What a kubelet reads of the file."""


def termination_log(configured: str | None, default: Path = DEFAULT_PATH) -> Path | None:
    """Where the message goes: the configured path, else the kubelet's default when that
    file is there and writable (the kubelet mounts it; outside a pod nothing is created in
    /dev); None: nowhere."""
    if configured:
        return Path(configured)
    return default if default.is_file() and os.access(default, os.W_OK) else None


def encode(message: str) -> bytes:
    """The message on one line (a validation error spans several; readers of a message
    that fell back to the logs take its last line, where a crash ends) as UTF-8, cut to
    what a kubelet reads, at a character boundary."""
    data = " ".join(message.split()).encode()
    if len(data) <= MAX_MESSAGE_BYTES:
        return data
    return data[:MAX_MESSAGE_BYTES].decode(errors="ignore").encode()


def write_termination_message(path: Path | None, message: str) -> None:
    """Best effort: a message that cannot be written is logged, never a second failure."""
    if path is None:
        return
    try:
        path.write_bytes(encode(message))
    except OSError as err:
        log.warning("termination message not written to %s: %s", path, err)
