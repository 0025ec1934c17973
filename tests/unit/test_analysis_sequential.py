"""The anytime-valid tests: valid under repeated looks, powerful where it matters, and the
bounds that let a check pass. Simulations are seeded (deterministic) and sized to run in
well under a second each."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from modeldeploy.analysis import sequential, simulate
from modeldeploy.analysis.config import Effect

pytestmark = pytest.mark.unit

EDGES = stats.norm.ppf(np.arange(1, 10) / 10)
DECILES = np.full(10, 0.1)
LOOKS = 30


def masses(shift_sd: float) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], stats.norm.cdf(EDGES - shift_sd), [1.0]]))


def cumulative(rng: np.random.Generator, p: np.ndarray, per_look: int, runs: int) -> np.ndarray:
    """(runs, LOOKS, bins) cumulative counts: the same stream looked at LOOKS times."""
    return rng.multinomial(per_look, p, size=(runs, LOOKS)).cumsum(axis=1).astype(np.float64)


def test_under_no_change_repeated_looks_stay_within_the_level() -> None:
    rng = np.random.default_rng(11)
    counts = cumulative(rng, DECILES, per_look=100, runs=2000)
    log_e = sequential.log_e_multinomial(counts, DECILES, sequential.concentration_for(0.05, 10))
    ever = (log_e >= math.log(1 / 0.05)).any(axis=1).mean()
    # Ville: P(ever e >= 20) <= 5% over all 30 looks (a fixed-n test looked at 30 times
    # would reject far more often).
    assert ever <= 0.05


def test_a_quarter_sd_shift_is_found_by_2000_requests() -> None:
    rng = np.random.default_rng(12)
    counts = cumulative(rng, masses(0.25), per_look=100, runs=500)[:, :20]  # n = 100..2000
    log_e = sequential.log_e_multinomial(counts, DECILES, sequential.concentration_for(0.05, 10))
    assert (log_e >= math.log(40 / 0.01)).any(axis=1).mean() >= 0.9  # 40 tests share 1%


def test_two_samples_under_a_changing_split_stay_within_the_level() -> None:
    rng = np.random.default_rng(13)
    shares = np.repeat([0.1, 0.25, 0.5], 10)  # canary steps
    canary = np.stack([rng.multinomial(round(1000 * s), DECILES, size=1000) for s in shares], 1)
    stable = np.stack(
        [rng.multinomial(round(1000 * (1 - s)), DECILES, size=1000) for s in shares], 1
    )
    log_e = sequential.log_e_two_sample(
        canary.cumsum(1).astype(float), stable.cumsum(1).astype(float), 44.0
    )
    assert (log_e >= math.log(1 / 0.05)).any(axis=1).mean() <= 0.05
    shifted = rng.multinomial(300, masses(0.5), size=(1000, 1)).astype(float)
    same = rng.multinomial(3000, DECILES, size=(1000, 1)).astype(float)
    found = sequential.log_e_two_sample(shifted, same, 44.0) >= math.log(100)
    assert found.mean() >= 0.9


def test_a_rate_at_its_limit_is_not_rejected_and_a_double_one_is() -> None:
    rng = np.random.default_rng(14)
    trials = np.arange(1, LOOKS + 1) * 200.0
    at_limit = rng.binomial(200, 0.01, size=(2000, LOOKS)).cumsum(axis=1)
    c = sequential.rate_concentration(0.01)
    assert (sequential.log_e_rate_above(at_limit, trials, 0.01, c) >= math.log(20)).any(
        1
    ).mean() <= 0.05
    double = rng.binomial(200, 0.03, size=(500, LOOKS)).cumsum(axis=1)
    assert (sequential.log_e_rate_above(double, trials, 0.01, c) >= math.log(100)).any(
        1
    ).mean() > 0.95


def test_rate_bounds_cover_the_truth_at_every_look_at_once() -> None:
    rng = np.random.default_rng(15)
    trials = np.arange(1, LOOKS + 1) * 100.0
    events = rng.binomial(100, 0.04, size=(2000, LOOKS)).cumsum(axis=1)
    lower, upper = sequential.rate_bounds(events, trials, 0.05)
    assert ((lower <= 0.04) & (upper >= 0.04)).all(axis=1).mean() >= 0.95
    assert np.all(np.diff(upper - lower, axis=1).mean(axis=0) < 0)  # narrowing with data
    assert sequential.rate_bounds(0, 0, 0.05) == (0.0, 1.0)


def test_effect_sizes_of_a_known_shift() -> None:
    exact = 1e9 * masses(0.25)
    fx = sequential.effects(exact, DECILES, reference_is_counts=False)
    assert float(fx[Effect.PSI]) == pytest.approx(0.0598, abs=2e-4)
    assert float(fx[Effect.KL]) == pytest.approx(0.0298, abs=2e-4)
    assert float(fx[Effect.JS]) == pytest.approx(0.00743, abs=1e-4)
    assert float(fx[Effect.KS]) == pytest.approx(0.0987, abs=2e-4)
    assert float(fx[Effect.WASSERSTEIN]) == pytest.approx(0.069, abs=2e-4)


def test_bounds_implied_by_the_psi_hold_for_any_pair_of_distributions() -> None:
    rng = np.random.default_rng(16)
    p = rng.dirichlet(np.ones(8), size=2000) * 1e9
    q = rng.dirichlet(np.ones(8), size=2000)
    fx = sequential.effects(p, q, reference_is_counts=False)
    for effect in Effect:
        assert np.all(fx[effect] <= sequential.bound_from_psi(effect, fx[Effect.PSI]) + 1e-9)


def test_the_psi_upper_bound_holds_the_truth_and_shrinks() -> None:
    rng = np.random.default_rng(17)
    truth = masses(0.1)
    true_psi = float(
        sequential.effects(1e9 * truth, DECILES, reference_is_counts=False)[Effect.PSI]
    )
    counts = cumulative(rng, truth, per_look=200, runs=500)
    bound = sequential.psi_upper_bound(counts, DECILES, 0.05, reference_is_counts=False)
    assert (bound >= true_psi).all(axis=1).mean() >= 0.95
    assert bound[:, -1].mean() < bound[:, 0].mean() / 5
    two = sequential.psi_upper_bound(
        counts[:, -1], counts[::-1, -1], 0.05, reference_is_counts=True
    )
    assert np.all(two > 0)


def test_rare_categories_are_pooled_ordered_bins_never() -> None:
    counts = np.array([50.0, 40.0, 1.0, 0.0, 2.0])
    ratios = np.array([0.5, 0.49, 0.004, 0.003, 0.003])
    pooled = sequential.pool_rare(counts, ratios, ordered=False, reference_is_counts=False)
    assert pooled.counts.tolist() == [50.0, 40.0, 3.0]
    assert pooled.reference.tolist() == pytest.approx([0.5, 0.49, 0.01])
    kept = sequential.pool_rare(counts, ratios, ordered=True, reference_is_counts=False)
    assert kept.counts.tolist() == counts.tolist()


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        sequential.log_e_multinomial([1.0, -1.0], [0.5, 0.5], 10)
    with pytest.raises(ValueError, match="positive"):
        sequential.log_e_multinomial([1.0, 1.0], [1.0, 0.0], 10)


# --- the error-rate test, looked at after every request --------------------------------------

RATE_MULTIPLES = (("5x", 5.0), ("10x", 10.0), ("50%", None))


@pytest.mark.parametrize("p0", [0.005, 0.02, 0.05, 0.3])
def test_the_rate_test_keeps_its_level_looked_at_after_every_request(p0: float) -> None:
    alpha = 0.05
    boundary = simulate.rate_boundary(p0, math.log(1 / alpha), 1500)
    # Exact (no sampling error): the chance a stream at the limit, or under it, ever rejects.
    at_limit = simulate.crossing_probability(boundary, p0)
    assert at_limit <= alpha
    assert simulate.crossing_probability(boundary, p0 / 2) <= at_limit
    # And 4,000 seeded healthy streams at the limit, each looked at after every request.
    ever = (simulate.first_crossings(np.random.default_rng(21), boundary, p0, 4000) > 0).mean()
    print(f"p0 {p0}: P(ever e >= {1 / alpha:g}) exact {at_limit:.4f}, simulated {ever:.4f}")
    assert ever <= alpha


@pytest.mark.parametrize("p0", [0.01, 0.02])
def test_the_ladder_finds_large_rates_with_fewer_requests_than_one_prior(p0: float) -> None:
    threshold = math.log(1700)  # a 1% budget over 17 tests, as the churn example's rounds
    ladder = simulate.rate_boundary(p0, threshold, 3000)
    single = simulate.rate_boundary(p0, threshold, 3000, simulate.single_rate_prior(p0))

    def median_requests(boundary: np.ndarray, rate: float) -> float:
        found = simulate.first_crossings(np.random.default_rng(22), boundary, rate, 400)
        assert (found > 0).mean() > 0.95
        return float(np.median(found[found > 0]))

    for label, multiple in RATE_MULTIPLES:
        rate = 0.5 if multiple is None else multiple * p0
        new, old = median_requests(ladder, rate), median_requests(single, rate)
        print(f"p0 {p0}, rate {label}: {new:.0f} requests (one prior: {old:.0f})")
        assert new < old
    # The price: a doubling (events at exactly twice the limit) costs at most ~10% more.
    events = np.floor(2 * p0 * np.arange(1, 3001))
    new, old = ((events >= b).argmax() + 1 for b in (ladder, single))
    print(f"p0 {p0}, rate 2x exactly: {new} requests (one prior: {old})")
    assert old < new <= 1.1 * old


def test_the_rate_e_value_grows_with_events_and_shrinks_with_trials() -> None:
    k, n = np.meshgrid(np.arange(0, 60), np.arange(60, 400, 20))
    log_e = sequential.log_e_rate_above(k, n, 0.02, sequential.rate_concentration(0.02))
    assert np.all(np.diff(log_e, axis=1) > 0)  # more events, more evidence
    assert np.all(np.diff(log_e, axis=0) < 0)  # the same events among more trials, less
    assert sequential.log_e_rate_above(0, 0, 0.02, 50.0) == pytest.approx(0.0)  # e = 1


def test_the_rate_prior_is_a_mixture_over_rates_above_the_limit() -> None:
    prior = sequential.rate_prior(0.02, sequential.rate_concentration(0.02))
    assert sum(c.weight for c in prior) == pytest.approx(1.0)
    centres = [c.a / (c.a + c.b) for c in prior]
    assert centres[0] == pytest.approx(0.02)
    assert max(centres) <= sequential.RATE_LADDER_TOP
    (alone,) = sequential.rate_prior(0.9, 2.0)  # no room for a ladder above 0.8
    assert (alone.weight, alone.a, alone.b) == pytest.approx((1.0, 1.8, 0.2))
    # The closed form is the prior's mean likelihood ratio, by quadrature.
    k, n = 7, 60

    def density(p: float) -> float:
        ratio = (p / 0.02) ** k * ((1 - p) / 0.98) ** (n - k)
        return (
            sum(
                c.weight * stats.beta.pdf(p, c.a, c.b) / stats.beta.sf(0.02, c.a, c.b)
                for c in prior
            )
            * ratio
        )

    expected = integrate.quad(density, 0.02, 1, points=centres, limit=200)[0]
    log_e = float(sequential.log_e_rate_above(k, n, 0.02, sequential.rate_concentration(0.02)))
    assert log_e == pytest.approx(math.log(expected), abs=1e-6)
    with pytest.raises(ValueError, match="p0"):
        sequential.rate_prior(1.0, 2.0)
