"""The golden check: the image's golden requests, replayed by the revision's own pods
(serving/golden.py), must keep their expected answers.

Golden answers are deterministic (the same code and weights reproduce them to ~1e-12), so
this is a count, not a statistical test, and it takes no share of the false-positive budget:
more answers that did not match (`mismatch` or `error`) than `max_mismatches` fail; at least
one answer, all matching within that, pass. Counts are the revision's since its first round
(a canary: a failure is final, like a sequential test's), or over the window for the stable's
monitor. Before the first replay, or without the series (a runtime that does not replay),
the check waits without holding up a round (`blocking=False`): a rollout never waits for
it, and a mismatch still fails it whenever it shows.
"""

from dataclasses import replace

from modeldeploy import contract
from modeldeploy.analysis.data import QueryResult
from modeldeploy.analysis.verdicts import CheckResult, Verdict, no_data_check

GOLDEN = "golden"


def golden_check(max_mismatches: int, result: QueryResult) -> CheckResult:
    """The golden check of one round, from the replays' counts by result."""
    if not result.ok:
        return replace(no_data_check(GOLDEN, max_mismatches, result.describe()), blocking=False)
    counts = {labels[0]: max(0.0, value) for labels, value in result.values.items()}
    # Counts from increase() are fractional; one replayed answer is one answer.
    matched = round(counts.get(contract.GOLDEN_MATCH, 0.0))
    mismatched = round(counts.get(contract.GOLDEN_MISMATCH, 0.0))
    errors = round(counts.get(contract.GOLDEN_ERROR, 0.0))
    failed, total = mismatched + errors, matched + mismatched + errors
    shown = f"{failed} of {total} golden answers did not match"
    detail = f"({mismatched} mismatch, {errors} error; max {max_mismatches})"
    if failed > max_mismatches:
        verdict, why = Verdict.FAIL, f"{shown} {detail}"
    elif total == 0:
        verdict, why = Verdict.INCONCLUSIVE, "no golden replay yet"
    else:
        verdict, why = Verdict.PASS, f"{shown} {detail}"
    return CheckResult(
        GOLDEN,
        verdict,
        float(failed),
        float(max_mismatches),
        total,
        f"{GOLDEN}: {why}",
        sequential=True,
        blocking=verdict is not Verdict.INCONCLUSIVE,
    )
