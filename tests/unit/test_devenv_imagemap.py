"""Image map: parsing, how each kind of entry runs, the build cache and its key."""

import os
from pathlib import Path

import pytest
import yaml

from modeldeploy.devenv.imagemap import (
    DEFAULT_READY_PATH,
    ImageMap,
    ImageMapError,
    build_key,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = """
import sys
from pathlib import Path
out = Path(sys.argv[1])
(out / "model").mkdir(parents=True)
(out / "data").mkdir()
(out / "model" / "model.yaml").write_text("name: toy\\nversion: " + sys.argv[2] + "\\n")
with open(Path(__file__).parent / "builds.log", "a") as log:
    log.write(sys.argv[2] + "\\n")
"""


def load(tmp_path: Path, images: object) -> ImageMap:
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump({"images": images}))
    return ImageMap.load(path)


def test_model_dir_entries_serve_a_directory_relative_to_the_map(tmp_path: Path) -> None:
    images = load(tmp_path, {"toy:1": {"modelDir": "models/toy"}})
    launch = images.launch("toy:1")
    assert launch.model_dir == tmp_path / "models" / "toy"
    command = launch.command(4321)
    assert command[-7:] == [
        "serve", "--model-dir", str(tmp_path / "models" / "toy"),
        "--host", "127.0.0.1", "--port", "4321",
    ]  # fmt: skip
    assert launch.cwd == tmp_path
    assert launch.ready_path is None  # the pod's own readiness probe path decides
    assert "toy:1" in images
    assert "toy:2" not in images


def test_command_entries_get_host_and_port_substituted(tmp_path: Path) -> None:
    images = load(
        tmp_path,
        {"static:1": {"command": ["responder", "--listen", "{host}:{port}"], "readyPath": "/ok"}},
    )
    launch = images.launch("static:1")
    assert launch.command(8081) == ["responder", "--listen", "127.0.0.1:8081"]
    assert launch.ready_path == "/ok"
    assert launch.model_dir is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"images": {"x:1": {}}}, "exactly one of modelDir, build, command"),
        ({"images": {"x:1": {"modelDir": "m", "command": ["c"]}}}, "exactly one"),
        ({"images": {"x:1": {"modelDir": "m", "colour": "red"}}}, "colour"),
        ({"images": {"x:1": {"command": ["c"], "readyPath": "ok"}}}, "readyPath"),
        ({"images": {}}, "images"),
        ({"pictures": {}}, "pictures"),
        ([1, 2], "invalid image map"),
    ],
)
def test_invalid_maps_are_refused_with_the_reason(document: object, message: str) -> None:
    with pytest.raises(ImageMapError, match=message):
        ImageMap.parse(document, Path("/maps/images.yaml"))


def test_unreadable_map(tmp_path: Path) -> None:
    with pytest.raises(ImageMapError, match="cannot read"):
        ImageMap.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("images: [unclosed")
    with pytest.raises(ImageMapError, match="cannot read"):
        ImageMap.load(tmp_path / "bad.yaml")


def test_builds_run_once_into_the_cache_and_again_when_sources_change(tmp_path: Path) -> None:
    (tmp_path / "build.py").write_text(BUILD_SCRIPT)
    images = load(tmp_path, {"toy:1": {"build": {"script": "build.py", "args": ["1"]}}})
    cache = tmp_path / "cache"
    said: list[str] = []
    first = images.prepare(cache, said.append)["toy:1"]
    assert first.model_dir is not None
    assert first.data_dir is not None
    assert (first.model_dir / "model.yaml").read_text() == "name: toy\nversion: 1\n"
    assert first.data_dir.is_dir()
    assert first.model_dir.parent.parent == cache
    assert images.prepare(cache, said.append)["toy:1"] == first  # cached: no second build
    assert len(said) == 1
    (tmp_path / "helpers.py").write_text("# a new source next to the script\n")
    again = images.prepare(cache, said.append)["toy:1"]
    assert again.model_dir != first.model_dir
    assert (tmp_path / "builds.log").read_text() == "1\n1\n"
    assert not [p for p in os.listdir(cache) if p.startswith(".") and not p.endswith(".lock")]


def test_a_failed_build_says_why_and_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "build.py").write_text("import sys\nsys.exit('no training data')\n")
    images = load(tmp_path, {"toy:1": {"build": {"script": "build.py"}}})
    with pytest.raises(ImageMapError, match="no training data"):
        images.prepare(tmp_path / "cache", lambda _: None)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        f".{build_key('toy:1', images.entries['toy:1'].build, tmp_path)}.lock"  # type: ignore[arg-type]
    ]


def test_a_model_dir_without_model_yaml_fails_preparation(tmp_path: Path) -> None:
    images = load(tmp_path, {"toy:1": {"modelDir": "nowhere"}})
    with pytest.raises(ImageMapError, match=r"no model\.yaml"):
        images.prepare(tmp_path / "cache", lambda _: None)


def test_build_keys_are_readable_and_depend_on_image_and_args(tmp_path: Path) -> None:
    (tmp_path / "build.py").write_text(BUILD_SCRIPT)
    images = load(
        tmp_path,
        {
            "registry.example/ml/churn@sha256:" + "a" * 64: {"build": {"script": "build.py"}},
            "registry.example/ml/churn@sha256:" + "b" * 64: {"build": {"script": "build.py"}},
            "registry.example/ml/churn:2": {"build": {"script": "build.py", "args": ["2"]}},
        },
    )
    keys = {build_key(i, e.build, tmp_path) for i, e in images.entries.items() if e.build}
    assert len(keys) == 3
    assert all(k.startswith("churn-") for k in keys)


def test_the_churn_example_maps_its_versions_to_builds() -> None:
    images = ImageMap.load(ROOT / "examples" / "churn" / "images.yaml")
    builds = [e.build for e in images.entries.values()]
    assert [b.args if b else None for b in builds] == [
        ["--variant", "healthy", "--version", "1"],
        ["--variant", "skewed", "--version", "2"],
        ["--variant", "healthy", "--version", "3"],
        ["--variant", "mislabelled", "--version", "6"],
        ["--variant", "floored", "--version", "8"],
        ["--variant", "unsure", "--version", "9"],
    ]
    minimal = yaml.safe_load((ROOT / "examples/modeldeployments/minimal.yaml").read_text())
    assert minimal["spec"]["image"] in images
    assert DEFAULT_READY_PATH == "/v2/health/ready"


def test_the_churn_formats_map_builds_each_format_healthy_and_skewed() -> None:
    images = ImageMap.load(ROOT / "examples" / "churn" / "formats.yaml")
    builds = [(e.build.script, e.build.args) for e in images.entries.values() if e.build]
    assert builds == [
        ("build_formats.py", ["--format", fmt, "--variant", variant, "--version", version])
        for fmt in ("xgboost", "lightgbm", "onnx", "mlflow")
        for variant, version in (("healthy", "1"), ("skewed", "2"))
    ]
