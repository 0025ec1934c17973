"""Load generator, ground truth: labels read row for row, label request bodies (checked by
the runtime's own parser), and the bounded queue that holds them for their delay."""

import random
from pathlib import Path

import pytest
from test_devenv_traffic import CSV, FEATURES, endpoint
from typer.testing import CliRunner

from modeldeploy.cli import app
from modeldeploy.devenv.loadgen import LoadReport, LoadSpec
from modeldeploy.devenv.traffic import (
    LabelQueue,
    labels_body,
    read_labels,
    read_rows,
    sample_indices,
    sample_rows,
    wrong_labels,
)
from modeldeploy.profile_schema import ClassificationOutput, Profile
from modeldeploy.serving.labels import LabelEntry, parse_labels

pytestmark = pytest.mark.unit


def test_labels_are_read_row_for_row(tmp_path: Path) -> None:
    path = tmp_path / "holdout.csv"
    path.write_text(CSV)
    assert read_labels(path, "churned", numeric=False) == ["stay", "churn", "stay"]
    assert read_labels(path, "tenure", numeric=True) == [3.0, 40.0, 12.0]
    assert len(read_rows(path, FEATURES)) == 3
    with pytest.raises(ValueError, match="no label column 'label'"):
        read_labels(path, "label", numeric=False)
    with pytest.raises(ValueError, match=r"holdout.csv:2: label 'stay' is not a number"):
        read_labels(path, "churned", numeric=True)


def test_rows_are_sampled_by_index_as_before() -> None:
    rows = [{"tenure": i} for i in range(50)]
    picked = sample_indices(len(rows), 20, random.Random(3))
    assert sample_rows(rows, 20, random.Random(3)) == [rows[i] for i in picked]


def test_a_share_of_labels_is_made_wrong_deterministically() -> None:
    labels = ["churn", "stay"] * 500
    wrong = wrong_labels(labels, 0.4, seed=3)
    assert wrong == wrong_labels(labels, 0.4, seed=3)
    changed = sum(a != b for a, b in zip(labels, wrong, strict=True))
    assert 340 < changed < 460  # about 40%, each to the other class
    assert set(wrong) == {"churn", "stay"}
    assert wrong_labels(labels, 0.0) == labels
    assert all(a != b for a, b in zip([1.0, 2.0, 3.0], wrong_labels([1.0, 2.0, 3.0], 1.0),
                                      strict=True))  # fmt: skip
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        wrong_labels(labels, 1.5)
    with pytest.raises(ValueError, match="single value"):
        wrong_labels(["stay"] * 3, 0.5)


def test_a_label_body_is_what_the_runtime_accepts() -> None:
    body = labels_body("load-7", ["stay", "churn"])
    assert parse_labels(body, classification=True, max_labels=10) == [
        LabelEntry("load-7", 0, "stay"),
        LabelEntry("load-7", 1, "churn"),
    ]


def test_labels_wait_their_delay_and_leave_oldest_first() -> None:
    queue = LabelQueue(delay=2.0, max_rows=10)
    a, b = endpoint("pod-a"), endpoint("pod-b")
    assert queue.add(0.0, a, "load-0", ["stay"])
    assert queue.add(1.0, b, "load-1", ["churn", "stay"])
    assert queue.due(1.9) == []
    assert queue.due(2.0) == [(a, labels_body("load-0", ["stay"]))]
    assert queue.due(10.0) == [(b, labels_body("load-1", ["churn", "stay"]))]
    assert len(queue) == 0


def test_the_queue_is_bounded_in_rows_and_frees_them_when_due() -> None:
    queue = LabelQueue(delay=1.0, max_rows=3)
    pod = endpoint("pod-a")
    assert queue.add(0.0, pod, "load-0", ["stay", "stay"])
    assert not queue.add(0.0, pod, "load-1", ["stay", "stay"])  # 4 rows: dropped
    assert queue.add(0.0, pod, "load-2", ["churn"])
    assert len(queue.due(1.0)) == 2
    assert queue.add(1.0, pod, "load-3", ["stay", "stay", "stay"])


def test_the_report_counts_labels_and_the_spec_bounds_their_delay() -> None:
    report = LoadReport()
    report.labels.update({"matched": 9, "unknown": 1})
    assert report.to_dict()["labels"] == {"matched": 9, "unknown": 1}
    assert report.summary().splitlines()[-1] == "  labels: matched:9 unknown:1"
    assert LoadSpec(1, 1, 1, label_delay=0).label_delay == 0
    with pytest.raises(ValueError, match="label_delay"):
        LoadSpec(1, 1, 1, label_delay=601)


def test_the_load_command_takes_wrong_labels_only_with_labels(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    data = tmp_path / "data" / "holdout.csv"
    data.write_text(CSV)
    output = ClassificationOutput(classes=["churn", "stay"], baseline={})
    profile = Profile(rows=3, features=FEATURES, output=output)
    (tmp_path / "model" / "profile.json").write_text(profile.model_dump_json())
    base = ["dev", "load", "--name", "churn", "--data", str(data), "--count", "1",
            "--duration", "1", "--wrong-labels"]  # fmt: skip
    alone = CliRunner().invoke(app, [*base, "0.3"])
    assert alone.exit_code == 2
    assert "--wrong-labels goes with --labels" in alone.output
    over = CliRunner().invoke(app, [*base, "1.5", "--labels", "churned"])
    assert over.exit_code == 2  # bounded: a share
    assert "--wrong-labels" in over.output
