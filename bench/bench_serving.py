"""Throughput and latency of the churn example served with and without instrumentation.

    python bench/bench_serving.py [--rounds 4] [--requests 1200] [--seconds 5] [--batch 1]

Trains the example into a temporary directory, starts two `modeldeploy serve` processes on
127.0.0.1 (one with `--no-instrumentation`) and alternates bounded rounds of closed-loop load
between them (ABBA order), so that background load hits both alike. Then times the Monitor
calls alone, in process. Prints figures; asserts nothing (goal: at most 5% throughput loss).
"""

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from modeldeploy.devenv.imagemap import load_build_script
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.monitor import Identity, Monitor
from modeldeploy.serving.pipeline import InferencePipeline
from modeldeploy.serving.process import LOOPBACK, ServerProcess
from modeldeploy.serving.protocol import Reason, input_tensor
from modeldeploy.serving.server import load_runtime

ROOT = Path(__file__).resolve().parents[1]
INFER = "/v2/models/churn/infer"
JSON_HEADERS = {"content-type": "application/json"}


def build_example(out: Path) -> Path:
    module = load_build_script(ROOT / "examples/churn/build.py", "churn_build")
    return Path(module.build(out, rows=3000))


def request_body(model_dir: Path, batch: int) -> bytes:
    profile = Profile.model_validate_json((model_dir / "profile.json").read_bytes())
    golden = profile.golden[-1].request  # rows of real training data
    rows = {t["name"]: t["data"] for t in golden["inputs"]}
    repeat = -(-batch // len(next(iter(rows.values()))))
    inputs = [input_tensor(f, (rows[f.name] * repeat)[:batch]) for f in profile.features]
    return json.dumps({"inputs": inputs}).encode()


def timed_infer(
    connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str] = JSON_HEADERS
) -> float:
    """Seconds of one inference over a keep-alive connection (RuntimeError unless 200)."""
    start = time.perf_counter()
    connection.request("POST", INFER, body, headers)
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"status {response.status}")
    return time.perf_counter() - start


def load(
    port: int,
    body: bytes,
    requests: int,
    seconds: float,
    workers: int,
    *,
    headers: dict[str, str] = JSON_HEADERS,
) -> dict[str, Any]:
    """Closed-loop load: `workers` keep-alive connections, bounded in count and time."""
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.monotonic() + seconds

    def worker() -> None:
        connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
        mine = []
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            mine.append(timed_infer(connection, body, headers))
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"n": len(latencies), "seconds": time.perf_counter() - began, "latencies": latencies}


def summary(rounds: list[dict[str, Any]]) -> dict[str, float]:
    latencies = sorted(x for r in rounds for x in r["latencies"])
    q = statistics.quantiles(latencies, n=100)
    return {
        "rps": sum(r["n"] for r in rounds) / sum(r["seconds"] for r in rounds),
        "p50": q[49] * 1000,
        "p95": q[94] * 1000,
        "p99": q[98] * 1000,
        "n": len(latencies),
    }


def monitor_cost(model_dir: Path, batch: int, repeats: int = 2000) -> tuple[float, float]:
    """Microseconds per request: Monitor observations alone, and the whole pipeline."""
    runtime = load_runtime(model_dir)
    pipeline: InferencePipeline = runtime.pipeline
    body = json.loads(request_body(model_dir, batch))
    inference = pipeline.infer(body)
    monitor = Monitor(
        runtime.profile, Identity("churn", "1", "bench"), invalid_reasons=list(Reason)
    )
    prediction = inference.prediction

    def observe() -> None:
        monitor.observe_features(inference.features)
        monitor.observe_predictions(prediction.values, prediction.confidence)
        monitor.observe_request(200, 0.001)

    def timed(call: Any, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            call()
        return (time.perf_counter() - start) / n * 1e6

    return timed(observe, repeats), timed(lambda: pipeline.infer(body), max(50, repeats // 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=1200, help="per round and server")
    parser.add_argument("--seconds", type=float, default=5.0, help="per round and server")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        model_dir = build_example(Path(tmp))
        body = request_body(model_dir, args.batch)
        variants = {"instrumented": [], "plain": ["--no-instrumentation"]}
        servers = {name: ServerProcess(model_dir, args=extra) for name, extra in variants.items()}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready(60)
            for server in servers.values():  # warm both: connections, caches
                load(server.port, body, 200, 3, args.workers)
            order = list(servers)
            for _ in range(args.rounds):
                for name in order:
                    run = load(servers[name].port, body, args.requests, args.seconds, args.workers)
                    results[name].append(run)
                order.reverse()  # ABBA: a trend in background load hits both alike
        finally:
            for server in servers.values():
                server.stop()
        observe_us, pipeline_us = monitor_cost(model_dir, args.batch)
    figures = {name: summary(runs) for name, runs in results.items()}
    print(
        f"churn example, batch {args.batch}, {args.workers} connections, "
        f"{args.rounds} alternating rounds, 127.0.0.1"
    )
    print(f"{'':14}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'requests':>10}")
    for name, f in figures.items():
        print(
            f"{name:14}{f['rps']:9.0f}{f['p50']:9.2f}{f['p95']:9.2f}{f['p99']:9.2f}{f['n']:10.0f}"
        )
    loss = 1 - figures["instrumented"]["rps"] / figures["plain"]["rps"]
    paired = statistics.median(
        1 - (a["n"] / a["seconds"]) / (b["n"] / b["seconds"])
        for a, b in zip(results["instrumented"], results["plain"], strict=True)
    )
    print(
        f"throughput loss with instrumentation: {loss * 100:.1f}% overall, "
        f"{paired * 100:.1f}% median of paired rounds (goal <= 5%)"
    )
    share = observe_us / pipeline_us * 100
    print(
        f"in process: Monitor observations {observe_us:.1f} us/request vs "
        f"validate+preprocess+predict {pipeline_us:.0f} us/request ({share:.1f}%)"
    )
    for name, runs in results.items():
        print(
            f"req/s per round, {name}: " + ", ".join(f"{r['n'] / r['seconds']:.0f}" for r in runs)
        )


if __name__ == "__main__":
    main()
