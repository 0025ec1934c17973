"""The ModelDeployment API (modeldeploy.io/v1alpha1): the single source of truth.

Pydantic models of spec and status (camelCase on the wire, snake_case in Python); the CRD in
`crds/` is generated from them by `modeldeploy crd`. Every cross-field rule is written once
and enforced both by the apiserver (CEL) and by these models.

    md = ModelDeployment.model_validate(obj)          # obj: dict read from the apiserver
    parse_duration(md.spec.analysis.window)           # -> timedelta
    to_wire(md.status)                                # -> dict to patch into .status
"""

from modeldeploy.api.analysis import (
    Analysis,
    CustomCheck,
    Drift,
    ErrorRate,
    FeatureDrift,
    InvalidInputRate,
    Latency,
    MissingRate,
    PredictionDrift,
    Tolerances,
)
from modeldeploy.api.base import ApiModel, Rule
from modeldeploy.api.duration import Duration, PositiveDuration, is_duration, parse_duration
from modeldeploy.api.resource import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    ANNOTATION_RETRY,
    API_VERSION,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ModelDeployment,
    to_wire,
)
from modeldeploy.api.rollout import Canary, Rollout, Shadow, Traffic
from modeldeploy.api.spec import (
    Autoscaling,
    Fallback,
    ImagePolicy,
    KillSwitch,
    ModelDeploymentSpec,
    ModelRef,
    Prometheus,
    PrometheusAuth,
    Replicas,
    SecretRef,
    Warmup,
)
from modeldeploy.api.status import (
    HISTORY_LIMIT,
    MAX_POD_MESSAGE,
    MAX_POD_PROBLEMS,
    AnalysisResult,
    CheckResult,
    Condition,
    ConditionStatus,
    ConditionType,
    HistoryEntry,
    HistoryEvent,
    ModelDeploymentStatus,
    Phase,
    PodProblem,
    Verdict,
)
from modeldeploy.api.template import EnvVar, PodTemplate, ResourceRequirements, Toleration
from modeldeploy.api.types import RESERVED_PREFIX

__all__ = [
    "ANNOTATION_ABORT",
    "ANNOTATION_PROMOTE",
    "ANNOTATION_RETRY",
    "API_VERSION",
    "GROUP",
    "HISTORY_LIMIT",
    "KIND",
    "MAX_NAME_LENGTH",
    "MAX_POD_MESSAGE",
    "MAX_POD_PROBLEMS",
    "PLURAL",
    "RESERVED_PREFIX",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "Analysis",
    "AnalysisResult",
    "ApiModel",
    "Autoscaling",
    "Canary",
    "CheckResult",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "CustomCheck",
    "Drift",
    "Duration",
    "EnvVar",
    "ErrorRate",
    "Fallback",
    "FeatureDrift",
    "HistoryEntry",
    "HistoryEvent",
    "ImagePolicy",
    "InvalidInputRate",
    "KillSwitch",
    "Latency",
    "MissingRate",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelRef",
    "Phase",
    "PodProblem",
    "PodTemplate",
    "PositiveDuration",
    "PredictionDrift",
    "Prometheus",
    "PrometheusAuth",
    "Replicas",
    "ResourceRequirements",
    "Rollout",
    "Rule",
    "SecretRef",
    "Shadow",
    "Tolerances",
    "Toleration",
    "Traffic",
    "Verdict",
    "Warmup",
    "is_duration",
    "parse_duration",
    "to_wire",
]
