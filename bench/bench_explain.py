"""What an explained request costs: the churn example's inference path, in process, with and
without `parameters.explain`, for its logistic regression (exact, numpy) and the same
pipeline ending in tree ensembles (shap's TreeExplainer, the `explain` extra).

    python bench/bench_explain.py [--requests 300]

Trains the example into a temporary directory, once per final estimator, and times
`InferencePipeline.infer` on one row and on a batch of 32. Prints figures; asserts nothing.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

from modeldeploy.devenv.imagemap import load_build_script
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.protocol import input_tensor
from modeldeploy.serving.server import load_runtime

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(pipeline: InferencePipeline, body: dict[str, Any], requests: int) -> float:
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        pipeline.infer(body)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    build = load_build_script(ROOT / "examples/churn/build.py", "churn_build")
    finals = {
        "LogisticRegression (exact)": None,
        "GradientBoosting, 100 trees (shap)": GradientBoostingClassifier(random_state=0),
        "RandomForest, 100 trees depth 8 (shap)": RandomForestClassifier(
            max_depth=8, random_state=0
        ),
    }
    print(f"median of {args.requests} requests, in process (ms)")
    print(f"{'model':40} {'rows':>4} {'plain':>8} {'explained':>10} {'added':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, final in finals.items():
            out = Path(scratch) / name.split()[0]
            model_dir = build.build(out, rows=3000, estimator=final)
            runtime = load_runtime(model_dir, instrumentation=False)
            pipeline = runtime.pipeline
            background = runtime.profile.background
            assert background is not None
            for rows in (1, 32):
                inputs = [
                    {**input_tensor(f, t["data"][:rows]), "name": f.name}
                    for f, t in zip(pipeline.features, background["inputs"], strict=True)
                ]
                plain = _median_ms(pipeline, {"inputs": inputs}, args.requests)
                body = {"inputs": inputs, "parameters": {"explain": True}}
                explained = _median_ms(pipeline, body, args.requests)
                print(
                    f"{name:40} {rows:>4} {plain:>8.2f} {explained:>10.2f} "
                    f"{explained - plain:>8.2f}"
                )


if __name__ == "__main__":
    main()
