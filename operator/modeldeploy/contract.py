"""The metrics contract between the serving runtime and the operator's analysis.

Single source of truth for metric names and labels: the runtime exports exactly these
series and the analysis queries exactly these, so the two can never disagree.
"""

from typing import Final

PREFIX: Final = "modeldeploy_"

# Labels on every series the runtime exports.
LABEL_MODEL: Final = "model"
LABEL_VERSION: Final = "version"
LABEL_REVISION: Final = "revision"
IDENTITY_LABELS: Final = (LABEL_MODEL, LABEL_VERSION, LABEL_REVISION)

# Further labels, per series.
LABEL_CODE: Final = "code"
LABEL_REASON: Final = "reason"
LABEL_FEATURE: Final = "feature"
LABEL_OUTPUT: Final = "output"
LABEL_BIN: Final = "bin"

# The bin that counts absent / null values of a feature.
MISSING_BIN: Final = "missing"
# The bin that counts categories (or predicted classes) not seen in training.
OTHER_BIN: Final = "other"

# Series names as Prometheus sees them. Counters end in _total (the client library appends
# it), histograms expose _bucket/_sum/_count.
REQUESTS_TOTAL: Final = PREFIX + "requests_total"  # {code}
# The code of a request whose client hung up before it was answered (nginx's "client closed
# request"): the analysis counts codes starting with 5 as errors, so a client leaving is never
# the model's error; nor is it an invalid input (no invalid_requests_total reason).
CLIENT_CLOSED_REQUEST_CODE: Final = 499
REQUEST_DURATION_SECONDS: Final = PREFIX + "request_duration_seconds"  # histogram
INVALID_REQUESTS_TOTAL: Final = PREFIX + "invalid_requests_total"  # {reason}
FEATURE_BIN_TOTAL: Final = PREFIX + "feature_bin_total"  # {feature, bin}
FEATURE_BASELINE_RATIO: Final = PREFIX + "feature_baseline_ratio"  # gauge {feature, bin}
PREDICTION_BIN_TOTAL: Final = PREFIX + "prediction_bin_total"  # {output, bin}
PREDICTION_CONFIDENCE: Final = PREFIX + "prediction_confidence"  # histogram
MODEL_INFO: Final = PREFIX + "model_info"  # gauge, value 1
# Requests mirrored to the shadow: result = sent | failed | dropped (queue full).
SHADOW_REQUESTS_TOTAL: Final = PREFIX + "shadow_requests_total"  # {result}
LABEL_RESULT: Final = "result"
# Ground truth (serving/labels.py): labels posted for earlier predictions, scored once each.
LABEL_OUTCOME: Final = "outcome"
OUTCOME_CORRECT: Final = "correct"
OUTCOME_WRONG: Final = "wrong"
LABEL_OUTCOMES: Final = (OUTCOME_CORRECT, OUTCOME_WRONG)
LABEL_ACTUAL: Final = "actual"
LABEL_PREDICTED: Final = "predicted"
LABELLED_TOTAL: Final = PREFIX + "labelled_total"  # {outcome}
LABEL_CONFUSION_TOTAL: Final = PREFIX + "label_confusion_total"  # {actual, predicted}
LABEL_ABSOLUTE_ERROR: Final = PREFIX + "label_absolute_error"  # histogram (regressors)
# Gauge: the model's accuracy on its training holdout (profile.json quality, absent without
# one), labels counted correct as above: the stable's labelled accuracy is held against it.
HOLDOUT_ACCURACY: Final = PREFIX + "holdout_accuracy"
# Labels that matched no remembered prediction: reason = unknown | out_of_range | duplicate.
LABELS_UNMATCHED_TOTAL: Final = PREFIX + "labels_unmatched_total"  # {reason}
# Label requests refused (4xx), by protocol.Reason: apart from invalid_requests_total,
# which counts inference requests only (the invalid-input-rate check divides by those).
INVALID_LABEL_REQUESTS_TOTAL: Final = PREFIX + "invalid_label_requests_total"  # {reason}
# The image's golden requests replayed after warm-up (serving/golden.py), one count per golden
# request: result = match | mismatch (outputs differ from the expected ones) | error (the
# model or preprocessing raised). Never counted in requests_total or the drift bins.
GOLDEN_CHECKS_TOTAL: Final = PREFIX + "golden_checks_total"  # {result}
GOLDEN_CHECK_DURATION_SECONDS: Final = PREFIX + "golden_check_duration_seconds"  # histogram
GOLDEN_MATCH: Final = "match"
GOLDEN_MISMATCH: Final = "mismatch"
GOLDEN_ERROR: Final = "error"
GOLDEN_RESULTS: Final = (GOLDEN_MATCH, GOLDEN_MISMATCH, GOLDEN_ERROR)
# Rows of client requests answered (serving/fallback.py), by what answered them: model | fallback
# (the rules of a model declaring a low-confidence fallback). The fallback series exists (at 0)
# exactly when the model declares one: the fallback-rate check applies only then. Golden
# requests are never counted.
ANSWERED_ROWS_TOTAL: Final = PREFIX + "answered_rows_total"  # {answered_by}
LABEL_ANSWERED_BY: Final = "answered_by"
ANSWERED_BY_MODEL: Final = "model"
ANSWERED_BY_FALLBACK: Final = "fallback"

# Feature attributions (serving/explain.py) of a sample of requests (model.yaml
# explain.sample_rate), per feature: their positive and their negative parts apart (as
# magnitudes), since a counter never decreases. Over a window, the mean attribution is
# (rate(positive) - rate(negative)) / rate(rows) and the mean |attribution| (the feature's
# weight in the decisions) is (rate(positive) + rate(negative)) / rate(rows).
ATTRIBUTION_POSITIVE_TOTAL: Final = PREFIX + "attribution_positive_total"  # {feature}
ATTRIBUTION_NEGATIVE_TOTAL: Final = PREFIX + "attribution_negative_total"  # {feature}
EXPLAINED_ROWS_TOTAL: Final = PREFIX + "explained_rows_total"

# Latency buckets (seconds): fine around typical p95/p99 thresholds of online models.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
)
# Absolute-error buckets of a regressor, as multiples of its tolerance (the error within
# which a value counts as correct: 1.0 is the correct/wrong boundary).
ABSOLUTE_ERROR_TOLERANCE_MULTIPLES: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0)
# Confidence buckets (probability of the predicted class).
CONFIDENCE_BUCKETS: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

# Environment variables the operator sets on model pods and the runtime reads.
ENV_MODEL_NAME: Final = "MODELDEPLOY_MODEL_NAME"
ENV_MODEL_VERSION: Final = "MODELDEPLOY_MODEL_VERSION"
ENV_REVISION: Final = "MODELDEPLOY_REVISION"
ENV_SHADOW_URL: Final = "MODELDEPLOY_SHADOW_URL"
ENV_SHADOW_PERCENT: Final = "MODELDEPLOY_SHADOW_PERCENT"
ENV_WARMUP_MAX_LATENCY_MS: Final = "MODELDEPLOY_WARMUP_MAX_LATENCY_MS"
# Seconds between golden replays (overrides model.yaml golden.interval_s).
ENV_GOLDEN_INTERVAL_S: Final = "MODELDEPLOY_GOLDEN_INTERVAL_S"
# Where `modeldeploy serve` listens when not told by flags: model images set 0.0.0.0 and the
# containerPort; the local pod runner gives each container on the host network its own port.
ENV_SERVE_HOST: Final = "MODELDEPLOY_HOST"
ENV_SERVE_PORT: Final = "MODELDEPLOY_PORT"
ENV_SERVE_GRPC_PORT: Final = "MODELDEPLOY_GRPC_PORT"  # the V2 gRPC service's; off when unset
# Where `modeldeploy serve` writes why it exited (a kubelet reads the container's
# terminationMessagePath, by default /dev/termination-log, the runtime's default too); the
# local pod runner points it at a file of its own for each process.
ENV_TERMINATION_LOG: Final = "MODELDEPLOY_TERMINATION_LOG"

# The runtime's port and readiness path (the operator's readiness probe uses these).
SERVING_PORT: Final = 8080
READY_PATH_TEMPLATE: Final = "/v2/models/{model}/ready"
# Where `modeldeploy proxy` listens in a pod whose image is an external V2 server
# (spec.externalServer): it carries the pod's `http` port, the server another one.
PROXY_PORT: Final = 8070
# 503 once the serving loop has stalled (serving/golden.py): the operator's liveness probe.
LIVE_PATH: Final = "/v2/health/live"

# Marks a mirrored request, so a shadow never mirrors it again (no loops between versions).
SHADOW_HEADER: Final = "x-modeldeploy-shadow"

# --- The operator's own metrics (`modeldeploy operator --metrics-port`, /metrics) ---------
# Series about one ModelDeployment carry `namespace` and `name`. Check names leave out their
# subject (feature-psi, not feature-psi/age), so that label values stay few.
OPERATOR_PREFIX: Final = PREFIX + "operator_"
OPERATOR_METRICS_PORT: Final = 8090
LABEL_NAMESPACE: Final = "namespace"
LABEL_NAME: Final = "name"
LABEL_TRACK: Final = "track"  # canary | stable: the revision an analysis round judged
LABEL_CHECK: Final = "check"
LABEL_VERDICT: Final = "verdict"  # pass | fail | inconclusive

# {namespace, name, track, result}; result = pass | fail | inconclusive | no_data (no verdict
# for lack of data: Prometheus unreachable, a refused query, missing series).
OPERATOR_ANALYSES_TOTAL: Final = OPERATOR_PREFIX + "analyses_total"
OPERATOR_ANALYSIS_DURATION_SECONDS: Final = OPERATOR_PREFIX + "analysis_duration_seconds"
# {namespace, name, track, check, verdict}
OPERATOR_CHECK_VERDICTS_TOTAL: Final = OPERATOR_PREFIX + "check_verdicts_total"
# Gauge {namespace, name, track, check}: the check's value in the last round (NaN: no data).
OPERATOR_CHECK_VALUE: Final = OPERATOR_PREFIX + "check_value"
# {namespace, name, reason}; reason = RolledBack (analysis, warm-up timeout, within
# bakeTime) | Aborted (by a person).
OPERATOR_ROLLBACKS_TOTAL: Final = OPERATOR_PREFIX + "rollbacks_total"
OPERATOR_PROMOTIONS_TOTAL: Final = OPERATOR_PREFIX + "promotions_total"  # {namespace, name}
# Gauge {namespace, name, reason}: 1 while the Degraded condition is True (reason: its
# reason, e.g. AnalysisFailed when the stable drifts from its training profile), else 0.
OPERATOR_DEGRADED: Final = OPERATOR_PREFIX + "degraded"
OPERATOR_RECONCILE_DURATION_SECONDS: Final = OPERATOR_PREFIX + "reconcile_duration_seconds"
# Info gauge {namespace, name, team, contact, runbook_url}, value 1, one series per
# ModelDeployment (empty labels: spec.owner not set): alerts join it on (namespace, name) to
# say who owns what fired (`group_left (team, contact, runbook_url)`), the Prometheus way of
# attaching slow-changing facts without putting them on every series.
OPERATOR_OWNER_INFO: Final = OPERATOR_PREFIX + "owner_info"
LABEL_TEAM: Final = "team"
LABEL_CONTACT: Final = "contact"
LABEL_RUNBOOK_URL: Final = "runbook_url"
