"""The pure parts of `bench/bench_vs_peers.py`: the same rollout and thresholds in Argo
Rollouts', Flagger's and modeldeploy's own terms, and the results table.

    rules = Rules()                                   # steps, thresholds, analysis cadence
    argo_rollout("bench-argo", image, "2", rules)     # a Rollout: replica-ratio canary
    argo_analysis_template("bench-argo", prometheus_url, rules)
    flagger_canary("bench-flagger", rules)            # kubernetes provider, Blue/Green
    rows = summary_rows(results)                      # one row per (scenario, tool)

The peers' pods are the pod runner's like the operator's (label `modeldeploy.io/name`, the
model container's env and readiness path), so that the same real servers serve all three.
Each server labels its series with its MODELDEPLOY_REVISION; the pod runner's targets add
`namespace` and `pod`. Argo's queries select the canary by its pod-template hash (given to
the server as its revision, as a user would wire it), Flagger's by pod name (its convention:
`<target>-<hash>-<id>`, which leaves out `<target>-primary-...`).
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from modeldeploy import contract
from modeldeploy.resources.names import LABEL_NAME, LABEL_REVISION

Body = dict[str, Any]
Tool = Literal["argo", "flagger", "modeldeploy"]
Outcome = Literal["promoted", "rolled back", "stuck"]
TOOLS: tuple[Tool, ...] = ("argo", "flagger", "modeldeploy")
NAME = "churn"
APP_LABEL = "app"  # the selector label both peers expect (Flagger's default `-selector-labels`)
ARGO_HASH_LABEL = "rollouts-pod-template-hash"
ARGO_HASH_ARG = "canary-hash"
ARGO_GROUP_VERSION = "argoproj.io/v1alpha1"
FLAGGER_GROUP_VERSION = "flagger.app/v1beta1"
# Flagger's canary pods are `<target>-<replicaset hash>-<pod id>`; its primary's are
# `<target>-primary-...`, one segment more, which the anchored regex leaves out.
FLAGGER_CANARY_PODS = "{{ target }}-[0-9a-zA-Z]+-[0-9a-zA-Z]+"
# The pod runner publishes the members of the Services carrying this label.
SERVICE_LABELS = {LABEL_NAME: NAME}
# PSI of bins with no rows is infinite; as drift tools do, shares are floored at this.
PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class Rules:
    """One rollout policy and one set of thresholds, to be said in each tool's terms."""

    replicas: int = 4
    steps: tuple[int, ...] = (25, 50)  # canary share of traffic (Argo: of replicas)
    step_seconds: int = 6  # modeldeploy stepInterval; Argo's pause after each step
    bake_seconds: int = 5  # modeldeploy bakeTime
    interval_seconds: int = 2  # analysis cadence (Flagger's own floor is higher: below)
    window: str = "30s"  # the range the queries look back over
    failure_limit: int = 2  # failing rounds that roll back
    p95_ms: float = 50.0  # the healthy server's p95 on a loaded 2-core machine: up to ~35 ms
    max_error_rate: float = 0.02
    feature_psi: float = 0.15
    min_samples: int = 200  # requests in the window before a peer's check counts
    flagger_interval_seconds: int = 10  # Flagger's analysis interval, at its usual minimum

    @property
    def flagger_iterations(self) -> int:
        """Blue/Green iterations lasting about as long as the canary's steps and bake."""
        total = len(self.steps) * self.step_seconds + self.bake_seconds
        return max(1, round(total / self.flagger_interval_seconds))


# --- PromQL, over the runtime's series ------------------------------------------------------


def parse_exports(printed: str) -> dict[str, str]:
    """`export NAME="value"` lines (what `hack/testenv.sh peers` prints) as a dict."""
    found = {}
    for line in printed.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        found[name] = value.strip('"')
    return found


def _guarded(expression: str, selector: str, window: str, min_samples: int) -> str:
    """The value once the window holds `min_samples` requests, else 0 (pass); NaN (no
    requests) and no series at all read as 0 too. A careful user's guards: without them both
    peers fail a canary on its first few requests (no data, or a noisy estimate)."""
    requests = f"sum(increase({contract.REQUESTS_TOTAL}{{{selector}}}[{window}]))"
    return f"((({expression}) >= 0) and on() ({requests} >= {min_samples})) or on() vector(0)"


def latency_p95_query(selector: str, window: str, min_samples: int = 0) -> str:
    """The canary's p95 request latency in seconds."""
    bucket = f"{contract.REQUEST_DURATION_SECONDS}_bucket{{{selector}}}"
    p95 = f"histogram_quantile(0.95, sum by (le) (rate({bucket}[{window}])))"
    return _guarded(p95, selector, window, min_samples)


def error_rate_query(selector: str, window: str, min_samples: int = 0) -> str:
    """The canary's share of 5xx answers."""
    requests = contract.REQUESTS_TOTAL
    errors = f'sum(rate({requests}{{{selector}, {contract.LABEL_CODE}=~"5.."}}[{window}]))'
    rate = f"{errors} / sum(rate({requests}{{{selector}}}[{window}]))"
    return _guarded(rate, selector, window, min_samples)


def feature_psi_query(selector: str, window: str, min_samples: int = 0) -> str:
    """The largest PSI over features between the canary's inputs in the window and the
    training baseline the runtime exports: sum over bins of (share - baseline) *
    ln(share / baseline), shares floored at PSI_FLOOR. A point estimate against a fixed
    threshold: PromQL has no significance test."""
    feature, bin_ = contract.LABEL_FEATURE, contract.LABEL_BIN
    rows = f"increase({contract.FEATURE_BIN_TOTAL}{{{selector}}}[{window}])"
    counts = f"sum by ({feature}, {bin_}) ({rows})"
    totals = f"sum by ({feature}) ({rows})"
    share = f"clamp_min({counts} / on({feature}) group_left {totals}, {PSI_FLOOR:g})"
    baseline = (
        f"clamp_min(max by ({feature}, {bin_}) ({contract.FEATURE_BASELINE_RATIO}{{{selector}}}), "
        f"{PSI_FLOOR:g})"
    )
    psi = f"sum by ({feature}) (({share} - {baseline}) * ln({share} / {baseline}))"
    return _guarded(f"max({psi})", selector, window, min_samples)


@dataclass(frozen=True)
class Check:
    name: str
    query: str
    maximum: float  # in the query's unit


def checks(selector: str, window: str, rules: Rules) -> list[Check]:
    """Each check in PromQL, from `rules.min_samples` requests in the window on."""
    floor = rules.min_samples
    return [
        Check("latency-p95", latency_p95_query(selector, window, floor), rules.p95_ms / 1000),
        Check("error-rate", error_rate_query(selector, window, floor), rules.max_error_rate),
        Check("feature-psi", feature_psi_query(selector, window, floor), rules.feature_psi),
    ]


# --- the pods ---------------------------------------------------------------------------------


def model_pod_template(image: str, version: str, revision_env: Body) -> Body:
    """A pod template the pod runner serves, as the operator's would be: the model container
    with the model's name, version and revision, and its readiness path."""
    return {
        "metadata": {"labels": {APP_LABEL: NAME, LABEL_NAME: NAME, LABEL_REVISION: f"v{version}"}},
        "spec": {
            "containers": [
                {
                    "name": "model",
                    "image": image,
                    "ports": [{"name": "http", "containerPort": contract.SERVING_PORT}],
                    "env": [
                        {"name": contract.ENV_MODEL_NAME, "value": NAME},
                        {"name": contract.ENV_MODEL_VERSION, "value": version},
                        {"name": contract.ENV_REVISION, **revision_env},
                    ],
                    "readinessProbe": {
                        "httpGet": {
                            "path": contract.READY_PATH_TEMPLATE.format(model=NAME),
                            "port": "http",
                        },
                        "periodSeconds": 2,
                    },
                }
            ]
        },
    }


def client_service(namespace: str) -> Body:
    """The Service clients call (Argo's basic canary: it selects both ReplicaSets' pods)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": namespace, "labels": SERVICE_LABELS},
        "spec": {
            "selector": {APP_LABEL: NAME},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


# --- Argo Rollouts ------------------------------------------------------------------------------


def argo_rollout(namespace: str, image: str, version: str, rules: Rules) -> Body:
    """A basic canary (no traffic router: the share is the ratio of replicas behind the one
    Service) with a pause after each step and a background analysis from the first step."""
    steps: list[Body] = []
    for weight in rules.steps:
        steps += [{"setWeight": weight}, {"pause": {"duration": f"{rules.step_seconds}s"}}]
    revision_env = {
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{ARGO_HASH_LABEL}']"}}
    }
    return {
        "apiVersion": ARGO_GROUP_VERSION,
        "kind": "Rollout",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "replicas": rules.replicas,
            "selector": {"matchLabels": {APP_LABEL: NAME}},
            "template": model_pod_template(image, version, revision_env),
            "strategy": {
                "canary": {
                    "steps": steps,
                    "analysis": {
                        "templates": [{"templateName": NAME}],
                        "args": [
                            {
                                "name": ARGO_HASH_ARG,
                                "valueFrom": {"podTemplateHashValue": "Latest"},
                            }
                        ],
                    },
                }
            },
        },
    }


def argo_analysis_template(namespace: str, prometheus_url: str, rules: Rules) -> Body:
    """Every check as a Prometheus metric of the canary's pods; `failureLimit` failures are
    tolerated, so the one after them aborts."""
    selector = f'namespace="{namespace}", {contract.LABEL_REVISION}="{{{{args.{ARGO_HASH_ARG}}}}}"'
    metrics = [
        {
            "name": check.name,
            "interval": f"{rules.interval_seconds}s",
            "failureLimit": rules.failure_limit - 1,
            "successCondition": f"result[0] <= {check.maximum:g}",
            "provider": {"prometheus": {"address": prometheus_url, "query": check.query}},
        }
        for check in checks(selector, rules.window, rules)
    ]
    return {
        "apiVersion": ARGO_GROUP_VERSION,
        "kind": "AnalysisTemplate",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"args": [{"name": ARGO_HASH_ARG}], "metrics": metrics},
    }


# --- Flagger ------------------------------------------------------------------------------------


def flagger_deployment(namespace: str, image: str, version: str, rules: Rules) -> Body:
    """Flagger's target: it copies it to `<name>-primary` and runs the analysis on it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "replicas": rules.replicas,
            "selector": {"matchLabels": {APP_LABEL: NAME}},
            "template": model_pod_template(image, version, {"value": f"v{version}"}),
        },
    }


def flagger_metric_templates(namespace: str, prometheus_url: str, rules: Rules) -> list[Body]:
    selector = f'namespace="{{{{ namespace }}}}", pod=~"{FLAGGER_CANARY_PODS}"'
    return [
        {
            "apiVersion": FLAGGER_GROUP_VERSION,
            "kind": "MetricTemplate",
            "metadata": {"name": check.name, "namespace": namespace},
            "spec": {
                "provider": {"type": "prometheus", "address": prometheus_url},
                "query": check.query,
            },
        }
        for check in checks(selector, "{{ interval }}", rules)
    ]


def flagger_canary(namespace: str, rules: Rules) -> Body:
    """Blue/Green on the kubernetes provider (no mesh): `iterations` analysis rounds on the
    canary (which clients reach only through `<name>-canary`), then promotion; `threshold`
    failed checks roll back."""
    window = rules.window
    metrics = [
        {
            "name": check.name,
            "templateRef": {"name": check.name},
            "thresholdRange": {"max": check.maximum},
            "interval": window,
        }
        for check in checks("", window, rules)
    ]
    return {
        "apiVersion": FLAGGER_GROUP_VERSION,
        "kind": "Canary",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "progressDeadlineSeconds": 120,
            "service": {
                "port": 80,
                "targetPort": "http",
                **{role: {"labels": SERVICE_LABELS} for role in ("apex", "canary", "primary")},
            },
            "analysis": {
                "interval": f"{rules.flagger_interval_seconds}s",
                "threshold": rules.failure_limit,
                "iterations": rules.flagger_iterations,
                "metrics": metrics,
            },
        },
    }


# --- modeldeploy --------------------------------------------------------------------------------


def flagger_halt_reason(events: Sequence[Body], since: datetime) -> str:
    """The newest `Halt advancement` message of a Canary's Events seen at or after `since`
    (the version's deploy time). Kubernetes folds a repeated Event into one whose
    lastTimestamp moves: without `since`, an earlier run's reason can pass for this one's."""
    floor = since.replace(microsecond=0)  # Event times have whole seconds

    def seen(event: Body) -> datetime | None:
        stamp = event.get("lastTimestamp") or event.get("eventTime")
        return datetime.fromisoformat(stamp) if stamp else None

    halts = [
        (when, str(e["message"]))
        for e in events
        if "Halt" in e.get("message", "") and (when := seen(e)) is not None and when >= floor
    ]
    return max(halts)[1] if halts else "no halted advancement"


def modeldeploy_spec(rules: Rules, min_samples: int | None = None) -> Body:
    """The same policy as a ModelDeployment's rollout and analysis. Without a sample floor
    by default: its tests are anytime-valid (a verdict on few requests is as trustworthy as
    one on many), where the floor is how the peers' point estimates avoid judging a thin
    window; `min_samples` sets one anyway, to measure what it costs."""
    analysis: Body = {
        "interval": f"{rules.interval_seconds}s",
        "window": rules.window,
        "failureLimit": rules.failure_limit,
        "onNoData": "hold",
        "noDataTimeout": "2m",
        "latency": {"p95Ms": rules.p95_ms},
        "errorRate": {"max": rules.max_error_rate},
        # The peers check no predictions: modeldeploy's own prediction and confidence
        # checks get the loose tolerance of the project's analysis tests, which a
        # healthy canary shows within a few thousand requests.
        "drift": {"features": {"psi": rules.feature_psi}, "predictions": {"psi": 0.3}},
    }
    if min_samples is not None:
        analysis["minSamples"] = min_samples
    return {
        "replicas": {"minWarm": rules.replicas, "max": rules.replicas},
        "rollout": {
            "canary": {"steps": list(rules.steps)},
            "stepInterval": f"{rules.step_seconds}s",
            "bakeTime": f"{rules.bake_seconds}s",
        },
        "analysis": analysis,
    }


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    variant: str  # the churn example's build variant
    bad: bool  # a breach: it must be rolled back


@dataclass(frozen=True)
class RunResult:
    tool: Tool
    scenario: str
    bad: bool
    outcome: Outcome
    seconds: float | None  # first canary request -> its last (bad) or -> promoted (healthy)


@dataclass(frozen=True)
class Footprint:
    cpu_seconds: float  # user + system over the tool's runs
    wall_seconds: float
    peak_rss_bytes: int


def _quantile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _seconds(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{_quantile(values, 0.5):.1f} / {_quantile(values, 0.95):.1f}"


SUMMARY_HEADERS = (
    "scenario", "tool", "runs", "rolled back", "promoted", "stuck",
    "breach→0 p50/p95 s", "→promoted p50/p95 s",
)  # fmt: skip


def summary_rows(results: Sequence[RunResult]) -> list[list[str]]:
    """Per (scenario, tool), in first-seen order: outcomes and p50/p95 times. On a healthy
    version a rollback is a false one; on a bad one a promotion is a miss."""
    keys = list(dict.fromkeys((r.scenario, r.tool) for r in results))
    rows = []
    for scenario, tool in keys:
        runs = [r for r in results if (r.scenario, r.tool) == (scenario, tool)]
        back = [r for r in runs if r.outcome == "rolled back"]
        promoted = [r for r in runs if r.outcome == "promoted"]
        stuck = [r for r in runs if r.outcome == "stuck"]
        rows.append(
            [
                scenario, tool, str(len(runs)), str(len(back)), str(len(promoted)),
                str(len(stuck)),
                _seconds([r.seconds for r in back if r.seconds is not None]),
                _seconds([r.seconds for r in promoted if r.seconds is not None]),
            ]
        )  # fmt: skip
    return rows


def footprint_rows(footprints: dict[Tool, Footprint]) -> list[list[str]]:
    return [
        [
            tool,
            f"{f.cpu_seconds:.1f}",
            f"{100 * f.cpu_seconds / f.wall_seconds:.1f}" if f.wall_seconds else "-",
            f"{f.peak_rss_bytes / 2**20:.0f}",
        ]
        for tool, f in footprints.items()
    ]


FOOTPRINT_HEADERS = ("controller", "CPU s", "CPU % of a core", "peak RSS MiB")


def target_lines(results: Sequence[RunResult]) -> list[str]:
    """The issue's targets, printed (never asserted): modeldeploy's breach -> rollback at
    most 0.5x the faster peer's, at an equal or lower false-rollback rate."""
    lines = []
    for scenario in dict.fromkeys(r.scenario for r in results if r.bad):
        medians: dict[str, float] = {}
        for tool in TOOLS:
            times = [
                r.seconds
                for r in results
                if r.scenario == scenario and r.tool == tool and r.outcome == "rolled back"
                and r.seconds is not None
            ]  # fmt: skip
            if times:
                medians[tool] = statistics.median(times)
        peers = [medians[t] for t in ("argo", "flagger") if t in medians]
        if "modeldeploy" in medians and peers:
            ratio = medians["modeldeploy"] / min(peers)
            verdict = "met" if ratio <= 0.5 else "not met"
            lines.append(
                f"target {scenario}: modeldeploy's median breach→0 is {ratio:.2f}x the faster "
                f"peer's (≤ 0.5x: {verdict})"
            )
        else:
            lines.append(
                f"target {scenario}: not comparable (no rollback by modeldeploy or by either peer)"
            )
    false_rates = {
        tool: (
            sum(1 for r in results if r.tool == tool and not r.bad and r.outcome == "rolled back"),
            sum(1 for r in results if r.tool == tool and not r.bad),
        )
        for tool in TOOLS
    }
    lines.append(
        "false rollbacks of the healthy version: "
        + ", ".join(f"{tool} {n}/{total}" for tool, (n, total) in false_rates.items() if total)
    )
    return lines
