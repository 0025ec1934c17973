"""The profile.json document bundled in every model image: the contract between the
profiler (`modeldeploy profile`, `profiling/`) that writes it and the serving runtime that
reads it, as `contract.py` is the one between the runtime and the analysis.

The runtime bins live traffic with exactly the bins recorded here and exports the recorded
training ratios as `feature_baseline_ratio`, so the operator compares like with like. It imports
only pydantic: the runtime reads it without importing the profiling package (build-time code).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION: Literal[1] = 1

FeatureType = Literal["float", "int", "bool", "string"]
NUMERIC_TYPES: tuple[FeatureType, ...] = ("float", "int")


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureProfile(_Document):
    """One model input: its schema, its bins and how training data filled them."""

    name: str = Field(min_length=1, max_length=200)
    type: FeatureType
    nullable: bool
    missing_rate: float = Field(ge=0.0, le=1.0)
    min: float | None = None
    max: float | None = None
    # Numeric features: ascending inner bin edges (training deciles, ties merged). A value v
    # falls in bin i when edges[i-1] < v <= edges[i].
    edges: list[float] | None = None
    # Categorical (string/bool) features: the training vocabulary; anything else is "other".
    categories: list[str] | None = None
    # Bin label -> share of training rows in it, including the missing (and other) bin.
    baseline: dict[str, float]

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    @model_validator(mode="after")
    def _bins_match_type(self) -> "FeatureProfile":
        if self.numeric and self.edges is None:
            raise ValueError(f"numeric feature {self.name!r} needs edges")
        if not self.numeric and self.categories is None:
            raise ValueError(f"categorical feature {self.name!r} needs categories")
        if self.edges is not None and sorted(set(self.edges)) != self.edges:
            raise ValueError(f"edges of {self.name!r} must be strictly ascending")
        return self


class ConfidenceProfile(_Document):
    """Histogram of the predicted class's probability on training data."""

    buckets: list[float]  # upper bounds, as in the prediction_confidence histogram
    baseline: list[float]  # share per bucket (not cumulative), one more for values above


class ClassificationOutput(_Document):
    task: Literal["classification"] = "classification"
    name: str = "label"
    classes: list[str | int]
    baseline: dict[str, float]  # class -> share of training predictions
    confidence: ConfidenceProfile | None = None  # None when the model has no probabilities


class RegressionOutput(_Document):
    task: Literal["regression"] = "regression"
    name: str = "value"
    edges: list[float]  # deciles of training predictions
    baseline: dict[str, float]


OutputProfile = Annotated[ClassificationOutput | RegressionOutput, Field(discriminator="task")]


class GoldenRequest(_Document):
    """A V2 inference request and the outputs the image must answer before it is Ready."""

    name: str
    request: dict[str, Any]
    expected: dict[str, list[Any]]  # output name -> flattened data


LeakageKind = Literal["separates-label", "class-concentrated"]


class LeakageFlag(_Document):
    """A training feature suspected of leaking the label (`profiling.leakage`)."""

    feature: str
    kind: LeakageKind
    value: float  # the figure: separability (0-1), or the share of one class at one value
    threshold: float  # the figure at or above which the feature is flagged
    reason: str  # one plain sentence: what the feature does with the label, and why it leaks


class Quality(_Document):
    """How well the model answered held-out rows it was not trained on (`modeldeploy profile
    --holdout`), counted as the runtime counts labels (`serving/labels.py`): a classifier's
    class equal to the label, a regressor's value within `holdout_tolerance` of it. The
    runtime exports it (`holdout_accuracy`), and the analysis holds the stable's accuracy on
    labelled traffic against it."""

    holdout_accuracy: float = Field(ge=0.0, le=1.0)  # share of labelled holdout rows correct
    holdout_rows: int = Field(ge=1)  # labelled holdout rows scored
    # Regressors: the absolute error within which a value counted as correct (the runtime's
    # labels.max_abs_error, or its default); None for classifiers.
    holdout_tolerance: float | None = Field(default=None, gt=0)


class Profile(_Document):
    format_version: Literal[1] = FORMAT_VERSION
    rows: int = Field(ge=1)
    features: list[FeatureProfile] = Field(min_length=1)
    output: OutputProfile
    golden: list[GoldenRequest] = Field(default_factory=list)
    # Absent (None) when nothing was flagged or no label was given: profiles without leakage
    # flags stay readable by runtimes that predate the field (documents forbid extra keys).
    leakage: list[LeakageFlag] | None = None
    # A seeded sample of training rows as the model consumed them, as a V2 request: what
    # explanations are relative to (serving/explain.py). Absent in profiles built before it
    # (then the runtime explains nothing) or built with no background rows.
    background: dict[str, Any] | None = None
    # Absent without held-out rows, so that such profiles stay readable as leakage's do.
    quality: Quality | None = None

    @model_validator(mode="after")
    def _unique_feature_names(self) -> "Profile":
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        return self
