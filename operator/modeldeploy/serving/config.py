"""model.yaml: what a model directory holds and how the runtime should serve it.

    name: churn
    version: "2026-11-20"
    framework: sklearn              # sklearn | joblib (a fitted estimator in `artifact`)
    artifact: model.joblib          #   or python, with entrypoint: module:callable, or
                                    #   xgboost | lightgbm | onnx | mlflow (serving/formats/;
                                    #   mlflow: artifact is an MLflow model directory)
    classes: [stay, churn]          # format classifiers: their class labels
    preprocess: churn_features:preprocess   # optional module:callable on the model's inputs
    profile: profile.json
    warmup: {max_latency_ms: 200, rounds: 10}
    golden: {interval_s: 30, deadline_s: 60, mismatch_limit: 3}   # replays after warm-up
    prediction_log: {path: predictions.jsonl, sample_rate: 0.01, redact: [email]}
    limits: {max_body_bytes: 1048576, max_batch: 1024, label_memory_rows: 10000}
    labels: {max_abs_error: 2.5}    # regressors: a value this close to its label is correct
    explain: {sample_rate: 0.05}    # requests explained for the attribution metrics (explain.py)
    fallback: {confidence_floor: 0.6, rules: churn_features:rules}   # classifiers only

Modules named by `entrypoint`, `preprocess` and `fallback.rules` are imported from the model
directory.
"""

import os
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modeldeploy.contract import ENV_GOLDEN_INTERVAL_S, ENV_WARMUP_MAX_LATENCY_MS

MODEL_FILE = "model.yaml"
# Formats served by serving/formats/<name>.py, each behind the optional extra of its name.
FORMAT_FRAMEWORKS = ("xgboost", "lightgbm", "onnx", "mlflow")
Framework = Literal["sklearn", "joblib", "python", "xgboost", "lightgbm", "onnx", "mlflow"]
CALLABLE_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarmupConfig(_Config):
    max_latency_ms: float = Field(default=500.0, gt=0)
    # Rounds of golden requests tried before giving up on the latency bound (bounded).
    rounds: int = Field(default=10, ge=1, le=1000)


class GoldenConfig(_Config):
    """Golden requests replayed after warm-up (serving/golden.py)."""

    interval_s: float = Field(default=30.0, ge=1, le=86400)  # jittered by +-20%
    # A replay still running after this long means the serving loop has stalled (liveness).
    deadline_s: float = Field(default=60.0, gt=0, le=3600)
    # Replays in a row that did not match before readiness turns false.
    mismatch_limit: int = Field(default=3, ge=1, le=1000)


class PredictionLogConfig(_Config):
    path: str | None = None  # a file, "-" for stdout, None for no log
    sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    redact: list[str] = Field(default_factory=list)  # input/output names never written


class LimitsConfig(_Config):
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_batch: int = Field(default=1024, ge=1)
    # Rows whose predictions are remembered for delayed labels (labels.py), oldest forgotten
    # first; also the most labels one label request may carry.
    label_memory_rows: int = Field(default=10_000, ge=1, le=10_000_000)


class LabelsConfig(_Config):
    # A regressor's value within this absolute error of its label counts as correct;
    # None: 10% of the spread of its training predictions (labels.regression_tolerance).
    max_abs_error: float | None = Field(default=None, gt=0)


class ExplainConfig(_Config):
    # Share of answered requests whose attributions feed the attribution metrics, computed
    # after the answer is sent, one at a time; 0: none (requests asking for them still get
    # them, without counting).
    sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class FallbackConfig(_Config):
    """Rows the model is unsure of are answered by rules in the image (serving/fallback.py).
    Only rules in the image: the runtime never calls another service for an answer."""

    # Rows whose predicted class' probability is below this are answered by `rules`.
    confidence_floor: float = Field(gt=0, lt=1)
    # module:callable taking the model's inputs (after preprocessing) of those rows and
    # answering as the model does: labels and probabilities over the same classes.
    rules: str = Field(pattern=CALLABLE_PATTERN)


class ServingConfig(_Config):
    """What every front end of the runtime is configured with: `serve`'s model.yaml and
    `proxy`'s --config (serving/proxy_config.py) alike."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
    version: str = Field(min_length=1, max_length=63)
    revision: str | None = None
    warmup: WarmupConfig = WarmupConfig()
    golden: GoldenConfig = GoldenConfig()
    prediction_log: PredictionLogConfig = PredictionLogConfig()
    limits: LimitsConfig = LimitsConfig()
    labels: LabelsConfig = LabelsConfig()

    @property
    @abstractmethod
    def platform(self) -> str:
        """What answers (model metadata's `platform`)."""


class ModelConfig(ServingConfig):
    """model.yaml: a model the runtime loads and runs itself."""

    framework: Framework = "sklearn"
    artifact: str = "model.joblib"
    # A format classifier's labels in the order of its probabilities (its file keeps none;
    # a scikit-learn estimator has its own classes_); without it, the indexes 0..k-1.
    classes: list[str | int] | None = Field(default=None, min_length=2)
    entrypoint: str | None = Field(default=None, pattern=CALLABLE_PATTERN)
    preprocess: str | None = Field(default=None, pattern=CALLABLE_PATTERN)
    profile: str = "profile.json"
    explain: ExplainConfig = ExplainConfig()
    fallback: FallbackConfig | None = None

    @property
    def platform(self) -> str:
        return self.framework

    @model_validator(mode="after")
    def _python_needs_entrypoint(self) -> "ModelConfig":
        if self.framework == "python" and self.entrypoint is None:
            raise ValueError("framework python needs entrypoint: module:callable")
        if self.classes is not None and self.framework not in FORMAT_FRAMEWORKS:
            raise ValueError(
                f"classes is for frameworks {', '.join(FORMAT_FRAMEWORKS)}, not {self.framework}"
            )
        return self


class ModelDirError(Exception):
    """The model directory cannot be served; the message says why."""


def load_config(model_dir: Path) -> ModelConfig:
    path = model_dir / MODEL_FILE
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ModelDirError(f"cannot read {path}: {err}") from err
    try:
        return ModelConfig.model_validate(document)
    except ValidationError as err:
        raise ModelDirError(f"invalid {path}: {err}") from err


def _positive_env(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ModelDirError(f"{name}={raw!r} is not a positive number")
    return value


def warmup_max_latency_ms(config: ServingConfig, env: Mapping[str, str] = os.environ) -> float:
    """The operator's bound (spec.warmup.maxLatencyMs, via the pod's env) wins."""
    return _positive_env(env, ENV_WARMUP_MAX_LATENCY_MS, config.warmup.max_latency_ms)


def golden_interval_s(config: ServingConfig, env: Mapping[str, str] = os.environ) -> float:
    """Seconds between golden replays: the pod's env (e.g. a podTemplate env) wins."""
    return _positive_env(env, ENV_GOLDEN_INTERVAL_S, config.golden.interval_s)
