"""Image recipes and their tags: the tag names the inputs, so an unchanged image is found in
the registry and never rebuilt, and any change to what the image copies makes a new one."""

from pathlib import Path

import pytest

from modeldeploy.devenv.images import (
    RECIPES,
    BuiltImage,
    Recipe,
    inputs_digest,
    is_stale,
    manifest_size,
    recipe_tag,
)

pytestmark = pytest.mark.unit

RECIPE = Recipe("m", "ml/m", "1", "Containerfile", ("Containerfile", "pkg"), (("VARIANT", "a"),))


def checkout(root: Path) -> Path:
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "Containerfile").write_text("FROM base\n")
    (root / "pkg" / "code.py").write_text("x = 1\n")
    return root


def test_tag_changes_with_every_input_and_only_with_inputs(tmp_path: Path) -> None:
    root = checkout(tmp_path / "a")
    tag = recipe_tag(RECIPE, inputs_digest(root, RECIPE, "base-id"))
    assert tag.startswith("1-")
    # What never reaches a build context leaves the tag alone.
    (root / "pkg" / "__pycache__" / "code.cpython-311.pyc").write_bytes(b"\0")
    (root / "pkg" / "modeldeploy.egg-info").mkdir()
    (root / "pkg" / "modeldeploy.egg-info" / "SOURCES.txt").write_text("whatever\n")
    (root / "elsewhere.py").write_text("not an input\n")
    assert recipe_tag(RECIPE, inputs_digest(root, RECIPE, "base-id")) == tag
    # Another checkout with the same files: the same tag.
    assert recipe_tag(RECIPE, inputs_digest(checkout(tmp_path / "b"), RECIPE, "base-id")) == tag
    changed = {
        "a file": lambda: (root / "pkg" / "code.py").write_text("x = 2\n"),
        "a new file": lambda: (root / "pkg" / "new.py").write_text(""),
    }
    for what, change in changed.items():
        change()
        assert recipe_tag(RECIPE, inputs_digest(root, RECIPE, "base-id")) != tag, what
    other = inputs_digest(checkout(tmp_path / "c"), RECIPE, "base-id")
    assert inputs_digest(tmp_path / "c", RECIPE, "another-base") != other
    variant = Recipe(*RECIPE.__dict__.values())  # same fields
    assert inputs_digest(tmp_path / "c", variant, "base-id") == other
    skewed = Recipe("m", "ml/m", "1", "Containerfile", RECIPE.inputs, (("VARIANT", "b"),))
    assert inputs_digest(tmp_path / "c", skewed, "base-id") != other


def test_recipes_are_unique_and_copy_what_exists() -> None:
    root = Path(__file__).resolve().parents[2]
    assert len({r.name for r in RECIPES}) == len(RECIPES)
    assert len({(r.repository, r.version) for r in RECIPES}) == len(RECIPES)
    for recipe in RECIPES:
        assert (root / recipe.containerfile).is_file(), recipe.containerfile
        assert all((root / entry).exists() for entry in recipe.inputs), recipe.inputs
        assert recipe.containerfile in recipe.inputs or any(
            recipe.containerfile.startswith(f"{entry}/") for entry in recipe.inputs
        ), f"{recipe.name}: its Containerfile is not hashed"


def test_references_are_by_digest_and_sizes_sum_the_layers() -> None:
    image = BuiltImage("m", "ml/m", "1-abc", "sha256:" + "f" * 64, 10, 0.0)
    assert image.reference("127.0.0.1:5000") == f"127.0.0.1:5000/ml/m@sha256:{'f' * 64}"
    assert image.tagged("localhost") == "localhost/ml/m:1-abc"
    manifest = {"layers": [{"size": 3}, {"size": 4}], "config": {"size": 100}}
    assert manifest_size(manifest) == 7
    assert manifest_size({}) == 0


def test_pruning_spares_current_recent_and_foreign_images() -> None:
    keep, ours, before = {"localhost/ml/m:1-new"}, {"localhost/ml/m"}, 1000
    pulled = "127.0.0.1:5000/ml/m@sha256:" + "a" * 64

    def stale(names: list[str] | None, created: int = 10) -> bool:
        return is_stale({"Names": names, "Created": created}, keep, ours, before)

    assert stale(None)  # an old build's cache layer
    assert stale([pulled])  # an old pull by digest
    assert stale(["localhost/ml/m:1-old", pulled])
    assert not stale(["localhost/ml/m:1-new"])
    assert not stale([pulled, "localhost/ml/m:1-new"])
    assert not stale(["localhost/ml/m:1-old", "localhost/ml/m:1-new"])
    assert not stale(["localhost/modeldeploy/base:bookworm-x"])  # not a recipe's repository
    assert not stale(None, created=1000)  # this run's own build cache
