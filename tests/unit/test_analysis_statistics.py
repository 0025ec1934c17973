"""The statistics agree with scipy / numpy references and with PromQL semantics."""

import math

import numpy as np
import pytest
from scipy import stats

from modeldeploy.analysis import statistics as st

pytestmark = pytest.mark.unit

RNG_SEED = 20261121


def expand(counts: np.ndarray) -> np.ndarray:
    """Binned counts back to raw observations: bin i observed counts[i] times."""
    return np.repeat(np.arange(len(counts), dtype=np.float64), counts.astype(int))


# --- PSI ----------------------------------------------------------------------------------


def test_psi_vs_ratios_matches_the_formula_with_documented_smoothing() -> None:
    counts = np.array([30.0, 50.0, 0.0, 20.0])
    ratios = np.array([0.25, 0.25, 0.25, 0.25])
    p = (counts + 0.5) / (counts.sum() + 4 * 0.5)
    q = (ratios + 1e-4) / (1 + 4 * 1e-4)
    assert float(st.psi_vs_ratios(counts, ratios)) == pytest.approx(np.sum((p - q) * np.log(p / q)))


def test_psi_of_identical_distributions_is_zero_and_two_sample_psi_is_symmetric() -> None:
    assert float(st.psi_vs_ratios([100, 100], [0.5, 0.5])) == pytest.approx(0.0)
    a, b = np.array([10.0, 20, 70]), np.array([30.0, 30, 40])
    assert float(st.psi_two_sample(a, b)) == pytest.approx(float(st.psi_two_sample(b, a)))
    p, q = (a + 0.5) / (a.sum() + 1.5), (b + 0.5) / (b.sum() + 1.5)
    assert float(st.psi_two_sample(a, b)) == pytest.approx(np.sum((p - q) * np.log(p / q)))


def test_bins_empty_on_both_sides_do_not_add_psi() -> None:
    few = st.psi_vs_ratios([40, 60], [0.4, 0.6])
    many = st.psi_vs_ratios([40, 60, *[0] * 200], [0.4, 0.6, *[0.0] * 200])
    assert float(many) == pytest.approx(float(few))


def test_unseen_category_is_a_strong_signal() -> None:
    # 10% of traffic in a category the training profile never saw.
    assert float(st.psi_vs_ratios([450, 450, 100], [0.5, 0.5, 0.0])) > 0.5


def test_functions_broadcast_over_leading_axes() -> None:
    rng = np.random.default_rng(RNG_SEED)
    counts = rng.multinomial(300, [0.2, 0.3, 0.5], size=(4, 5)).astype(float)
    ratios = np.array([0.25, 0.25, 0.5])
    batched = st.psi_vs_ratios(counts, ratios)
    assert batched.shape == (4, 5)
    assert batched[2, 3] == pytest.approx(float(st.psi_vs_ratios(counts[2, 3], ratios)))
    ks = st.ks_vs_ratios(counts, ratios)
    assert ks.p_value[1, 1] == pytest.approx(float(st.ks_vs_ratios(counts[1, 1], ratios).p_value))


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        st.psi_vs_ratios([1, -1], [0.5, 0.5])
    with pytest.raises(ValueError, match="scalar"):
        st.psi_vs_ratios(3, 0.5)


# --- KS -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([120, 80, 40, 10, 0], [100, 100, 50, 30, 20]),
        ([5, 0, 0, 7, 300], [40, 40, 40, 40, 40]),
        ([1000, 900, 800, 700, 600, 500], [600, 700, 800, 900, 1000, 1100]),
    ],
)
def test_ks_two_sample_matches_scipy_on_the_same_binned_data(a: list[int], b: list[int]) -> None:
    counts_a, counts_b = np.array(a, dtype=float), np.array(b, dtype=float)
    reference = stats.ks_2samp(expand(counts_a), expand(counts_b), method="asymp")
    ours = st.ks_two_sample(counts_a, counts_b)
    assert float(ours.statistic) == pytest.approx(reference.statistic, abs=1e-12)
    assert float(ours.p_value) == pytest.approx(reference.pvalue, rel=1e-9)


def test_ks_vs_ratios_is_the_largest_cdf_gap_and_agrees_with_ks_2samp_on_a_huge_baseline() -> None:
    counts = np.array([30.0, 25, 20, 15, 10])
    ratios = np.array([0.2, 0.2, 0.2, 0.2, 0.2])
    expected = np.max(np.abs(np.cumsum(counts) / counts.sum() - np.cumsum(ratios)))
    ours = st.ks_vs_ratios(counts, ratios)
    assert float(ours.statistic) == pytest.approx(expected)
    baseline = expand(ratios * 1_000_000)  # the profile as a (very) large sample
    reference = stats.ks_2samp(expand(counts), baseline, method="asymp")
    assert float(ours.statistic) == pytest.approx(reference.statistic)
    assert float(ours.p_value) == pytest.approx(stats.kstwo.sf(expected, counts.sum()))
    assert float(ours.p_value) == pytest.approx(reference.pvalue, rel=0.05)


def test_ks_without_observations_has_no_p_value() -> None:
    assert math.isnan(float(st.ks_two_sample([0, 0], [3, 4]).p_value))


# --- chi-square ---------------------------------------------------------------------------


def test_chi_square_vs_ratios_matches_scipy_chisquare() -> None:
    counts = np.array([18.0, 55, 27, 0, 0])
    ratios = np.array([0.2, 0.5, 0.3, 0.0, 0.0])  # the last bins are empty on both sides
    ours = st.chi_square_vs_ratios(counts, ratios)
    reference = stats.chisquare(counts[:3], counts.sum() * ratios[:3])
    assert float(ours.statistic) == pytest.approx(reference.statistic)
    assert float(ours.p_value) == pytest.approx(reference.pvalue)


def test_chi_square_renormalises_ratios_and_flags_counts_where_the_baseline_has_none() -> None:
    ours = st.chi_square_vs_ratios([20, 20], [0.4, 0.4])  # ratios need not sum to 1
    assert float(ours.statistic) == pytest.approx(0.0)
    assert float(ours.p_value) == pytest.approx(1.0)
    unseen = st.chi_square_vs_ratios([20, 20, 5], [0.5, 0.5, 0.0])
    assert math.isinf(float(unseen.statistic))
    assert float(unseen.p_value) == 0.0


def test_chi_square_two_sample_matches_scipy_contingency() -> None:
    a, b = np.array([30.0, 50, 20, 0]), np.array([300.0, 400, 330, 0])
    reference = stats.chi2_contingency(np.stack([a[:3], b[:3]]), correction=False)
    ours = st.chi_square_two_sample(a, b)
    assert float(ours.statistic) == pytest.approx(reference.statistic)
    assert float(ours.p_value) == pytest.approx(reference.pvalue)
    assert math.isnan(float(st.chi_square_two_sample([0, 0], [1, 2]).p_value))
    assert float(st.chi_square_two_sample([5, 0], [7, 0]).p_value) == 1.0


# --- rates -----------------------------------------------------------------------


def test_ratio_of_nothing_is_nan() -> None:
    assert st.ratio(1, 4) == 0.25
    assert math.isnan(st.ratio(0, 0))


# --- histogram_quantile -------------------------------------------------------------------

INF = math.inf
# le -> cumulative count: 10 in (0, 0.1], 30 in (0.1, 0.2], 50 in (0.2, 0.5], 10 above.
LATENCY = [(0.1, 10.0), (0.2, 40.0), (0.5, 90.0), (INF, 100.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.05, 0.05),  # rank 5 in the first bucket, which starts at 0
        (0.25, 0.15),  # rank 25: 0.1 + 0.1 * (15 / 30)
        (0.5, 0.26),  # rank 50: 0.2 + 0.3 * (10 / 50)
        (0.9, 0.5),  # rank 90 is the top of (0.2, 0.5]
        (0.95, 0.5),  # rank 95 lies in +Inf: the largest finite bound
        (1.0, 0.5),
        (0.0, 0.0),
        (-0.1, -INF),
        (1.1, INF),
    ],
)
def test_histogram_quantile_follows_promql(q: float, expected: float) -> None:
    assert st.histogram_quantile(q, LATENCY) == pytest.approx(expected)


def test_histogram_quantile_edge_cases_follow_promql() -> None:
    assert math.isnan(st.histogram_quantile(0.5, [(0.1, 1.0), (0.2, 2.0)]))  # no +Inf bucket
    assert math.isnan(st.histogram_quantile(0.5, [(INF, 5.0)]))  # fewer than two buckets
    assert math.isnan(st.histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]))  # no observations
    assert math.isnan(st.histogram_quantile(math.nan, LATENCY))
    assert st.histogram_quantile(0.5, [(-1.0, 10.0), (INF, 10.0)]) == -1.0  # bound <= 0
    # Non-monotonic counts (scrape race) are lifted; duplicate bounds are merged.
    assert st.histogram_quantile(0.25, [(0.1, 10.0), (0.2, 8.0), (INF, 20.0)]) == pytest.approx(
        0.05
    )
    merged = st.cumulative_buckets({"0.1": 4.0, "0.10": 6.0, "0.2": 40.0, "+Inf": 100.0})
    assert st.histogram_quantile(0.25, merged) == pytest.approx(0.15)


def test_bucket_counts_are_per_bucket_in_bound_order() -> None:
    buckets = st.cumulative_buckets({"+Inf": 100.0, "0.2": 40.0, "0.1": 10.0, "0.5": 90.0})
    assert st.bucket_counts(buckets).tolist() == [10.0, 30.0, 50.0, 10.0]
