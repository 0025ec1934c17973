"""Writes a build context (plan.py decides what): everything goes into a staging directory
beside the output, profiled there through the image's own serving path, and is renamed to
the output only once complete, so a refused or failed build writes nothing."""

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy.typing as npt
import yaml

from modeldeploy.buildctx.plan import (
    MODEL_DIR,
    WHEELS_DIR,
    BadBuildInput,
    BuildRequest,
    ModelPlan,
    ModelSource,
    context_files,
    plan_model,
)
from modeldeploy.profile_schema import Profile
from modeldeploy.profiling.holdout import Holdout
from modeldeploy.profiling.io import Columns, profile_model_dir, read_table
from modeldeploy.profiling.leakage import DEFAULT_THRESHOLD, LeakageCheck
from modeldeploy.serving.config import MODEL_FILE


@dataclass(frozen=True)
class TrainingData:
    path: Path  # the training table as the model consumed it (.csv, .parquet, ...)
    target: str  # its label column
    holdout: Path | None = None  # held-out rows, same columns: their accuracy is recorded
    leakage_threshold: float = DEFAULT_THRESHOLD


def read_source(model: Path) -> ModelSource:
    if not model.exists():
        raise BadBuildInput(f"{model} does not exist")
    mlmodel = model / "MLmodel"
    document = None
    if model.is_dir() and mlmodel.is_file():
        try:
            document = yaml.safe_load(mlmodel.read_text())
        except yaml.YAMLError as err:
            raise BadBuildInput(f"cannot read {mlmodel}: {err}") from err
        if not isinstance(document, dict):
            raise BadBuildInput(f"{mlmodel} is not an MLmodel document")
    return ModelSource(model.name, model.is_dir(), document)


def installed_versions(plan: ModelPlan) -> dict[str, str]:
    """The versions of the plan's libraries in this environment (which built the profile)."""
    versions = {}
    for name in plan.libraries:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. xgboost installed as `xgboost`, not `xgboost-cpu`: the extra's
    return versions


def _labelled(path: Path, target: str) -> tuple[Columns, npt.NDArray[Any]]:
    columns = read_table(path)
    labels = columns.pop(target, None)
    if labels is None:
        raise BadBuildInput(f"{path} has no column {target!r} (--target)")
    return columns, labels


def _profile(model_dir: Path, data: TrainingData) -> Profile:
    columns, labels = _labelled(data.path, data.target)
    holdout = None
    if data.holdout is not None:
        held, held_labels = _labelled(data.holdout, data.target)
        holdout = Holdout(held, held_labels, data.target)
    _, profile = profile_model_dir(
        model_dir,
        columns,
        leakage=LeakageCheck(labels, data.target, data.leakage_threshold),
        holdout=holdout,
    )
    return profile


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def write_context(
    model: Path,
    data: TrainingData,
    output: Path,
    request: BuildRequest,
    wheel: Path | None = None,
) -> tuple[ModelPlan, Profile]:
    """Writes the build context of `model` to `output` (which must not exist, or be empty)."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise BadBuildInput(f"{output} exists and is not an empty directory")
    if wheel is not None and not wheel.is_file():
        raise BadBuildInput(f"--wheel {wheel} is not a file")
    plan = plan_model(read_source(model), request)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        model_dir = staging / MODEL_DIR
        model_dir.mkdir()
        _copy(model, model_dir / plan.artifact)
        (model_dir / MODEL_FILE).write_text(yaml.safe_dump(plan.model_yaml, sort_keys=False))
        profile = _profile(model_dir, data)
        files: Mapping[str, str] = context_files(plan, request, profile, installed_versions(plan))
        for name, text in files.items():
            (staging / name).write_text(text)
        if wheel is not None:
            (staging / WHEELS_DIR).mkdir()
            shutil.copy2(wheel, staging / WHEELS_DIR / wheel.name)
        if output.exists():
            output.rmdir()  # empty, checked above
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return plan, profile
