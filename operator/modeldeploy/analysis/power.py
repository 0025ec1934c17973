"""How often the feature-drift rule alarms, by simulation: false alarms without drift, and
power against a mean shift. Used by the tests and `bench/bench_drift_power.py` to choose
defaults with numbers rather than folklore.

The model: a numeric feature ~ N(0, 1) in training; its profile is the decile edges and
bin ratios of a training sample (as the profile builder makes them). A window of n serving
rows drawn from N(shift, 1) and binned at those edges is multinomial with the bin masses
under the shifted normal, so windows are drawn as multinomials: exact, and vectorised.
"""

from dataclasses import dataclass

import numpy as np
from scipy import stats

from modeldeploy.analysis.statistics import (
    BoolArray,
    FloatArray,
    chi_square_vs_ratios,
    exceeds,
    kolmogorov_p_value,
    ks_statistic_vs_ratios,
    psi_vs_ratios,
)


@dataclass(frozen=True)
class Profile:
    edges: FloatArray  # inner bin edges (k - 1)
    ratios: FloatArray  # share of training rows per bin (k)


def normal_profile(rng: np.random.Generator, bins: int = 10, rows: int = 100_000) -> Profile:
    """Quantile bins of a training sample of N(0, 1)."""
    training = rng.standard_normal(rows)
    edges = np.quantile(training, np.arange(1, bins) / bins)
    counts = np.bincount(np.searchsorted(edges, training), minlength=bins)
    return Profile(edges, counts / rows)


def simulate_counts(
    rng: np.random.Generator,
    profile: Profile,
    n: int,
    shape: tuple[int, ...],
    shift_sd: float = 0.0,
) -> FloatArray:
    """Bin counts of windows of n rows from N(shift_sd, 1); result shape ``(*shape, k)``."""
    cdf = stats.norm.cdf(profile.edges - shift_sd)
    masses = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    return rng.multinomial(n, masses, size=shape).astype(np.float64)


def drift_alarms(
    counts: FloatArray,
    ratios: FloatArray,
    *,
    psi_threshold: float | None,
    ks_threshold: float | None = None,
    alpha: float | None = None,
) -> BoolArray:
    """The per-feature rule of the feature-psi / feature-ks checks, over many windows."""
    alarm = np.zeros(counts.shape[:-1], dtype=np.bool_)
    if psi_threshold is not None:
        psi = psi_vs_ratios(counts, ratios)
        alarm |= exceeds(psi, psi_threshold, chi_square_vs_ratios(counts, ratios).p_value, alpha)
    if ks_threshold is not None:
        ks, n = ks_statistic_vs_ratios(counts, ratios)
        candidates = ks > ks_threshold  # p-values are slow; only these can alarm
        p_value = np.ones_like(ks)
        if alpha is not None:
            p_value[candidates] = kolmogorov_p_value(ks[candidates], n[candidates])
        alarm |= exceeds(ks, ks_threshold, p_value, alpha)
    return alarm


@dataclass(frozen=True)
class Rates:
    false_alarm: float  # share of no-drift windows with any feature alarming
    power: float  # share of windows with one shifted feature that alarm


def window_rates(
    rng: np.random.Generator,
    profile: Profile,
    *,
    n: int,
    windows: int = 1000,
    features: int = 10,
    shift_sd: float = 0.5,
    psi_threshold: float | None,
    ks_threshold: float | None = None,
    alpha: float | None = None,
) -> Rates:
    """Windows of `features` independent features: all undrifted (false alarms), or the
    first one shifted by `shift_sd` standard deviations (power)."""

    def alarms(counts: FloatArray) -> BoolArray:
        return drift_alarms(
            counts,
            profile.ratios,
            psi_threshold=psi_threshold,
            ks_threshold=ks_threshold,
            alpha=alpha,
        )

    null_alarms = alarms(simulate_counts(rng, profile, n, (windows, features)))
    shifted_alarms = alarms(simulate_counts(rng, profile, n, (windows,), shift_sd))
    # Power windows reuse the other features' null draws: alarms there count too, honestly.
    caught = shifted_alarms | null_alarms[:, 1:].any(axis=1)
    return Rates(float(null_alarms.any(axis=1).mean()), float(caught.mean()))
