"""False-alarm rate and power of the feature-drift rule, by simulation.

Windows of 10 independent N(0, 1) features binned at training deciles: a false alarm is a
window without drift where any feature alarms; power is the share of windows with a
0.5 sd mean shift in one feature that alarm. 1,000 windows per cell.

    python bench/bench_drift_power.py [--windows 1000] [--shift 0.5] [--seed 7]
"""

import argparse
import time

import numpy as np

from modeldeploy.analysis.power import Rates, normal_profile, window_rates

SIZES = (100, 300, 500, 1000)
PSI_THRESHOLDS = (0.1, 0.2, 0.25)
KS_THRESHOLDS = (0.1, 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=1000)
    parser.add_argument("--shift", type=float, default=0.5, help="mean shift in sd")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    profile = normal_profile(rng)
    # (label, PSI threshold, KS threshold, significance level)
    rules: list[tuple[str, float | None, float | None, float | None]] = [
        *((f"PSI > {t}", t, None, None) for t in PSI_THRESHOLDS),
        *((f"PSI > {t}, p < 0.01", t, None, 0.01) for t in PSI_THRESHOLDS),
        *((f"KS > {t}", None, t, None) for t in KS_THRESHOLDS),
        ("PSI > 0.25 or KS > 0.2", 0.25, 0.2, None),
    ]
    started = time.perf_counter()
    print(
        f"{args.windows} windows per cell, 10 features x 10 decile bins, "
        f"shift {args.shift} sd in one feature; cells: false alarms / power"
    )
    print(f"{'rule':<24}" + "".join(f"{'n=' + str(n):>16}" for n in SIZES))
    for label, psi, ks, alpha in rules:
        cells = []
        for n in SIZES:
            rates: Rates = window_rates(
                rng,
                profile,
                n=n,
                windows=args.windows,
                shift_sd=args.shift,
                psi_threshold=psi,
                ks_threshold=ks,
                alpha=alpha,
            )
            cells.append(f"{rates.false_alarm:6.1%} /{rates.power:6.1%}")
        print(f"{label:<24}" + "".join(f"{cell:>16}" for cell in cells))
    print(f"({time.perf_counter() - started:.2f} s)")


if __name__ == "__main__":
    main()
