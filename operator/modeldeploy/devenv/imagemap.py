"""Image map: which container images the pod runner can run without a container runtime.

    images:
      registry.example/ml/churn@sha256:3b07...:           # exact image reference of the pod
        build: {script: build.py, args: [--version, "1"]}  # python SCRIPT OUT ARGS..., once
      registry.example/ml/churn-local:1:
        modelDir: build/churn-v1/model                     # relative to the map file
      registry.example/ml/static:1:
        command: [python, responder.py, --port, "{port}"]  # {host} and {port} substituted
        readyPath: /healthz                                # default /v2/health/ready
      registry.example/ml/churn-mlserver@sha256:...:      # an external V2 server's image
        build: {script: build_mlserver.py, args: [--version, "1"]}
        server: mlserver                                   # MLServer on OUT/model

`modelDir` and `build` entries run `modeldeploy serve` on the model directory (a `build`
entry's is `OUT/model`; its `OUT/data` holds the example's data, e.g. holdout rows for the
load generator). A `server: mlserver` build entry is an external V2 server's image
(spec.externalServer): MLServer (`hack/mlserver-env.sh`) serves OUT/model (its
model-settings.json), and OUT stands for the image's root for the files its pods' init
containers copy out of it (OUT/modeldeploy/profile.json for /modeldeploy/profile.json).
Builds go to a cache outside the work tree, keyed by the script's directory
sources and arguments, so that an edited example is rebuilt and an unchanged one never is.
"""

import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modeldeploy.devenv.mlserver import mlserver_venv
from modeldeploy.devenv.tools import cache_dir, free_port
from modeldeploy.serving.process import modeldeploy_command

DEFAULT_READY_PATH = "/v2/health/ready"
LOOPBACK = "127.0.0.1"


class ImageMapError(Exception):
    """The image map cannot be read or an entry cannot be prepared; the message says why."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BuildSpec(_Entry):
    script: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list, max_length=50)


class ImageEntry(_Entry):
    model_dir: str | None = Field(default=None, alias="modelDir", min_length=1)
    build: BuildSpec | None = None
    command: list[str] | None = Field(default=None, min_length=1, max_length=100)
    ready_path: str | None = Field(default=None, alias="readyPath", pattern=r"^/")
    server: Literal["modeldeploy", "mlserver"] = "modeldeploy"

    @model_validator(mode="after")
    def _exactly_one_way(self) -> "ImageEntry":
        ways = [w for w in (self.model_dir, self.build, self.command) if w is not None]
        if len(ways) != 1:
            raise ValueError("needs exactly one of modelDir, build, command")
        if self.server == "mlserver" and self.build is None:
            raise ValueError("server: mlserver needs a build entry")
        return self

    @property
    def built_marker(self) -> str:
        """The file a finished build has written, relative to OUT."""
        return "model/model-settings.json" if self.server == "mlserver" else "model/model.yaml"


class _Document(_Entry):
    images: dict[str, ImageEntry] = Field(min_length=1)


def default_build_root() -> Path:
    """Where `build` entries are built (outside the work tree)."""
    return cache_dir() / "images"


@dataclass(frozen=True)
class Launch:
    """How to run one image's entrypoint as a local process."""

    argv: tuple[str, ...]  # may hold {host} and {port}
    cwd: Path
    ready_path: str | None  # None: the pod's own readiness probe path, else the default
    model_dir: Path | None = None  # model images: their model directory
    data_dir: Path | None = None  # built examples: OUT/data
    root: Path | None = None  # built examples: OUT, the image's root for files copied out
    env: Mapping[str, str] = field(default_factory=dict)  # may hold {host}, {port}, {free}

    def command(self, port: int) -> list[str]:
        return [_substituted(arg, port) for arg in self.argv]

    def environment(self, port: int) -> dict[str, str]:
        """`env` with {host}, {port}, and each {free} a port of its own."""
        return {name: _substituted(value, port) for name, value in self.env.items()}


def _substituted(text: str, port: int) -> str:
    text = text.replace("{host}", LOOPBACK).replace("{port}", str(port))
    return text.replace("{free}", str(free_port())) if "{free}" in text else text


def mlserver_launch(out: Path, ready_path: str | None) -> Launch:
    """MLServer on OUT/model, on 127.0.0.1 only, one process (ports from its MLSERVER_*
    settings: gRPC and metrics on ports of their own)."""
    env = {
        "MLSERVER_HOST": "{host}",
        "MLSERVER_HTTP_PORT": "{port}",
        "MLSERVER_GRPC_PORT": "{free}",
        "MLSERVER_METRICS_PORT": "{free}",
        "MLSERVER_PARALLEL_WORKERS": "0",
        "PYTHONWARNINGS": "ignore",
    }
    argv = (str(mlserver_venv() / "bin" / "mlserver"), "start", str(out / "model"))
    return Launch(argv, out, ready_path, data_dir=out / "data", root=out, env=env)


def serve_argv(model_dir: Path) -> tuple[str, ...]:
    return (
        *modeldeploy_command(),
        "serve", "--model-dir", str(model_dir), "--host", "{host}", "--port", "{port}",
    )  # fmt: skip


@dataclass(frozen=True)
class ImageMap:
    path: Path
    entries: Mapping[str, ImageEntry]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, path: Path) -> "ImageMap":
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ImageMapError(f"cannot read image map {path}: {err}") from err
        return cls.parse(document, path.resolve())

    @classmethod
    def parse(cls, document: object, path: Path) -> "ImageMap":
        try:
            parsed = _Document.model_validate(document)
        except ValidationError as err:
            raise ImageMapError(f"invalid image map {path}: {err}") from err
        return cls(path, parsed.images)

    def __contains__(self, image: object) -> bool:
        return image in self.entries

    def launch(self, image: str, build_root: Path | None = None) -> Launch:
        """How to run `image`; a build entry must have been built (see `prepare`)."""
        entry = self.entries[image]
        if entry.command is not None:
            return Launch(tuple(entry.command), self.base_dir, entry.ready_path)
        if entry.model_dir is not None:
            model_dir = (self.base_dir / entry.model_dir).resolve()
            return Launch(serve_argv(model_dir), self.base_dir, entry.ready_path, model_dir)
        assert entry.build is not None
        out = (build_root or default_build_root()) / build_key(image, entry.build, self.base_dir)
        if entry.server == "mlserver":
            return mlserver_launch(out, entry.ready_path)
        return Launch(
            serve_argv(out / "model"), out, entry.ready_path, out / "model", out / "data", out
        )

    def prepare(self, build_root: Path, say: Callable[[str], None]) -> dict[str, Launch]:
        """Build what is not built yet (cached; safe against concurrent preparers) and
        check that every model directory exists."""
        launches = {}
        for image, entry in self.entries.items():
            launch = self.launch(image, build_root)
            if entry.build is not None:
                _build(entry.build, self.base_dir, launch.cwd, entry.built_marker, say)
            if launch.model_dir is not None and not (launch.model_dir / "model.yaml").is_file():
                raise ImageMapError(f"{image}: no model.yaml in {launch.model_dir}")
            launches[image] = launch
        return launches


# What a build's output depends on besides the script's own directory: the profile builder
# and the serving path (golden requests record what the image's serving code answers).
_PACKAGE = Path(__file__).resolve().parents[1]
BUILD_DEPENDENCIES = (_PACKAGE / "profiling", _PACKAGE / "serving")


def sources_digest(directories: Sequence[Path]) -> str:
    """Hash of the Python sources in `directories` (what a build depends on)."""
    digest = hashlib.sha256()
    for directory in directories:
        for path in sorted(directory.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_key(image: str, build: BuildSpec, base_dir: Path) -> str:
    """Cache directory name: readable prefix + hash of image, script, args and sources."""
    script = (base_dir / build.script).resolve()
    sources = sources_digest((script.parent, *BUILD_DEPENDENCIES))
    digest = hashlib.sha256("\0".join([image, str(script), *build.args, sources]).encode())
    repository = image.split("@", maxsplit=1)[0].rsplit("/", 1)[-1]
    readable = re.sub(r"[^a-z0-9]+", "-", repository.lower())
    return f"{readable.strip('-')[:40]}-{digest.hexdigest()[:16]}"


def _build(
    build: BuildSpec, base_dir: Path, out: Path, marker: str, say: Callable[[str], None]
) -> None:
    if (out / marker).is_file():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / f".{out.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another preparer may be building the same entry
        if (out / marker).is_file():
            return
        script = (base_dir / build.script).resolve()
        say(f"building {out.name}: {script.name} {' '.join(build.args)}")
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        try:
            result = subprocess.run(
                [sys.executable, str(script), str(tmp), *build.args],
                cwd=base_dir,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if result.returncode != 0:
                raise ImageMapError(
                    f"build {script} {build.args} failed ({result.returncode}):\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
                )
            shutil.rmtree(out, ignore_errors=True)  # a half-built leftover, never complete
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def load_build_script(script: Path, name: str) -> ModuleType:
    """A build script (e.g. examples/churn/build.py) imported as a module, for callers that
    build in process (benches, runtime tests) rather than through an image map entry."""
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
