"""`modeldeploy proxy --config`: the proxy's own model.yaml (optional; every field has a
default but `version`, which MODELDEPLOY_MODEL_VERSION may give instead).

    name: churn                      # default: --model-name, else --upstream-model
    version: "2026-11-20"
    warmup: {max_latency_ms: 200, rounds: 10}        # as in model.yaml (serving/config.py)
    golden: {interval_s: 30, deadline_s: 60, mismatch_limit: 3}
    prediction_log: {path: predictions.jsonl, sample_rate: 0.01, redact: [email]}
    limits: {max_body_bytes: 1048576, max_batch: 1024, label_memory_rows: 10000}
    labels: {max_abs_error: 2.5}
    upstream:
      timeout_s: 5                   # of each connect, send and read; past it, the model's error
      connections: 8                 # keep-alive connections, at most, to the upstream
      health_interval_s: 1           # its model readiness polled this often
      label_output: predict          # the upstream's output holding a classifier's labels
      probabilities_output: predict_proba   # rows x classes, in the profile's class order
      value_output: predict          # a regressor's values
      parameters: {content_type: pd} # the request's parameters sent upstream
      string_parameters: {content_type: str}  # each BYTES input's parameters

The upstream defaults are MLServer's scikit-learn runtime's names: one input per feature,
decoded into a pandas DataFrame, `predict` and `predict_proba` asked for by name. The
fields of a model the runtime runs itself (framework, artifact, preprocess, explain,
fallback, ...) are refused: the upstream runs the model, so nothing here could honour them.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from modeldeploy.contract import ENV_MODEL_VERSION
from modeldeploy.serving.config import ModelDirError, ServingConfig, _Config

Parameters = dict[str, str | int | float | bool]


class UpstreamConfig(_Config):
    timeout_s: float = Field(default=5.0, gt=0, le=600)
    connections: int = Field(default=8, ge=1, le=256)
    health_interval_s: float = Field(default=1.0, gt=0, le=60)
    label_output: str = Field(default="predict", min_length=1)
    # None: the upstream answers no probabilities (the profile must then have no confidence).
    probabilities_output: str | None = Field(default="predict_proba", min_length=1)
    value_output: str = Field(default="predict", min_length=1)
    parameters: Parameters = Field(default_factory=lambda: Parameters(content_type="pd"))
    string_parameters: Parameters = Field(default_factory=lambda: Parameters(content_type="str"))


class ProxyConfig(ServingConfig):
    upstream: UpstreamConfig = UpstreamConfig()

    @property
    def platform(self) -> str:
        return "modeldeploy-proxy"


def load_proxy_config(
    path: Path | None, name: str, env: Mapping[str, str] = os.environ
) -> ProxyConfig:
    """The --config file's (None: no file), `name` and the pod's version filling in for
    what it leaves out."""
    document: Any = {}
    if path is not None:
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ModelDirError(f"cannot read {path}: {err}") from err
        if not isinstance(document, dict):
            raise ModelDirError(f"{path} must be a mapping of settings")
    document = {"name": name, **document}
    if "version" not in document and env.get(ENV_MODEL_VERSION):
        document["version"] = env[ENV_MODEL_VERSION]
    if "version" not in document:
        raise ModelDirError(
            f"the model's version is unknown: set `version` in --config or {ENV_MODEL_VERSION}"
        )
    try:
        return ProxyConfig.model_validate(document)
    except ValidationError as err:
        raise ModelDirError(f"invalid proxy configuration {path or ''}: {err}") from err
