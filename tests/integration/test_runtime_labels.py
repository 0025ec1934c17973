"""Ground truth on real `modeldeploy serve` processes (no cluster): labels posted for
earlier answers, scored, and read back from /metrics; the load generator posting the
held-out rows' labels; the churn example's `mislabelled` variant, Ready like any image,
whose inputs look like the healthy model's while it answers worse."""

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_runtime import (
    IDENTITY_ENV,
    INFER,
    churn,  # noqa: F401  (the session's example builds)
    healthy,  # noqa: F401
    holdout,  # noqa: F401
    profile,  # noqa: F401
    rows_body,
    scrape,
    value,
)

from modeldeploy import contract as c
from modeldeploy.devenv.endpoints import Endpoint
from modeldeploy.devenv.loadgen import LoadSpec, run_load
from modeldeploy.devenv.traffic import read_labels, read_rows
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.process import LOOPBACK, ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

LABELS = "/v2/models/churn/labels"
TARGET = "churned"


@pytest.fixture(scope="module")
def server(healthy: Path) -> Iterator[ServerProcess]:  # noqa: F811
    with ServerProcess(healthy, env=IDENTITY_ENV) as process:
        process.wait_ready()
        yield process


def _truth(model_dir: Path) -> list[str | float]:
    return read_labels(model_dir.parent / "data" / "holdout.csv", TARGET, numeric=False)


def test_labels_for_answered_rows_are_scored_into_the_metrics(
    server: ServerProcess,
    healthy: Path,  # noqa: F811
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
) -> None:
    truth = _truth(healthy)
    before = scrape(server.url)
    answered = httpx.post(server.url + INFER, json=rows_body(profile, holdout, 0, 50), timeout=10)
    assert answered.status_code == 200
    predicted = answered.json()["outputs"][0]["data"]
    body = {"labels": [{"id": "rows-0", "index": i, "label": truth[i]} for i in range(50)]}
    body["labels"].append({"id": "never-sent", "index": 0, "label": "stay"})
    receipt = httpx.post(server.url + LABELS, json=body, timeout=10)
    assert receipt.status_code == 200
    assert receipt.json() == {"matched": 50, "unmatched": {"unknown": 1}}
    again = httpx.post(server.url + LABELS, json={"labels": body["labels"][:2]}, timeout=10)
    assert again.json() == {"matched": 0, "unmatched": {"duplicate": 2}}

    after = scrape(server.url)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    correct = sum(p == t for p, t in zip(predicted, truth[:50], strict=True))
    assert added(c.LABELLED_TOTAL, outcome="correct") == correct
    assert added(c.LABELLED_TOTAL, outcome="wrong") == 50 - correct
    assert added(c.LABEL_CONFUSION_TOTAL) == 50
    churned = sum(t == "churn" for t in truth[:50])
    assert added(c.LABEL_CONFUSION_TOTAL, actual="churn") == churned
    assert added(c.LABELS_UNMATCHED_TOTAL, reason="unknown") == 1
    assert added(c.LABELS_UNMATCHED_TOTAL, reason="duplicate") == 2
    assert value(after, c.LABELLED_TOTAL, revision=IDENTITY_ENV[c.ENV_REVISION]) > 0


def test_a_request_without_an_id_is_labelled_by_the_id_it_was_given(
    server: ServerProcess,
    profile: Profile,  # noqa: F811
    holdout: dict[str, np.ndarray],  # noqa: F811
) -> None:
    body = rows_body(profile, holdout, 100, 3)
    del body["id"]
    answered = httpx.post(server.url + INFER, json=body, timeout=10).json()
    labels = [{"id": answered["id"], "index": i, "label": "stay"} for i in range(3)]
    receipt = httpx.post(server.url + LABELS, json={"labels": labels}, timeout=10)
    assert receipt.json() == {"matched": 3, "unmatched": {}}


def test_a_malformed_label_request_is_a_400_counted_apart(server: ServerProcess) -> None:
    before = scrape(server.url)
    refused = httpx.post(server.url + LABELS, json={"labels": [{"id": "x"}]}, timeout=10)
    assert refused.status_code == 400
    assert refused.json() == {"error": "labels[0] has no 'label'"}
    after = scrape(server.url)
    assert (
        value(after, c.INVALID_LABEL_REQUESTS_TOTAL, reason="bad_label")
        - value(before, c.INVALID_LABEL_REQUESTS_TOTAL, reason="bad_label")
        == 1
    )
    assert value(after, c.REQUESTS_TOTAL) == value(before, c.REQUESTS_TOTAL)


def _accuracy_under_load(
    model_dir: Path, features: Profile, revision: str
) -> tuple[float, dict[str, float]]:
    """(accuracy from /metrics, feature bin shares) of the held-out rows the load generator
    sends (200 requests of 4 rows), their labels posted back after 0.2 s."""
    holdout_csv = model_dir.parent / "data" / "holdout.csv"
    rows = read_rows(holdout_csv, features.features)
    env = IDENTITY_ENV | {c.ENV_REVISION: revision}
    with ServerProcess(model_dir, env=env) as process:
        process.wait_ready()  # golden requests answered as recorded
        address = f"{LOOPBACK}:{process.port}"
        pod = Endpoint("ml", "pod", "churn", revision, "churn", address, True, 0, "image")
        spec = LoadSpec(rate=40, count=200, duration=60, batch=4, label_delay=0.2)
        truth = _truth(model_dir)
        report = run_load(spec, rows, features.features, lambda: [pod], labels=truth)
        answered = 4 * report.by_code["200"]
        assert answered > 0, report.summary()
        assert report.labels == {"matched": answered}, report.summary()
        samples = scrape(process.url)  # the label requests were answered: all scored
    assert value(samples, c.LABELLED_TOTAL) == answered
    correct = value(samples, c.LABELLED_TOTAL, outcome="correct")
    bins = {
        f"{dict(labels)[c.LABEL_FEATURE]}/{dict(labels)[c.LABEL_BIN]}": v / answered
        for (name, labels), v in samples.items()
        if name == c.FEATURE_BIN_TOTAL
    }
    return correct / answered, bins


def test_the_mislabelled_variant_answers_worse_on_the_same_inputs(
    churn: Callable[[str], Path],  # noqa: F811
    healthy: Path,  # noqa: F811
    profile: Profile,  # noqa: F811
) -> None:
    mislabelled = churn("mislabelled") / "model"
    good, good_bins = _accuracy_under_load(healthy, profile, "rev-healthy")
    bad, bad_bins = _accuracy_under_load(mislabelled, profile, "rev-mislabelled")
    print(f"\naccuracy on held-out rows: healthy {good:.1%}, mislabelled {bad:.1%}")
    assert good - bad > 0.05
    # The same rows (same seed; a request the generator dropped aside), the same
    # preprocessing and training columns: the same feature bins.
    assert good_bins.keys() == bad_bins.keys()
    assert max(abs(good_bins[b] - bad_bins[b]) for b in good_bins) < 0.05
