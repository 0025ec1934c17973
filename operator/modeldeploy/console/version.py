"""What `modeldeploy version` reports: this package's version and, for bug reports, the
Python that runs it and the versions of the libraries whose behaviour matters most.

Read from installed metadata, never by importing the libraries: fast, and it works where
one of them is missing (a model image has no kopf or kubernetes).
"""

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from modeldeploy import __version__

REPORTED_LIBRARIES = ("kopf", "kubernetes", "pydantic")


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution`, None if it is not installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def version_report() -> dict[str, Any]:
    """The JSON of `modeldeploy version -o json`."""
    return {
        "version": __version__,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": platform.platform(),
        "libraries": {name: installed_version(name) for name in REPORTED_LIBRARIES},
    }
