"""False rollbacks and detection of canary analysis rules, side by side on the same data.

A canary rollout at the spec's defaults (canary 10% of traffic, stepInterval 5m, analysis
every 30 s) of the 20-feature model of `modeldeploy.analysis.simulate`, simulated per 30 s
interval for `--rollouts` rollouts per cell, until it is promoted, rolled back, or stuck
(neither within `--horizon` minutes). Methods, fed the same counts:

- today: the rule as the project runs it now (sliding 5m window, per-feature PSI > 0.1 with
  chi-square p < 0.01, prediction/confidence PSI > 0.25, missing rate +0.05, 5xx 1%,
  invalid +2 pp, minSamples 500, 2 consecutive failing rounds roll back, a passing round
  after stepInterval promotes), as a bench-local vectorised copy built on
  `modeldeploy.analysis.statistics`. Checked against the project's code of that rule
  (2078010) on the same counts: 11,476 of 11,476 round verdicts and 1,200 of 1,200 rollout
  outcomes agreed (150 rollouts at 20 and 33 req/s: healthy, p95Ms, +0.25 sd, +20% latency).
- v2: the project's analysis (`checks.evaluate` + `verdicts.aggregate`, spec defaults) on
  cumulative counts since the canary's first round: fail rolls back at once, pass after
  stepInterval promotes (`v2_verdict`). Slow (a few ms a round): `--v2-rollouts` of each cell.
- evidently: Evidently's default per-column drift test (reference: `REFERENCE_ROWS` training
  rows; current: a window's rows, drawn within their bins), per window of n rows, and on
  every round's 5m window of `--evidently-rollouts` rollouts (alarm = roll back).

Then the rate test alone (error rate, latency's slower share), looked at after every
request up to `RATE_HORIZON`: its exact false-alarm chance at the limit (and `--rate-runs`
simulated healthy streams), and the median requests it needs to reject at 2x, 5x and 10x
the limit and at 50%, with its prior (`sequential.rate_prior`) and with the single prior
it had before (`simulate.single_rate_prior`).

    python bench/bench_detection.py [--rollouts 1000] [--seed 7] [--rates 10,20,33,100,200]
        [--quick] [--cells healthy|changes|rates] [--rate-runs 4000]
"""

import argparse
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy.analysis import checks, rounds, simulate, statistics, verdicts
from modeldeploy.analysis.config import AnalysisConfig
from modeldeploy.analysis.simulate import Change, Counts, World
from modeldeploy.analysis.verdicts import Verdict
from modeldeploy.api import Analysis

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

CANARY_SHARE = 0.10
STEP_ROUNDS = 10  # stepInterval 5m / interval 30s
WINDOW_ROUNDS = 10  # window 5m / interval 30s
P95_MS = 100  # between the stable's p95 (91 ms) and 1.2x it (109 ms)
REFERENCE_ROWS = 5_000  # Evidently's reference: > 1,000 rows selects its large-data tests
EVIDENTLY_SIZES = (500, 1000, 5000)
WITHIN_REQUESTS = 2_000
RATE_LIMITS = (0.01, 0.02)
RATE_HORIZON = 3_000
RATE_LEVELS = (0.05, 1 / 1700)  # a loose level, and 1% shared by the churn example's 17 tests
PASS, FAIL, INCONCLUSIVE = 0, 1, 2

CHANGES = (
    Change("mean +0.1 sd", shift_sd=0.1),
    Change("mean +0.25 sd", shift_sd=0.25),
    Change("mean +0.5 sd", shift_sd=0.5),
    Change("mean +1 sd", shift_sd=1.0),
    Change("scale x1.5", scale=1.5),
    Change("missing +5 pp", extra_missing=0.05),
    Change("category shift 5 pp", category_shift=0.05),
    Change("constant (leaky)", constant=True),
    Change("latency +20%", latency_factor=1.2),
)
NO_CHANGE = Change()
LATENCY_NULL = Change("none, p95Ms 100")  # the latency check's own false rollbacks


@dataclass(frozen=True)
class TodayRule:
    """The defaults of the rule before analysis v2 (modeldeploy 0.x up to 2078010)."""

    min_samples: int = 500
    failure_limit: int = 2
    significance: float = 0.01
    feature_psi: float = 0.1
    prediction_psi: float = 0.25
    max_missing_increase: float = 0.05
    max_error_rate: float = 0.01
    max_invalid_increase: float = 0.02
    latency_p95_ms: float | None = None


def uses_latency(change: Change) -> bool:
    return change.latency_factor != 1.0 or change is LATENCY_NULL


def config_for(change: Change) -> AnalysisConfig:
    """Spec defaults; the latency cells add latency.p95Ms (off by default)."""
    config = rounds.map_spec(Analysis()).config
    return replace(config, latency_p95_ms=float(P95_MS)) if uses_latency(change) else config


def rule_for(change: Change) -> TodayRule:
    return TodayRule(latency_p95_ms=float(P95_MS)) if uses_latency(change) else TodayRule()


# --- today's rule, bench-local and vectorised over rollouts ---------------------------------


def _gated(value: npt.ArrayLike, fails: npt.ArrayLike, samples: npt.ArrayLike, n: int) -> IntArray:
    """threshold_check: inconclusive below min_samples or without a value."""
    verdict = np.where(np.asarray(fails), FAIL, PASS)
    unsure = (np.asarray(samples) < n) | np.isnan(np.asarray(value, dtype=np.float64))
    return np.asarray(np.where(unsure, INCONCLUSIVE, verdict), dtype=np.int64)


def _drift(
    psi: npt.ArrayLike, p_value: npt.ArrayLike, threshold: float, alpha: float | None
) -> IntArray:
    """Above the threshold: fail if significant, else inconclusive (before gating)."""
    above = np.asarray(psi) > threshold
    significant = above & (np.asarray(p_value) < alpha) if alpha is not None else above
    return np.asarray(np.where(above, np.where(significant, FAIL, INCONCLUSIVE), PASS), np.int64)


def _worst(*verdict_arrays: IntArray) -> IntArray:
    """aggregate/combine: fail if any fails, else inconclusive if any is, else pass."""
    stacked = np.stack(verdict_arrays)
    fail = (stacked == FAIL).any(axis=0)
    unsure = (stacked == INCONCLUSIVE).any(axis=0)
    return np.asarray(np.where(fail, FAIL, np.where(unsure, INCONCLUSIVE, PASS)), np.int64)


def _two_sample(
    canary: IntArray, stable: IntArray, config: TodayRule, threshold: float
) -> IntArray:
    """Canary vs stable PSI; the chi-square p-value only where PSI is above (it is scalar)."""
    a, b = canary.astype(np.float64), stable.astype(np.float64)
    psi = statistics.psi_two_sample(a, b)
    p_value = np.ones_like(psi)
    for r in np.flatnonzero(psi > threshold):
        p_value[r] = float(statistics.chi_square_two_sample(a[r], b[r]).p_value)
    samples = np.minimum(a.sum(axis=-1), b.sum(axis=-1))
    drift = _drift(psi, p_value, threshold, config.significance)
    gate = _gated(psi, drift == FAIL, samples, config.min_samples)
    return np.where(gate == INCONCLUSIVE, INCONCLUSIVE, drift)


def _p95_ms(latency: IntArray) -> tuple[float, bool]:
    buckets = list(zip(simulate.LATENCY_BOUNDS, np.cumsum(latency).tolist(), strict=True))
    beyond = 0.95 * latency.sum() > latency[:-1].sum()
    return statistics.histogram_quantile(0.95, buckets) * 1000, bool(beyond)


def today_verdicts(config: TodayRule, world: World, window: Counts) -> IntArray:
    """One round's outcome per rollout under today's checks (config's thresholds)."""
    n = config.min_samples
    codes = window.codes.astype(np.float64)
    total = codes.sum(axis=-1)  # (rollouts, tracks)
    results: list[IntArray] = []
    if config.latency_p95_ms is not None:
        limit = config.latency_p95_ms
        p95, beyond = zip(*(_p95_ms(row) for row in window.latency[:, 0]), strict=True)
        value = np.asarray(p95)
        verdict = _gated(value, value > limit, window.latency[:, 0].sum(axis=-1), n)
        results.append(np.where((verdict == PASS) & np.asarray(beyond), INCONCLUSIVE, verdict))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = codes[:, 0, 2] / total[:, 0]
    results.append(_gated(rate, rate > config.max_error_rate, total[:, 0], n))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = codes[..., 1] / total
    increase = share[:, 0] - np.nan_to_num(share[:, 1])
    results.append(_gated(increase, increase > config.max_invalid_increase, total[:, 0], n))
    per_feature: list[IntArray] = []
    missing_checks: list[IntArray] = []
    for i, feature in enumerate(simulate.FEATURES):
        k = len(feature.labels) - 1  # the missing bin last, left out of PSI
        counts = window.features[:, i].astype(np.float64)
        present, ratios = counts[:, :k], world.baseline[:, i, :k]
        psi = statistics.psi_vs_ratios(present, ratios)
        p_value = statistics.chi_square_vs_ratios(present, ratios).p_value
        drift = _drift(psi, p_value, config.feature_psi, config.significance)
        gate = _gated(psi, drift == FAIL, present.sum(axis=-1), n)
        per_feature.append(np.where(gate == INCONCLUSIVE, INCONCLUSIVE, drift))
        seen = counts[:, : k + 1].sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            increase = counts[:, k] / seen - world.baseline[:, i, k]
        fails = increase > config.max_missing_increase
        missing_checks.append(_gated(increase, fails, seen, n))
    results += [_worst(*group) for group in (per_feature, missing_checks) if group]
    labels = len(simulate.CLASS_LABELS) - 1  # missing left out
    predictions = window.predictions[..., :labels]
    results.append(_two_sample(predictions[:, 0], predictions[:, 1], config, config.prediction_psi))
    if window.confidence.sum() > 0:
        confidence = window.confidence
        results.append(
            _two_sample(confidence[:, 0], confidence[:, 1], config, config.prediction_psi)
        )
    return _worst(*results)


# --- policies: which rounds' verdicts end a rollout -----------------------------------------


@dataclass
class Tally:
    """Per rollout: how it ended (0 running, 1 promoted, 2 rolled back), at which round, and
    the canary requests served by then."""

    ended: IntArray
    round: IntArray
    requests: IntArray

    @classmethod
    def of(cls, rollouts: int) -> "Tally":
        zeros = np.zeros(rollouts, np.int64)
        return cls(zeros.copy(), zeros.copy(), zeros.copy())

    def end(self, which: BoolArray, how: int, round_: int, requests: IntArray) -> None:
        which = which & (self.ended == 0)
        self.ended[which], self.round[which], self.requests[which] = how, round_, requests[which]


class Method:
    name = ""

    def __init__(self, config: AnalysisConfig, world: World) -> None:
        self.config, self.world = config, world
        self.tally = Tally.of(world.rollouts)

    def round(self, index: int, window: Counts, cumulative: Counts) -> None:
        raise NotImplementedError


class Today(Method):
    """failureLimit consecutive failing rounds roll back; a pass after the step promotes."""

    name = "today"

    def __init__(self, config: AnalysisConfig, world: World, rule: TodayRule) -> None:
        super().__init__(config, world)
        self.rule = rule
        self.failures = np.zeros(world.rollouts, np.int64)
        self.failure_limit = rule.failure_limit
        self.verdicts: list[IntArray] = []

    def round(self, index: int, window: Counts, cumulative: Counts) -> None:
        verdict = today_verdicts(self.rule, self.world, window)
        self.verdicts.append(verdict)
        self.failures = np.where(verdict == PASS, 0, self.failures + (verdict == FAIL))
        requests = cumulative.canary_requests
        self.tally.end(self.failures >= self.failure_limit, 2, index, requests)
        self.tally.end((verdict == PASS) & (index >= STEP_ROUNDS), 1, index, requests)


def v2_verdict(config: AnalysisConfig, world: World, cumulative: Counts, rollout: int) -> Verdict:
    """The v2 contract: one verdict from cumulative counts since the canary's first round."""
    observations = simulate.observations(world, cumulative, rollout)
    return verdicts.aggregate(checks.evaluate(config, observations)).verdict


class V2(Method):
    """fail rolls back at once; pass after stepInterval promotes; inconclusive waits."""

    name = "v2"

    def round(self, index: int, window: Counts, cumulative: Counts) -> None:
        requests = cumulative.canary_requests
        for r in np.flatnonzero(self.tally.ended == 0):
            verdict = v2_verdict(self.config, self.world, cumulative, int(r))
            one = np.arange(self.world.rollouts) == r
            if verdict is Verdict.FAIL:
                self.tally.end(one, 2, index, requests)
            elif verdict is Verdict.PASS and index >= STEP_ROUNDS:
                self.tally.end(one, 1, index, requests)


# --- Evidently ------------------------------------------------------------------------------


class EvidentlyDrift:
    """Evidently's default drift test of every feature column (the one its DataDriftPreset
    picks: `get_stattest` with no stattest given), a column alarming when `drifted`. Missing
    values are dropped first, as Evidently's drift calculation does."""

    def __init__(self) -> None:
        import pandas as pd
        from evidently.legacy.calculations.stattests.registry import get_stattest
        from evidently.legacy.core import ColumnType

        self._pd, self._get_stattest, self._types = pd, get_stattest, ColumnType

    def drifted(self, reference: dict[str, Any], current: dict[str, Any]) -> list[str]:
        pd, out = self._pd, []
        for feature in simulate.FEATURES:
            kind = self._types.Numerical if feature.kind == "numeric" else self._types.Categorical
            ref = pd.Series(reference[feature.name]).dropna()
            cur = pd.Series(current[feature.name]).dropna()
            if len(cur) == 0:
                continue
            test = self._get_stattest(ref, cur, kind, None)
            if test(ref, cur, kind, None).drifted:
                out.append(feature.name)
        return out


def load_evidently() -> EvidentlyDrift | None:
    try:
        return EvidentlyDrift()
    except ImportError:
        return None


def _reference(rng: np.random.Generator, world: World, r: int) -> dict[str, Any]:
    counts = np.stack([rng.multinomial(REFERENCE_ROWS, p) for p in world.baseline[r]])
    return simulate.feature_rows(rng, world, r, counts, training=True)


class EvidentlyEveryRound(Method):
    """Evidently on every round's 5m window from minSamples rows on; any drifted column rolls
    back, no alarm by the end of the step promotes (rollouts beyond `tracked` are left out)."""

    name = "evidently"

    def __init__(
        self,
        config: AnalysisConfig,
        world: World,
        detector: EvidentlyDrift,
        rng: np.random.Generator,
        tracked: int,
    ) -> None:
        super().__init__(config, world)
        self.detector, self.rng, self.tracked = detector, rng, tracked
        self.references = [_reference(rng, world, r) for r in range(tracked)]
        self.rows: list[deque[dict[str, Any]]] = [
            deque(maxlen=WINDOW_ROUNDS) for _ in range(tracked)
        ]
        self.tally.ended[tracked:] = -1  # not tracked
        self.previous = Counts.zeros(world.rollouts)

    def round(self, index: int, window: Counts, cumulative: Counts) -> None:
        increment = (cumulative - self.previous).features
        self.previous = cumulative
        requests = cumulative.canary_requests
        for r in range(self.tracked):
            rows = simulate.feature_rows(self.rng, self.world, r, increment[r], training=False)
            self.rows[r].append(rows)
            if self.tally.ended[r] != 0 or window.canary_requests[r] < self.config.min_samples:
                continue
            current = {name: np.concatenate([part[name] for part in self.rows[r]]) for name in rows}
            one = np.arange(self.world.rollouts) == r
            if self.detector.drifted(self.references[r], current):
                self.tally.end(one, 2, index, requests)
            elif index >= STEP_ROUNDS:
                self.tally.end(one, 1, index, requests)


def altered_feature(change: Change) -> str:
    if change.extra_missing:
        return simulate.NULLABLE
    return simulate.SPARSE if change.category_shift else simulate.SHIFTED


def evidently_windows(
    rng: np.random.Generator, detector: EvidentlyDrift, change: Change, n: int, windows: int
) -> tuple[float, float]:
    """Shares of windows of n canary rows in which any column drifts, and in which the
    altered one does (a numeric one, without a change)."""
    world = simulate.make_world(rng, windows, change)
    numeric = {f.name for f in simulate.FEATURES if f.kind == "numeric"}
    target = {altered_feature(change)} if change != NO_CHANGE else numeric
    any_column = altered = 0
    for r in range(windows):
        counts = np.stack([rng.multinomial(n, p) for p in world.canary[r]])
        current = simulate.feature_rows(rng, world, r, counts, training=False)
        drifted = set(detector.drifted(_reference(rng, world, r), current))
        any_column += bool(drifted)
        altered += bool(drifted & target)
    return any_column / windows, altered / windows


# --- running and reporting ------------------------------------------------------------------


def simulate_cell(
    rng: np.random.Generator,
    world: World,
    rate: float,
    methods: Sequence[Method],
    horizon_rounds: int,
) -> None:
    """Draws interval by interval and lets every method judge each round's counts."""
    cumulative = Counts.zeros(world.rollouts)
    history = deque([cumulative], maxlen=WINDOW_ROUNDS + 1)  # window = now - 10 rounds ago
    for index in range(1, horizon_rounds + 1):
        cumulative = cumulative + simulate.draw_interval(rng, world, rate, CANARY_SHARE)
        history.append(cumulative)
        window = cumulative - history[0]
        for method in methods:
            if (method.tally.ended == 0).any():
                method.round(index, window, cumulative)
        if all((m.tally.ended != 0).all() for m in methods):
            return


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summary(tally: Tally, *, detection: bool) -> str:
    tracked = tally.ended >= 0
    n = int(tracked.sum())
    rolled, promoted = tally.ended == 2, tally.ended == 1
    k = int(rolled.sum())
    low, high = wilson(k, n)
    stuck = float((tally.ended[tracked] == 0).mean()) if n else math.nan
    if detection:
        requests = np.median(tally.requests[rolled]) if k else math.nan
        return f"{k / n:6.1%} [{low:5.1%},{high:6.1%}]  req {requests:7.0f}  stuck {stuck:5.1%}"
    promote = "-"
    if promoted.any():
        promote = f"{np.median(tally.round[promoted]) * simulate.INTERVAL_SECONDS / 60:.1f} min"
    return f"{k / n:6.1%} [{low:5.1%},{high:6.1%}]  stuck {stuck:5.1%}  promote {promote}"


def within(tally: Tally, requests: int) -> float:
    tracked = tally.ended >= 0
    caught = (tally.ended == 2) & (tally.requests <= requests)
    return float(caught[tracked].mean())


def run(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    detector = load_evidently() if not args.no_evidently else None
    horizon = round(args.horizon * 60 / simulate.INTERVAL_SECONDS)
    print(
        f"{args.rollouts} rollouts per cell (v2: {args.v2_rollouts}, evidently every round: "
        f"{args.evidently_rollouts if detector else 0}); canary {CANARY_SHARE:.0%}, "
        f"step {STEP_ROUNDS} rounds of {simulate.INTERVAL_SECONDS} s, horizon {args.horizon} min"
    )
    if detector is None:
        print("(evidently not installed: hack/pyenv.sh bench, then run with that venv)")
    cells = [(NO_CHANGE, False), (LATENCY_NULL, False), *((c, True) for c in CHANGES)]
    if args.quick:
        cells = [*cells[:2], (CHANGES[1], True), (CHANGES[-1], True)]
    if args.cells == "rates":
        cells = []
    elif args.cells is not None:
        cells = [cell for cell in cells if cell[1] == (args.cells == "changes")]
    for change, detection in cells:
        what = "detection" if detection else "false rollbacks"
        print(f"\n== {change.name}: {what} [95% CI]")
        for rate in args.rates:
            started = time.perf_counter()
            world = simulate.make_world(rng, args.rollouts, change)
            config = config_for(change)
            methods: list[Method] = [Today(config, world, rule_for(change))]
            v2_world = _first(world, args.v2_rollouts)
            methods.append(V2(config, v2_world))
            if detector is not None and args.evidently_rollouts and not detection:
                methods.append(
                    EvidentlyEveryRound(config, world, detector, rng, args.evidently_rollouts)
                )
            small = v2_world.rollouts
            wrapped = [m if m.world is world else _Prefix(m, small) for m in methods]
            simulate_cell(rng, world, rate, wrapped, horizon)
            for method in methods:
                extra = ""
                if detection and change.shift_sd == 0.25:
                    extra = (
                        f"  within {WITHIN_REQUESTS}: {within(method.tally, WITHIN_REQUESTS):.1%}"
                    )
                line = summary(method.tally, detection=detection)
                print(f"  {rate:5g} req/s  {method.name:<10} {line}{extra}")
            print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)
    if detector is not None and args.cells != "rates":
        evidently_per_window(rng, detector, args.evidently_windows, quick=args.quick)
    if args.cells in (None, "rates"):
        rate_test(rng, args.seed, args.rate_runs)


def _first(world: World, rollouts: int) -> World:
    """The same world restricted to its first rollouts (their draws are shared)."""
    return replace(
        world,
        baseline=world.baseline[:rollouts],
        canary=world.canary[:rollouts],
        edges=world.edges[:rollouts],
    )


class _Prefix(Method):
    """Runs a method over the first rollouts of the full cell's counts."""

    def __init__(self, inner: Method, rollouts: int) -> None:
        self.inner, self.rollouts, self.tally, self.name = inner, rollouts, inner.tally, inner.name

    def round(self, index: int, window: Counts, cumulative: Counts) -> None:
        self.inner.round(index, _head(window, self.rollouts), _head(cumulative, self.rollouts))


def _head(counts: Counts, rollouts: int) -> Counts:
    return Counts(*(getattr(counts, name)[:rollouts] for name in Counts.__dataclass_fields__))


def evidently_per_window(
    rng: np.random.Generator, detector: EvidentlyDrift, windows: int, *, quick: bool
) -> None:
    print(
        f"\n== evidently per window ({windows} windows, reference {REFERENCE_ROWS} rows): any "
        "column drifted / the altered column drifted (none: any numeric column)"
    )
    changes = [NO_CHANGE, *(c for c in CHANGES if c.latency_factor == 1.0)]
    if quick:
        changes = changes[:2]
    print(f"  {'change':<22}" + "".join(f"{'n=' + str(n):>16}" for n in EVIDENTLY_SIZES))
    for change in changes:
        started = time.perf_counter()
        cells = [evidently_windows(rng, detector, change, n, windows) for n in EVIDENTLY_SIZES]
        print(
            f"  {change.name:<22}"
            + "".join(f"{a:7.1%} /{b:7.1%}" for a, b in cells)
            + f"   ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )


def rate_test(rng: np.random.Generator, seed: int, runs: int) -> None:
    """The rate test alone, request by request (module doc)."""
    print(
        f"\n== rate test, looked at after every request (horizon {RATE_HORIZON}): false alarms "
        f"at the limit, exact / {runs} simulated streams; median requests to reject "
        f"(e >= {1 / RATE_LEVELS[1]:.0f})"
    )
    rates = (("2x", 2.0), ("5x", 5.0), ("10x", 10.0), ("50%", None))
    print(
        f"  {'limit':<6} {'prior':<8}"
        + "".join(f"{f'at alpha {a:.2g}':>22}" for a in RATE_LEVELS)
        + "".join(f"{label:>7}" for label, _ in rates)
    )
    for p0 in RATE_LIMITS:
        for name, prior in (("ladder", None), ("single", simulate.single_rate_prior(p0))):
            started = time.perf_counter()
            cells = []
            for alpha in RATE_LEVELS:
                boundary = simulate.rate_boundary(p0, math.log(1 / alpha), RATE_HORIZON, prior)
                exact = simulate.crossing_probability(boundary, p0)
                ever = float((simulate.first_crossings(rng, boundary, p0, runs) > 0).mean())
                cells.append(f"{exact:10.2e} / {ever:9.2e}")
            medians = []
            for i, (_, multiple) in enumerate(rates):
                streams = np.random.default_rng([seed, i])  # the same streams for both priors
                rate = 0.5 if multiple is None else multiple * p0
                found = simulate.first_crossings(streams, boundary, rate, 1000)
                medians.append(np.median(np.where(found > 0, found, np.inf)))
            print(
                f"  {p0:<6g} {name:<8}"
                + "".join(f"{c:>22}" for c in cells)
                + "".join(f"{m:7.0f}" for m in medians)
                + f"   ({time.perf_counter() - started:.1f} s)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--v2-rollouts", type=int, default=100)
    parser.add_argument("--evidently-rollouts", type=int, default=30)
    parser.add_argument("--evidently-windows", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=[10.0, 20.0, 33.0, 100.0, 200.0])  # fmt: skip
    parser.add_argument("--horizon", type=float, default=60.0, help="minutes")
    parser.add_argument("--quick", action="store_true", help="a small run (smoke test)")
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument("--cells", choices=("healthy", "changes", "rates"),
                        help="the false-rollback cells, the changes or the rate test")  # fmt: skip
    parser.add_argument("--rate-runs", type=int, default=4000)
    args = parser.parse_args()
    if args.quick:
        args.rollouts, args.v2_rollouts = min(args.rollouts, 100), min(args.v2_rollouts, 10)
        args.evidently_rollouts, args.evidently_windows = min(args.evidently_rollouts, 3), 5
        args.horizon, args.rates = min(args.horizon, 15.0), args.rates[2:3]
        args.rate_runs = min(args.rate_runs, 500)
    run(args)


if __name__ == "__main__":
    main()
