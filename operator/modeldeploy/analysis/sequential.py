"""Anytime-valid tests over cumulative counts: e-values, confidence sequences, effect sizes.

The analysis looks at a canary every round, on counts that only grow (everything since the
revision's first round). A fixed-sample test run at every look rejects by chance sooner or
later; these do not. Each e-value here is a Bayes factor of a conjugate mixture against the
null, i.e. a nonnegative (super)martingale under the null, so by Ville's inequality
``P(ever e >= 1/alpha) <= alpha`` however often and whenever it is looked at (Robbins'
mixture method; the approach of Netflix's sequential canary tests, Lindon, Sanden and
Shirikian, KDD 2022). Confidence sequences are the same mixtures inverted: sets that hold
the truth at every look at once with probability 1 - alpha.

What each test is:

- `log_e_multinomial`: bin counts against known ratios (a feature against its training
  profile). Dirichlet-multinomial mixture centred on the ratios; its concentration sets
  the effect it is most sensitive to (`concentration_for`: about the tolerance).
- `log_e_two_sample`: bin counts of the canary against the stable's, on the same period.
  Given how many observations fell in each bin, under "same distribution" each one is the
  canary's with the same probability (its share of all observations), whatever the bin: a
  beta-binomial mixture per bin against the binomial at the pooled share. The share is
  estimated from the same counts (the null's maximum likelihood, which makes the e-value
  smaller; the mixture is centred there too, which makes it approximate): the unit tests
  and bench/bench_detection.py check its false-alarm rate by simulation. It needs the input
  mix to be steady over the rollout, not the traffic split, which the steps change.
- `log_e_rate_above`: events among trials (5xx among requests, requests slower than a
  limit, missing values) against "the rate is at most p0": a mixture of likelihood ratios
  over rates above p0, a supermartingale under every rate up to p0 (each ratio against a
  rate p1 > p0 is). The mixing prior (`rate_prior`) is half the beta prior the test had
  alone before (about p0 itself: most sensitive to a doubling), half a ladder of beta
  priors centred on odds 2, 4, 8, ... times p0's, up to a rate of 0.8, with equal weights.
  A mixture pays, against the test that knew the true rate, about minus the log of the
  prior's mass near that rate: the single prior had almost none at 10x the limit or at
  50% (Beta(1, 49) for a 2% limit: 1.5% of its mass above 10%), and needed 1.4x the
  requests of the ladder at 10x and 2-2.6x at 50%; the ladder costs a doubling about log 2
  of evidence (5% more requests; `bench/bench_detection.py --cells rates`). A betting
  e-process (Waudby-Smith and Ramdas) bets request by request,
  in order; Prometheus gives counts at each round, of which a mixture is a function (any
  round, any number of requests between rounds), so the mixture is the form that fits.
- `rate_bounds`: a confidence sequence for a rate (beta-binomial mixture, Jeffreys prior).
- `psi_upper_bound`: an upper confidence bound of the PSI to a reference. A Dirichlet
  mixture's confidence set is the KL ball ``n KL(p_hat || p) < log(1/alpha) + regret``
  (the regret is smallest when the mixture's prior sits near the truth: on the training
  ratios, for a feature);
  near p_hat KL is half the chi-square distance and PSI is the chi-square distance to
  second order, so PSI(p, q) <= (sqrt(PSI(p_hat, q)) + sqrt(2 r))^2 over the ball. An
  approximation (second order), which is what "pass" needs: evidence that the effect is
  below the tolerance, without waiting for a fixed sample size.

Effect sizes (`effects`) on smoothed distributions: PSI (Jeffreys divergence), KL(p || q),
Jensen-Shannon, and over ordered bins KS (largest CDF gap) and a binned Wasserstein
distance (mean CDF gap over the bin edges: for decile bins, a shift in training
quantiles). Upper bounds of each follow from the PSI's (`bound_from_psi`): KL <= PSI,
JS <= PSI / 4, KS and Wasserstein <= total variation <= sqrt(PSI / 2) (Pinsker).

Every function works on the last axis and broadcasts over leading ones (one window, or a
thousand simulated rollouts); counts may be fractional (Prometheus' increase()).
"""

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy import special

from modeldeploy.analysis.config import Effect
from modeldeploy.analysis.statistics import FloatArray, psi_two_sample, psi_vs_ratios

POOL_SHARE = 0.01
"""Bins with less than this share of the reference are pooled into one: a category seen in
0.1% of training rows carries no usable signal alone, and 40 such bins add noise (and
samples to wait for before a pass). Mass moving into or out of the rare ones still shows
in the pooled bin."""
RATIO_FLOOR = 1e-4
"""The smallest share a reference bin (or pooled rare bin) is given: a category the profile
never saw that now holds 10% of traffic is strong evidence, not a division by zero."""


def _arrays(*values: npt.ArrayLike) -> list[FloatArray]:
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    for array in arrays:
        if np.any(array < 0) or not np.all(np.isfinite(array)):
            raise ValueError("counts and ratios must be finite and non-negative")
    return [np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(*arrays)]


def concentration_for(tolerance: float, bins: int) -> float:
    """The Dirichlet concentration whose prior spread around the reference is about the
    tolerance: E[chi-square(p, q)] = (k - 1) / (A + 1) under the prior."""
    return max(1.0, (max(bins, 2) - 1) / max(tolerance, 1e-6) - 1)


def log_e_multinomial(
    counts: npt.ArrayLike, ratios: npt.ArrayLike, concentration: float
) -> FloatArray:
    """log e-value of counts against multinomial(ratios); ratios must be positive."""
    x, q = _arrays(counts, ratios)
    q = q / q.sum(axis=-1, keepdims=True)
    if np.any(q <= 0):
        raise ValueError("reference ratios must be positive (pool or floor them first)")
    a = concentration * q
    n = x.sum(axis=-1)
    mixture = (
        special.gammaln(concentration)
        - special.gammaln(concentration + n)
        + (special.gammaln(a + x) - special.gammaln(a)).sum(axis=-1)
    )
    return np.asarray(mixture - (x * np.log(q)).sum(axis=-1), dtype=np.float64)


def log_e_two_sample(
    counts_a: npt.ArrayLike, counts_b: npt.ArrayLike, concentration: float
) -> FloatArray:
    """log e-value against "a and b share one distribution" (see the module doc)."""
    x, y = _arrays(counts_a, counts_b)
    n_a, n = x.sum(axis=-1, keepdims=True), (x + y).sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.clip(np.where(n > 0, n_a / n, 0.5), 1e-9, 1 - 1e-9)
    a, b = concentration * share, concentration * (1 - share)
    mixture = special.betaln(a + x, b + y) - special.betaln(a, b)
    null = special.xlogy(x, share) + special.xlogy(y, 1 - share)
    return np.asarray((mixture - null).sum(axis=-1), dtype=np.float64)


RATE_NEAR_WEIGHT = 0.5
"""Share of the rate test's prior near the limit (the single beta prior it had before)."""
RATE_LADDER_STEP = 2.0
"""Odds ratio between neighbouring rungs of the prior's ladder of larger rates."""
RATE_LADDER_TOP = 0.8
"""No rung is centred above this rate: a rate that high is found in a handful of events by
the highest rung already."""
RATE_RUNG_SHAPE = 4.0
"""A rung centred on m is Beta(4, 4 (1 - m) / m): spread about +-50% around m (coefficient
of variation 1 / sqrt(4)), so that neighbouring rungs overlap."""


@dataclass(frozen=True)
class BetaComponent:
    """One beta prior of a mixture, with its weight (the weights of a prior add up to 1)."""

    weight: float
    a: float
    b: float


def rate_prior(p0: float, concentration: float) -> tuple[BetaComponent, ...]:
    """The rate test's mixing prior over rates above p0 (module doc): the beta prior centred
    on p0 with `concentration`, then the ladder's rungs, each truncated to (p0, 1)."""
    if not 0 < p0 < 1:
        raise ValueError("p0 must be between 0 and 1")
    near = BetaComponent(1.0, concentration * p0, concentration * (1 - p0))
    odds = p0 / (1 - p0)
    centres: list[float] = []
    while (odds := odds * RATE_LADDER_STEP) / (1 + odds) <= RATE_LADDER_TOP:
        centres.append(odds / (1 + odds))
    if not centres:
        return (near,)
    rung = (1 - RATE_NEAR_WEIGHT) / len(centres)
    return (
        replace(near, weight=RATE_NEAR_WEIGHT),
        *(BetaComponent(rung, RATE_RUNG_SHAPE, RATE_RUNG_SHAPE * (1 - m) / m) for m in centres),
    )


def log_e_rate_above(
    events: npt.ArrayLike,
    trials: npt.ArrayLike,
    p0: float,
    concentration: float,
    prior: tuple[BetaComponent, ...] | None = None,
) -> FloatArray:
    """log e-value against "the rate is at most p0" (0 < p0 < 1), from events among trials;
    `prior` (default: `rate_prior(p0, concentration)`) is the mixing prior."""
    k, n = _arrays(events, trials)
    k = np.minimum(k, n)
    p = min(max(p0, 1e-9), 1 - 1e-9)
    components = prior if prior is not None else rate_prior(p, concentration)
    # One leading axis over the components: each one's mean likelihood ratio against p
    # under its beta truncated to (p, 1), all in one call.
    shape = (len(components),) + (1,) * k.ndim
    a, b, weight = (
        np.asarray(values, dtype=np.float64).reshape(shape)
        for values in zip(*((c.a, c.b, c.weight) for c in components), strict=True)
    )
    with np.errstate(divide="ignore"):
        mixture = special.betaln(a + k, b + n - k) + np.log(special.betaincc(a + k, b + n - k, p))
        prior_mass = special.betaln(a, b) + np.log(special.betaincc(a, b, p))
    null = special.xlogy(k, p) + special.xlogy(n - k, 1 - p)
    # log sum(weight * exp(terms)) by hand: scipy's logsumexp costs ~10x as much per call.
    terms = mixture - prior_mass
    top = np.max(terms, axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        log_mean = top + np.log(np.sum(weight * np.exp(terms - top), axis=0))
    return np.asarray(log_mean - null, dtype=np.float64)


def two_sample_concentration(tolerance: float) -> float:
    """Per-bin prior spread of the canary's share: a bin whose probability changes by
    sqrt(tolerance) relative, at a 10% canary share."""
    return max(2.0, 1 / (0.09 * max(tolerance, 1e-6)))


def rate_concentration(p0: float) -> float:
    """Prior spread about p0 itself (a doubling of a 1% error rate is what matters)."""
    return max(2.0, 1 / max(p0, 1e-4))


def _log_rate_mixture(k: FloatArray, n: FloatArray) -> FloatArray:
    """log marginal likelihood of k events in n trials under a Jeffreys beta prior."""
    return np.asarray(special.betaln(0.5 + k, 0.5 + n - k) - special.betaln(0.5, 0.5))


def rate_bounds(
    events: npt.ArrayLike, trials: npt.ArrayLike, alpha: float
) -> tuple[FloatArray, FloatArray]:
    """(lower, upper) confidence sequence of a rate at level 1 - alpha (all looks at once);
    (0, 1) without trials."""
    k, n = _arrays(events, trials)
    k = np.minimum(k, n)
    # Inside the set: the mixture's likelihood ratio against p stays below 1 / alpha.
    floor = _log_rate_mixture(k, n) - math.log(1 / alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = np.where(n > 0, k / n, 0.5)

    # Both ends at once: the bisection runs from the estimate (inside the set) towards 0 and
    # towards 1, stacked on a leading axis; 30 halvings leave less than 1e-9 of [0, 1].
    k2, n2, floor2 = (np.stack([v, v]) for v in (k, n, floor))

    def inside(p: FloatArray) -> npt.NDArray[np.bool_]:
        return np.asarray(special.xlogy(k2, p) + special.xlogy(n2 - k2, 1 - p) > floor2)

    outer = np.stack([np.zeros_like(estimate), np.ones_like(estimate)])
    lo, hi = np.stack([estimate, estimate]), outer.copy()
    for _ in range(30):
        mid = (lo + hi) / 2
        keep = inside(mid)
        lo, hi = np.where(keep, mid, lo), np.where(keep, hi, mid)
    lower, upper = np.where(inside(outer), outer, (lo + hi) / 2)
    return np.where(n > 0, lower, 0.0), np.where(n > 0, upper, 1.0)


# --- effect sizes -----------------------------------------------------------------------------


def _distribution(counts: FloatArray, live: npt.NDArray[np.bool_], pseudo: float) -> FloatArray:
    total = np.where(live, counts + pseudo, 0.0).sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(live, (counts + pseudo) / total, 0.0)


def _kl(p: FloatArray, q: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(p > 0, special.xlogy(p, p / np.where(q > 0, q, 1)), 0).sum(-1))


def effects(
    counts: npt.ArrayLike, reference: npt.ArrayLike, *, reference_is_counts: bool
) -> dict[Effect, FloatArray]:
    """Every effect size of observed counts against a reference: the training profile's
    ratios, or (reference_is_counts) the stable's counts. Bins empty on both sides are left
    out; counts get a Jeffreys pseudo-count, ratios a floor (as `statistics` does)."""
    x, r = _arrays(counts, reference)
    live = (x > 0) | (r > 0)
    p = _distribution(x, live, 0.5)
    q = _distribution(r, live, 0.5 if reference_is_counts else RATIO_FLOOR)
    m = (p + q) / 2
    gaps = np.abs(np.cumsum(p - q, axis=-1))[..., :-1]
    bins = max(x.shape[-1], 1)
    psi = psi_two_sample(x, r) if reference_is_counts else psi_vs_ratios(x, r)
    return {
        Effect.PSI: np.asarray(psi, dtype=np.float64),
        Effect.KL: _kl(p, q),
        Effect.JS: (_kl(p, m) + _kl(q, m)) / 2,
        Effect.KS: np.asarray(gaps.max(axis=-1, initial=0.0)),
        Effect.WASSERSTEIN: np.asarray(gaps.sum(axis=-1) / bins),
    }


def bound_from_psi(effect: Effect, psi_bound: npt.ArrayLike) -> FloatArray:
    """An upper bound of `effect` implied by an upper bound of the PSI (module doc)."""
    psi = np.asarray(psi_bound, dtype=np.float64)
    match effect:
        case Effect.PSI | Effect.KL:
            return psi
        case Effect.JS:
            return np.asarray(psi / 4)
        case Effect.KS | Effect.WASSERSTEIN:
            return np.asarray(np.minimum(1.0, np.sqrt(psi / 2)))


def _log_dirichlet_mixture(x: FloatArray, prior: FloatArray) -> FloatArray:
    """log marginal likelihood of counts under a Dirichlet(prior) mixture of multinomials."""
    total = prior.sum(axis=-1)
    return np.asarray(
        special.gammaln(total)
        - special.gammaln(total + x.sum(axis=-1))
        + (special.gammaln(prior + x) - special.gammaln(prior)).sum(axis=-1)
    )


def ball_radius(counts: npt.ArrayLike, alpha: float, prior: npt.ArrayLike = 0.5) -> FloatArray:
    """sqrt(2 r): the chi-square radius of the confidence set of the distribution behind the
    counts, at level 1 - alpha over all looks (infinite without counts). The mixture's prior
    must not depend on the data: the reference's ratios times a concentration when there is
    one (the set is then tightest where the truth is expected), else Krichevsky-Trofimov's
    1/2 per bin."""
    x, a = _arrays(counts, prior)
    n = x.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fit = (special.xlogy(x, x / n[..., None])).sum(axis=-1)
        regret = np.maximum(0.0, fit - _log_dirichlet_mixture(x, a))
        radius = (math.log(1 / alpha) + regret) / n
    return np.asarray(np.where(n > 0, np.sqrt(2 * radius), np.inf))


def psi_upper_bound(
    counts: npt.ArrayLike,
    reference: npt.ArrayLike,
    alpha: float,
    *,
    reference_is_counts: bool,
    concentration: float = 0.0,
) -> FloatArray:
    """Upper confidence bound of the PSI between the distribution behind `counts` and the
    reference: ratios (the set's prior centred on them with `concentration`, when given),
    or the distribution behind the reference counts (then both sets' radii add up, each at
    alpha / 2)."""
    x, r = _arrays(counts, reference)
    psi = psi_two_sample(x, r) if reference_is_counts else psi_vs_ratios(x, r)
    if reference_is_counts:
        radius = ball_radius(x, alpha / 2) + ball_radius(r, alpha / 2)
    elif concentration > 0:
        ratios = np.maximum(r / r.sum(axis=-1, keepdims=True), RATIO_FLOOR)
        radius = ball_radius(x, alpha, concentration * ratios / ratios.sum(-1, keepdims=True))
    else:
        radius = ball_radius(x, alpha)
    return np.asarray((np.sqrt(np.maximum(psi, 0.0)) + radius) ** 2)


# --- sparse bins --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pooled:
    """Bins as tested: the reference's rare bins merged into one (last), order kept."""

    counts: FloatArray
    reference: FloatArray
    ordered: bool


def pool_rare(
    counts: npt.ArrayLike,
    reference: npt.ArrayLike,
    *,
    ordered: bool,
    reference_is_counts: bool,
    share: float = POOL_SHARE,
) -> Pooled:
    """Merge the bins holding less than `share` of the reference (its ratios, or the pooled
    counts of both sides for a two-sample test: a function of the bin totals only, which the
    two-sample test conditions on). Ordered bins are never pooled (their order means
    something); categories are."""
    x, r = _arrays(counts, reference)
    if ordered or x.ndim != 1:
        return Pooled(x, r, ordered)
    weight = r + x if reference_is_counts else r
    total = weight.sum()
    rare = weight < share * total if total > 0 else np.zeros_like(weight, dtype=bool)
    if rare.sum() < 2:
        return Pooled(x, r, ordered)
    keep = ~rare
    return Pooled(
        np.append(x[keep], x[rare].sum()), np.append(r[keep], r[rare].sum()), ordered=False
    )
