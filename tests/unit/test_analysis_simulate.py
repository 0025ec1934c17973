"""The simulated rollouts of bench/bench_detection.py: counts as the analysis reads them."""

import numpy as np
import pytest

from modeldeploy import contract
from modeldeploy.analysis import checks, rounds, simulate, verdicts
from modeldeploy.analysis.config import Track
from modeldeploy.analysis.queries import Series
from modeldeploy.analysis.simulate import Change, Counts
from modeldeploy.api import Analysis

pytestmark = pytest.mark.unit
HEALTHY = Change()


def window(
    change: Change = HEALTHY, rollouts: int = 4, rate: float = 200.0
) -> tuple[simulate.World, Counts]:
    rng = np.random.default_rng(3)
    world = simulate.make_world(rng, rollouts, change)
    counts = Counts.zeros(rollouts)
    for _ in range(10):
        counts = counts + simulate.draw_interval(rng, world, rate, 0.1)
    return world, counts


def test_the_profile_and_the_serving_masses_are_distributions() -> None:
    world, _ = window()
    assert len(simulate.FEATURES) == 20
    np.testing.assert_allclose(world.baseline.sum(axis=-1), 1.0)
    np.testing.assert_allclose(world.canary.sum(axis=-1), 1.0)
    nullable = [f.name for f in simulate.FEATURES].index(simulate.NULLABLE)
    assert world.baseline[:, nullable, 10] == pytest.approx(0.1, abs=0.01)


def test_counts_add_up_across_the_series() -> None:
    _, counts = window()
    rows = counts.codes[:, 0, 0] + counts.codes[:, 0, 2]
    np.testing.assert_array_equal(counts.features.sum(axis=-1), np.repeat(rows[:, None], 20, 1))
    np.testing.assert_array_equal(counts.latency.sum(axis=-1), counts.codes.sum(axis=-1))
    assert counts.canary_requests.min() > 500  # 200 req/s x 10% x 5 min, about 6,000


def test_a_healthy_canary_passes_the_projects_checks() -> None:
    world, counts = window()
    config = rounds.map_spec(Analysis()).config
    for r in range(world.rollouts):
        observations = simulate.observations(world, counts, r)
        outcome = verdicts.aggregate(checks.evaluate(config, observations))
        assert outcome.verdict is verdicts.Verdict.PASS, outcome.reason


def test_a_constant_feature_fails_the_feature_check() -> None:
    world, counts = window(Change(constant=True))
    config = rounds.map_spec(Analysis()).config
    results = checks.evaluate(config, simulate.observations(world, counts, 0))
    psi = next(c for c in results if c.name == checks.FEATURE_PSI)
    assert (psi.verdict, psi.subject) == (verdicts.Verdict.FAIL, simulate.SHIFTED)


def test_observations_are_shaped_as_prometheus_answers() -> None:
    world, counts = window()
    results = simulate.observations(world, counts, 0).results
    latency = results[(Track.CANARY, Series.LATENCY)].values
    assert latency[("+Inf",)] == counts.canary_requests[0]
    features = results[(Track.CANARY, Series.FEATURES)].values
    assert (simulate.NULLABLE, contract.MISSING_BIN) in features
    assert (Track.STABLE, Series.PREDICTIONS) in results


def test_rows_drawn_within_bins_keep_the_counts() -> None:
    world, counts = window(Change(shift_sd=1.0))
    rng = np.random.default_rng(5)
    rows = simulate.feature_rows(rng, world, 0, counts.features[0], training=False)
    shifted = rows[simulate.SHIFTED]
    edges = world.edges[0, 0]
    bins = np.searchsorted(edges, shifted, side="left")
    np.testing.assert_array_equal(np.bincount(bins, minlength=10), counts.features[0, 0, :10])
    assert np.isnan(rows[simulate.NULLABLE]).sum() == counts.features[0, 14, 10]
