"""The project's images, built offline and pushed by digest to the local registry.

    base       a minimal Debian bookworm with python3 (mmdebstrap from Debian's packages: no
               public registry is reachable here), imported into local container storage;
    operator   Containerfile at the repository root (`modeldeploy operator`);
    churn-v*   examples/churn/Containerfile: model + code + training profile, one image;
    crashloop  tests/images/crashloop: an entrypoint that exits (a broken model image).

Each image is tagged `<version>-<inputs hash>`: the hash covers its Containerfile, its build
arguments, the base and every file it copies, so an unchanged image is never rebuilt (the
registry already has the tag) and a changed one always is. `ensure_images` returns what the
registry holds, by digest, and writes it to `images/index.json` in the cache.

Container tools run with the configuration `hack/testenv.sh env` exports (CONTAINERS_*).
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy import __version__
from modeldeploy.devenv.registry import RegistryServer, registry_binary, storage_dir
from modeldeploy.devenv.tools import ToolsMissingError, cache_dir

ROOT = Path(__file__).resolve().parents[3]
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# libstdc++: numpy and scipy wheels link it (python:3.11-slim has it too).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libstdc++6")
# A fixed epoch: the same packages make the same base tarball.
SOURCE_DATE_EPOCH = "1764547200"
# The machine's CA bundle, given to pip inside builds as a secret (a TLS-intercepting proxy
# may stand between the build and the package index); never copied into an image.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
REGISTRY_LIMIT_BYTES = 8 * 2**30
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

Say = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """A build, import or push failed; the message ends with the tool's output."""


@dataclass(frozen=True)
class Recipe:
    name: str  # key in the index
    repository: str
    version: str  # first part of the tag
    containerfile: str  # relative to the repository root, which is the build context
    inputs: tuple[str, ...]  # files and directories the image is made of
    build_args: tuple[tuple[str, str], ...] = ()


# What the build stage of every Python image copies (images/venv.sh makes the virtualenv).
_PACKAGE_INPUTS = (".containerignore", "pyproject.toml", "README.md", "operator", "images")
_OPERATOR_INPUTS = ("Containerfile", *_PACKAGE_INPUTS)
_CHURN_INPUTS = (*_PACKAGE_INPUTS, "examples/churn")


def _churn(version: str, variant: str) -> Recipe:
    return Recipe(
        f"churn-v{version}",
        "ml/churn",
        version,
        "examples/churn/Containerfile",
        _CHURN_INPUTS,
        (("VARIANT", variant), ("MODEL_VERSION", version)),
    )


RECIPES: tuple[Recipe, ...] = (
    Recipe("operator", "modeldeploy/operator", __version__, "Containerfile", _OPERATOR_INPUTS),
    _churn("1", "healthy"),  # v1: healthy
    _churn("2", "skewed"),  # v2: training/serving skew, rolled back on drift
    _churn("3", "healthy"),  # v3: healthy again, promoted
    Recipe(
        "crashloop",
        "ml/crashloop",
        "1",
        "tests/images/crashloop/Containerfile",
        ("tests/images/crashloop",),
    ),
)


@dataclass(frozen=True)
class BuiltImage:
    name: str
    repository: str
    tag: str
    digest: str  # sha256:... of the manifest, as the registry serves it
    compressed_bytes: int  # layers as pushed (what a pull transfers)
    build_seconds: float  # how long its last build took (0: built before this cache existed)
    cached: bool = True  # the registry had it already

    def reference(self, registry_host: str) -> str:
        return f"{registry_host}/{self.repository}@{self.digest}"

    def tagged(self, registry_host: str) -> str:
        return f"{registry_host}/{self.repository}:{self.tag}"


# --- pure parts ---------------------------------------------------------------------------


def _ignored(path: Path) -> bool:
    """What .containerignore keeps out of every build context (and so out of the hash):
    bytecode and the egg-info an editable install leaves in a checkout."""
    return path.suffix == ".pyc" or any(
        part == "__pycache__" or part.endswith(".egg-info") for part in path.parts
    )


def _files(root: Path, inputs: Iterable[str]) -> list[Path]:
    found: list[Path] = []
    for entry in inputs:
        path = root / entry
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        found += [p for p in candidates if p.is_file() and not _ignored(p)]
    return found


def inputs_digest(root: Path, recipe: Recipe, base: str) -> str:
    """Hash of everything that makes the image: recipe, base image id, copied files."""
    digest = hashlib.sha256(json.dumps([asdict(recipe), base]).encode())
    for path in _files(root, recipe.inputs):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def recipe_tag(recipe: Recipe, inputs: str) -> str:
    return f"{recipe.version}-{inputs[:12]}"


def base_key() -> str:
    spec = [DEBIAN_SUITE, *DEBIAN_MIRRORS, *BASE_PACKAGES, SOURCE_DATE_EPOCH]
    return hashlib.sha256("\0".join(spec).encode()).hexdigest()[:12]


def base_image_name() -> str:
    return f"localhost/modeldeploy/base:{DEBIAN_SUITE}-{base_key()}"


def manifest_size(manifest: dict[str, object]) -> int:
    layers = manifest.get("layers")
    return sum(int(layer.get("size", 0)) for layer in layers if isinstance(layer, dict)) if (
        isinstance(layers, list)
    ) else 0  # fmt: skip


# --- tools --------------------------------------------------------------------------------


def _check_tools() -> None:
    if not os.environ.get("CONTAINERS_STORAGE_CONF"):
        raise ToolsMissingError(
            'CONTAINERS_STORAGE_CONF is not set: run through `make` or `eval "$(hack/testenv.sh '
            'env)"` after `hack/testenv.sh install`'
        )


def _run(argv: Sequence[str], log: Path, timeout: float, cwd: Path = ROOT) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(
            list(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
            check=False,
        )  # fmt: skip
    if result.returncode != 0:
        tail = log.read_bytes()[-3000:].decode(errors="replace")
        raise ImageBuildError(f"{argv[0]} failed ({result.returncode}), see {log}:\n{tail}")


def _image_exists(name: str) -> bool:
    result = subprocess.run(
        ["podman", "image", "exists", name], capture_output=True, timeout=60, check=False
    )
    return result.returncode == 0


def ensure_base(workdir: Path, say: Say) -> str:
    """The base image in local container storage (built once per package set)."""
    name = base_image_name()
    if _image_exists(name):
        return name
    say(f"base: mmdebstrap {DEBIAN_SUITE} with {', '.join(BASE_PACKAGES)} (about a minute)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        excludes = [
            f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "doc", "info", "locale")
        ]
        _run(
            [
                "mmdebstrap", "--variant=essential", "--mode=root", "--format=tar",
                f"--include={','.join(BASE_PACKAGES)}",
                *excludes, "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                '--customize-hook=rm -rf "$1"/var/cache/* "$1"/var/lib/apt/lists/* "$1"/var/log/*',
                DEBIAN_SUITE, str(tarball), *DEBIAN_MIRRORS,
            ],
            workdir / "base.log", timeout=900,
        )  # fmt: skip
        _run(["podman", "import", str(tarball), name], workdir / "base.log", timeout=300)
    say(f"base: {name} in {time.monotonic() - started:.0f} s")
    return name


@dataclass
class _Registry:
    """Reads manifests straight from the registry's HTTP API (loopback)."""

    host: str
    opener: urllib.request.OpenerDirector = field(
        default_factory=lambda: urllib.request.build_opener(urllib.request.ProxyHandler({}))
    )

    def manifest(self, repository: str, ref: str) -> tuple[str, dict[str, object]] | None:
        request = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{ref}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                body = json.loads(response.read())
                return str(response.headers["Docker-Content-Digest"]), body
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise


def _build(recipe: Recipe, base: str, tag: str, workdir: Path, root: Path = ROOT) -> None:
    local = f"localhost/{recipe.repository}:{tag}"
    args = [("BASE_IMAGE", base), *recipe.build_args]
    if recipe.name == "operator":
        args += [("VERSION", __version__), ("REVISION", _git_revision())]
    secret = [f"--secret=id=ca-bundle,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    _run(
        [
            "buildah", "bud", "--isolation", "chroot", "--layers", *secret,
            *(f"--build-arg={k}={v}" for k, v in args),
            "-f", recipe.containerfile, "-t", local, ".",
        ],
        workdir / f"{recipe.name}.log", timeout=1800, cwd=root,
    )  # fmt: skip


def _git_revision() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "unknown"


def _push(recipe: Recipe, tag: str, registry: RegistryServer, workdir: Path) -> None:
    local = f"localhost/{recipe.repository}:{tag}"
    for remote_tag in (tag, recipe.version):  # the moving tag too (e.g. the chart's appVersion)
        _run(
            ["buildah", "push", "--tls-verify=false", local,
             f"docker://{registry.host}/{recipe.repository}:{remote_tag}"],
            workdir / f"{recipe.name}.log", timeout=600,
        )  # fmt: skip


def _base(workdir: Path, say: Say) -> tuple[str, str]:
    """The base image's name and id (its id is part of every image's inputs)."""
    base = ensure_base(workdir, say)
    base_id = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", base],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    return base, base_id


def _ensure(
    recipe: Recipe,
    root: Path,
    *,
    base: tuple[str, str],
    known: BuiltImage | None,
    api: _Registry,
    registry: RegistryServer,
    say: Say,
) -> BuiltImage:
    """One recipe's image in the registry: found by its inputs' tag, else built and pushed."""
    workdir = cache_dir() / "images"
    tag = recipe_tag(recipe, inputs_digest(root, recipe, base[1]))
    seconds = known.build_seconds if known is not None and known.tag == tag else 0.0
    found = api.manifest(recipe.repository, tag)
    cached = found is not None
    if found is None:
        say(f"{recipe.name}: building {recipe.repository}:{tag}")
        started = time.monotonic()
        _build(recipe, base[0], tag, workdir, root)
        _push(recipe, tag, registry, workdir)
        seconds = time.monotonic() - started
        found = api.manifest(recipe.repository, tag)
        if found is None:
            raise ImageBuildError(f"{recipe.repository}:{tag} not in the registry after push")
    digest, manifest = found
    state = "cached" if cached else f"built in {seconds:.0f} s"
    say(f"{recipe.name}: {recipe.repository}@{digest} ({state})")
    return BuiltImage(
        recipe.name, recipe.repository, tag, digest, manifest_size(manifest), seconds, cached
    )


def ensure_context_image(
    registry: RegistryServer, context: Path, repository: str, version: str, say: Say
) -> BuiltImage:
    """The image of a build context outside the repository (`modeldeploy build`'s: its
    Containerfile at the top), built as the project's own are: on the offline base, tagged
    by its inputs' hash, pushed to the registry and returned by digest."""
    _check_tools()
    workdir = cache_dir() / "images"
    workdir.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(repository.replace("/", "-"), repository, version, "Containerfile", (".",))
    with (workdir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time on this machine
        base = _base(workdir, say)
        api = _Registry(registry.host)
        return _ensure(recipe, context, base=base, known=None, api=api, registry=registry, say=say)


def ensure_images(
    registry: RegistryServer, say: Say, names: Sequence[str] | None = None
) -> dict[str, BuiltImage]:
    """Build and push what the registry lacks; return every asked image by digest."""
    _check_tools()
    workdir = cache_dir() / "images"
    workdir.mkdir(parents=True, exist_ok=True)
    recipes = [r for r in RECIPES if names is None or r.name in names]
    unknown = set(names or ()) - {r.name for r in RECIPES}
    if unknown:
        raise ValueError(f"no image recipe {', '.join(sorted(unknown))}")
    api = _Registry(registry.host)
    built: dict[str, BuiltImage] = {}
    run_started = int(time.time())
    with (workdir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time on this machine
        _bound_registry(registry.storage, say)
        previous = read_index()
        base, base_id = _base(workdir, say)
        for recipe in recipes:
            known = previous.get(recipe.name)
            built[recipe.name] = _ensure(
                recipe, ROOT, base=(base, base_id), known=known, api=api, registry=registry, say=say
            )
        if any(not image.cached for image in built.values()):
            _prune_local(built.values(), run_started)
        merged = {**previous, **built}
        index = {name: asdict(image) for name, image in merged.items()}
        (workdir / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    return built


def _prune_local(current: Iterable[BuiltImage], run_started: int) -> None:
    """Local storage keeps the images just built or found and this run's build cache: every
    code change builds new images, and the old ones with their build caches (an unpacked
    virtualenv each) would pile up. Older untagged images go too (earlier builds' cache
    layers, earlier pulls by digest); podman refuses to remove one that a current image
    still builds on or a container uses, so those stay."""
    keep = {f"localhost/{image.repository}:{image.tag}" for image in current}
    repositories = {f"localhost/{image.repository}" for image in current}
    for _ in range(20):  # removing a leaf may free its parent for the next pass
        listed = subprocess.run(
            ["podman", "images", "-a", "--format", "json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        images = json.loads(listed.stdout or "[]")
        stale = [str(i["Id"]) for i in images if is_stale(i, keep, repositories, run_started)]
        removed = subprocess.run(
            ["podman", "rmi", "--ignore", *stale], capture_output=True, text=True, timeout=600,
            check=False,
        ) if stale else None  # fmt: skip
        if removed is None or not removed.stdout.strip():
            return


def _bound_registry(storage: Path, say: Say) -> None:
    """Every code change pushes new layers and nothing deletes old ones (garbage collection
    needs a registry nobody serves from): past REGISTRY_LIMIT_BYTES the storage starts
    afresh, and what is current is pushed again from the local build cache (seconds)."""
    used = sum(f.stat().st_size for f in storage.rglob("*") if f.is_file())
    if used <= REGISTRY_LIMIT_BYTES:
        return
    say(f"registry storage holds {used / 2**30:.1f} GiB: starting it afresh")
    for entry in storage.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def is_stale(image: dict[str, Any], keep: set[str], repositories: set[str], before: int) -> bool:
    """Older than `before`, and untagged, or named only by old tags of our repositories and
    by pulls by digest (cheap to pull again); never the base, never other images."""
    if int(image.get("Created", before)) >= before:
        return False
    for name in image.get("Names") or []:  # podman's JSON: tags and digest references
        if "@" in name:
            continue
        if name in keep or name.rsplit(":", 1)[0] not in repositories:
            return False
    return True


def read_index() -> dict[str, BuiltImage]:
    """What the last `ensure_images` recorded (build times survive later cached runs)."""
    try:
        raw = json.loads((cache_dir() / "images" / "index.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {name: BuiltImage(**entry) for name, entry in raw.items()}


def images_with_registry(say: Say, names: Sequence[str] | None = None) -> dict[str, BuiltImage]:
    """`ensure_images` with a registry of its own for the pushes, stopped afterwards."""
    with RegistryServer(registry_binary(), storage_dir()) as registry:
        return ensure_images(registry, say, names)
