"""Thin I/O around the profile builder: training tables in, profile.json out."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.profile_schema import FeatureProfile, FeatureType, Profile
from modeldeploy.profiling.build import DEFAULT_BACKGROUND, DEFAULT_GOLDEN, build_profile
from modeldeploy.profiling.holdout import Holdout
from modeldeploy.profiling.leakage import LeakageCheck
from modeldeploy.profiling.stats import DEFAULT_BINS
from modeldeploy.serving.config import load_config
from modeldeploy.serving.fallback import load_fallback
from modeldeploy.serving.model import load_model, load_preprocess
from modeldeploy.serving.pipeline import InferencePipeline

Columns = dict[str, npt.NDArray[Any]]


def _frame_columns(frame: Any) -> Columns:
    """pandas DataFrame -> columns; text/categorical columns become object arrays."""
    columns: Columns = {}
    for name in frame.columns:
        series = frame[name]
        if series.dtype.kind in "biuf":
            columns[str(name)] = series.to_numpy()
        else:
            values = series.astype(object)
            columns[str(name)] = values.where(series.notna(), None).to_numpy(dtype=object)
    return columns


def read_table(path: Path, names: Sequence[str] = ()) -> Columns:
    """Reads CSV, Parquet, .npy (structured, or 2-D with `names`) or .npz (one array per
    column) into named columns."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        import pandas as pd  # the profile extra

        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        return _frame_columns(frame)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {k: np.asarray(archive[k]) for k in archive.files}
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.dtype.names:
            return {n: np.asarray(array[n]) for n in array.dtype.names}
        if array.ndim != 2:
            raise ValueError(f"{path}: a plain .npy array must be 2-D (rows x features)")
        labels = list(names) or [f"x{i}" for i in range(array.shape[1])]
        if len(labels) != array.shape[1]:
            raise ValueError(f"{path}: {array.shape[1]} columns but {len(labels)} names given")
        return {n: array[:, i] for i, n in enumerate(labels)}
    raise ValueError(f"{path}: unsupported data file (use .csv, .parquet, .npy or .npz)")


def write_profile(profile: Profile, path: Path) -> None:
    path.write_text(profile.model_dump_json(indent=1, exclude_none=True) + "\n")


def profile_model_dir(
    model_dir: Path,
    columns: Mapping[str, npt.NDArray[Any]],
    *,
    types: Mapping[str, FeatureType] | None = None,
    nullable: Sequence[str] = (),
    n_bins: int = DEFAULT_BINS,
    golden: int = DEFAULT_GOLDEN,
    seed: int = 0,
    leakage: LeakageCheck | None = None,
    background: int = DEFAULT_BACKGROUND,
    holdout: Holdout | None = None,
) -> tuple[Path, Profile]:
    """Profiles the model in `model_dir` (its model.yaml) and writes its profile there
    (nothing when the build refuses leaky training data, see `build_profile`); a holdout's
    regression labels are scored with the model's labels.max_abs_error."""
    config = load_config(model_dir)

    def make_pipeline(features: list[FeatureProfile]) -> InferencePipeline:
        model = load_model(config, model_dir, [f.name for f in features])
        preprocess = load_preprocess(config, model_dir)
        return InferencePipeline(
            features, model, preprocess, fallback=load_fallback(config, model_dir)
        )

    profile = build_profile(
        columns,
        make_pipeline,
        types=types,
        nullable=nullable,
        n_bins=n_bins,
        golden=golden,
        seed=seed,
        leakage=leakage,
        background=background,
        holdout=holdout,
        max_abs_error=config.labels.max_abs_error,
    )
    path = model_dir / config.profile
    write_profile(profile, path)
    return path, profile
