"""`modeldeploy report` on a real rolled-back canary, rendered by headless Chromium.

The real operator rolls the skewed v2 (monthly_charges x100 in its preprocessing) back on
feature drift, with client traffic through the Service and the session Prometheus; then the
report is written from the cluster and Prometheus and opened in Chromium (no network: the
page carries plotly.js). The assertions are on the page after its scripts ran (the DOM
Chromium dumps) and a screenshot is kept in the test's tmp dir.
"""

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from analysis_stack import SKEWED, V1, AnalysisStack, Sample, rolled_back

from modeldeploy.devenv.cluster import KwokCluster
from modeldeploy.devenv.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "report"
RATE = 30.0
BROWSER_TIMEOUT = 120.0
FAILING_CHECK = "feature-psi/monthly_charges"


@pytest.fixture(scope="module")
def rollback(
    kube: KwokCluster, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AnalysisStack, Sample]]:
    """The skewed canary rolled back, and the stable analysed since (status.lastAnalysis is
    the stable's: the failing round is status.failedAnalysis)."""
    workdir = tmp_path_factory.mktemp(NAMESPACE)
    with AnalysisStack(kube, prometheus.url, prometheus.targets_dir, NAMESPACE, workdir) as stack:
        stack.deploy(V1, "1")
        stack.wait_stable()
        with stack.traffic(RATE), stack.timeline() as timeline:
            stack.deploy(SKEWED, "2")
            started = timeline.wait(lambda s: s.canary is not None, 30, "a canary")
            back = timeline.wait(rolled_back, 240, "rollback", after=started.t)
            stable = back.stable
            timeline.wait(lambda s: s.analysed(stable), 60, "a round of the stable", after=back.t)
        yield stack, back


def modeldeploy(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "modeldeploy"
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=120, check=False
    )


def chromium(page: Path, profile: Path, *args: str) -> str:
    """Headless Chromium on a local file; --virtual-time-budget lets the page's scripts run
    before the dump or the screenshot (bounded by BROWSER_TIMEOUT all the same)."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: hack/testenv.sh install puts it there"
    result = subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            # Only the local file: no update checks, field trials or other calls home.
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args, page.as_uri(),
        ],
        capture_output=True, text=True, timeout=BROWSER_TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def between(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin)]


def test_report_of_a_rolled_back_canary_renders_failing_checks_first(
    rollback: tuple[AnalysisStack, Sample], prometheus: PrometheusServer, tmp_path: Path
) -> None:
    stack, back = rollback
    status = stack.status()
    canary = back.status["failedRevision"]
    assert status["failedRevision"] == canary
    assert status["lastAnalysis"]["revision"] == back.stable  # the round that failed: kept
    assert status["failedAnalysis"]["revision"] == canary
    failing = back.checks("fail")[FAILING_CHECK]

    page = tmp_path / "report.html"
    started = time.monotonic()
    run = modeldeploy(
        "report", "churn", "-n", NAMESPACE, "--kubeconfig", str(stack.kube.kubeconfig),
        "--prometheus-url", prometheus.url, "--output", str(page),
    )  # fmt: skip
    written = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(page)

    started = time.monotonic()
    dom = chromium(page, tmp_path / "chromium-dom", "--dump-dom")
    rendered = time.monotonic() - started
    screenshot = tmp_path / "report.png"
    chromium(
        page, tmp_path / "chromium-shot", f"--screenshot={screenshot}", "--window-size=1300,2600"
    )
    assert screenshot.stat().st_size > 10_000
    print(
        f"\nreport: {page.stat().st_size / 2**20:.2f} MiB, written in {written:.1f}s, "
        f"DOM after scripts in {rendered:.1f}s; screenshot {screenshot}"
    )

    # The failing check, with the value the operator recorded, at the top.
    top = between(dom, 'id="failing-checks"', "</section>")
    table = between(top, 'id="failing-table"', "</table>")
    assert FAILING_CHECK in table
    assert f"{failing['value']:.4g}" in table
    assert "monthly_charges" in between(top, 'class="rollback-reason"', "</span>")
    assert dom.index('id="failing-checks"') < dom.index('id="verdict-table"')
    # The failing feature's chart comes first, flagged, and plotly drew it (an SVG).
    charts = dom[dom.index("Features: serving") :]
    first = between(charts, "<section", "</section>")
    assert 'data-chart="feature-monthly_charges"' in first
    assert 'class="chart failing"' in first
    assert "js-plotly-plot" in first
    assert "main-svg" in first
    assert f"canary {canary}" in first
    # The other charts are drawn too.
    for key in ("feature-tenure_months", "prediction-", "confidence", "latency"):
        assert f'data-chart="{key}' in dom
    assert dom.count("main-svg") >= 4
    # The canary's rounds, replayed from Prometheus with the operator's statistics up to
    # the rollback: drawn, and the failing check fails in them as it did in the operator.
    rounds = between(dom, 'data-chart="analysis-rounds"', "</section>")
    assert "main-svg" in rounds
    assert "feature-psi" in rounds  # a line of the failing check
    table = between(dom, 'id="rounds-table"', "</table>")
    assert table.count("<tr>") >= 3  # the header and at least two rounds
    assert '<span class="fail">fail</span>' in table
    assert FAILING_CHECK in table
