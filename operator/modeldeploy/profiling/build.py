"""Assembles a profile from normalised training columns and the model's serving path."""

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.profile_schema import FeatureProfile, FeatureType, GoldenRequest, Profile
from modeldeploy.profiling.holdout import Holdout, holdout_quality, labelled_rows
from modeldeploy.profiling.leakage import LeakageCheck, LeakyTrainingData, leakage_flags
from modeldeploy.profiling.stats import (
    DEFAULT_BINS,
    column_type,
    golden_rows,
    missing_mask,
    normalise,
    output_profile,
    profile_feature,
)
from modeldeploy.serving.model import Prediction
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.protocol import input_tensor

DEFAULT_GOLDEN = 8
# Training rows kept as the explanations' background: the mean of 100 rows is within ~0.1
# standard deviations of the training mean, and a tree explanation costs time per row kept.
DEFAULT_BACKGROUND = 100
CHUNK_ROWS = 4096  # predictions on training data run in bounded chunks


def profile_features(
    columns: Mapping[str, npt.NDArray[Any]],
    *,
    types: Mapping[str, FeatureType] | None = None,
    nullable: Sequence[str] = (),
    n_bins: int = DEFAULT_BINS,
) -> tuple[list[FeatureProfile], dict[str, npt.NDArray[Any]]]:
    """Feature profiles plus the columns normalised as the runtime will see them."""
    types = dict(types or {})
    unknown = set(types) | set(nullable)
    unknown -= set(columns)
    if unknown:
        raise ValueError(f"no such column(s) in the data: {', '.join(sorted(unknown))}")
    features, normalised = [], {}
    for name, values in columns.items():
        feature_type = types.get(name) or column_type(values)
        column = normalise(values, feature_type)
        normalised[name] = column
        features.append(
            profile_feature(name, column, feature_type, nullable=name in nullable, n_bins=n_bins)
        )
    return features, normalised


def predict_all(pipeline: InferencePipeline, columns: Mapping[str, npt.NDArray[Any]]) -> Prediction:
    rows = len(next(iter(columns.values())))
    parts = []
    for start in range(0, rows, CHUNK_ROWS):
        chunk = {k: v[start : start + CHUNK_ROWS] for k, v in columns.items()}
        parts.append(pipeline.predict(chunk)[1])  # as answered (fallback included)
    first = parts[0]
    probabilities = None
    if first.probabilities is not None:
        probabilities = np.concatenate(
            [p.probabilities for p in parts if p.probabilities is not None]
        )
    return Prediction(np.concatenate([p.values for p in parts]), probabilities, first.classes)


def golden_requests(
    pipeline: InferencePipeline,
    columns: Mapping[str, npt.NDArray[Any]],
    rows: Sequence[int],
) -> list[GoldenRequest]:
    """One request per row and one batch of all rows, with the outputs the image answers."""
    index = np.asarray(rows, dtype=np.intp)
    batches = [(f"row-{r}", index[i : i + 1]) for i, r in enumerate(rows)]
    batches.append(("batch", index))
    golden = []
    for name, picked in batches:
        body = {
            "id": name,
            "inputs": [
                input_tensor(f, columns[f.name][picked].tolist()) for f in pipeline.features
            ],
        }
        body = json.loads(json.dumps(body))  # exactly what travels over the wire
        outputs = pipeline.infer(body).outputs
        golden.append(
            GoldenRequest(name=name, request=body, expected={o["name"]: o["data"] for o in outputs})
        )
    return golden


def background_request(
    features: Sequence[FeatureProfile],
    columns: Mapping[str, npt.NDArray[Any]],
    rows: int,
    seed: int,
) -> dict[str, Any] | None:
    """A V2 request of `rows` training rows drawn at random (all when fewer), or None."""
    total = len(next(iter(columns.values())))
    if rows <= 0:
        return None
    picked = np.sort(np.random.default_rng(seed).permutation(total)[:rows])
    body = {"inputs": [input_tensor(f, columns[f.name][picked].tolist()) for f in features]}
    plain: dict[str, Any] = json.loads(json.dumps(body))  # as profile.json will hold it
    return plain


def build_profile(
    columns: Mapping[str, npt.NDArray[Any]],
    make_pipeline: Callable[[list[FeatureProfile]], InferencePipeline],
    *,
    types: Mapping[str, FeatureType] | None = None,
    nullable: Sequence[str] = (),
    n_bins: int = DEFAULT_BINS,
    golden: int = DEFAULT_GOLDEN,
    seed: int = 0,
    leakage: LeakageCheck | None = None,
    background: int = DEFAULT_BACKGROUND,
    holdout: Holdout | None = None,
    max_abs_error: float | None = None,
) -> Profile:
    """The profile of a model: its training columns, and its predictions on them through
    the same serving path (preprocessing included) that the image will run.

    With a `leakage` check, features that leak the training labels are flagged in the
    profile; if it refuses, any flag raises `LeakyTrainingData` before the model runs.
    With a `holdout`, the model's accuracy on those rows is recorded (`quality`), a
    regressor's within `max_abs_error` (model.yaml's labels.max_abs_error) or the runtime's
    default tolerance."""
    if not columns or len(next(iter(columns.values()))) == 0:
        raise ValueError("the training data has no rows")
    features, normalised = profile_features(columns, types=types, nullable=nullable, n_bins=n_bins)
    flags = []
    if leakage is not None:
        table_rows = len(next(iter(normalised.values())))
        if len(leakage.labels) != table_rows:
            raise ValueError(
                f"{leakage.label_name} has {len(leakage.labels)} values for {table_rows} rows"
            )
        flags = leakage_flags(
            normalised, leakage.labels, label_name=leakage.label_name, threshold=leakage.threshold
        )
        if flags and leakage.refuse:
            raise LeakyTrainingData(flags)
    pipeline = make_pipeline(features)
    prediction = predict_all(pipeline, normalised)
    has_missing = np.zeros(len(prediction.values), dtype=bool)
    for column in normalised.values():
        has_missing |= missing_mask(column)
    rows = golden_rows(prediction.values.tolist(), has_missing, golden, seed)
    output = output_profile(prediction, n_bins)
    quality = None
    if holdout is not None:
        held_columns, held_labels = labelled_rows(holdout, features)
        held = predict_all(pipeline, held_columns)
        quality = holdout_quality(held, held_labels, output, max_abs_error)
    return Profile(
        rows=len(prediction.values),
        features=features,
        output=output,
        golden=golden_requests(pipeline, normalised, rows),
        leakage=flags or None,
        background=background_request(features, normalised, background, seed),
        quality=quality,
    )
