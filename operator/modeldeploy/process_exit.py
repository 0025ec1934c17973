"""The end of a `modeldeploy` process: once its command has returned, the process ends with
the command's exit status within a deadline, whatever is left to wait for.

The interpreter's own exit joins every non-daemon thread a library left behind (executors'
workers included) and runs atexit hooks. A model server whose image warm-up found broken has
written its termination message and shut down; if its process then never ends, its pod stays
Running without a restart and the kubelet never sees its exit code (seen once, under load,
after uvicorn's last line)."""

import os
import threading

EXIT_DEADLINE_S = 10.0
"""How long the interpreter's exit may take once a command has returned."""


def exit_status(code: object) -> int:
    """The status a process exits with for `SystemExit(code)`: None is 0, a message 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def end_within(status: int) -> None:
    """Ends the process with `status` after EXIT_DEADLINE_S unless it has ended by then: a
    daemon timer, which never keeps the process alive itself."""
    timer = threading.Timer(EXIT_DEADLINE_S, os._exit, (status,))
    timer.daemon = True
    timer.start()
