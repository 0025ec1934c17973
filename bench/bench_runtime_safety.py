"""Runtime safety of the churn example: fuzzed bodies' status codes, readiness under load.

    python bench/bench_runtime_safety.py [--fuzz 2000] [--seconds 10] [--workers 4]
        [--batch 1024] [--server-code DIR]

Trains the example into a temporary directory and starts one `modeldeploy serve` on
127.0.0.1. Sends `--fuzz` seeded malformed bodies (`devenv/fuzz.py`) and prints the table of
status codes (5xx must be 0). Then times `/v2/health/ready` idle, and while `--workers`
connections post valid `--batch`-row bodies for `--seconds` (closed loop, bounded), and
prints p50/p99. `--server-code` runs the server from another checkout's `operator/`
directory (e.g. main's, `git archive main operator | tar -x -C /tmp/main`) for a before/after.
Prints figures; asserts nothing.
"""

import argparse
import http.client
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench_serving import INFER, build_example, load, request_body

from modeldeploy.devenv.fuzz import MalformedBodies
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.process import LOOPBACK, ServerProcess

READY = "/v2/health/ready"
PROBE_INTERVAL_S = 0.02


def fuzz(
    port: int, golden_request: dict[str, object], requests: int, seconds: float
) -> Counter[int]:
    """Status codes of `requests` malformed bodies on one keep-alive connection (bounded)."""
    bodies = MalformedBodies(golden_request, seed=17)
    statuses: Counter[int] = Counter()
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    deadline = time.monotonic() + seconds
    for _ in range(requests):
        if time.monotonic() > deadline:
            break
        connection.request("POST", INFER, bodies.next(), {"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        statuses[response.status] += 1
        if response.getheader("connection") == "close":
            connection.close()  # reconnects on the next request
    connection.close()
    return statuses


def probe_ready(port: int, seconds: float) -> list[float]:
    """Latencies (ms) of readiness probes every PROBE_INTERVAL_S for `seconds`."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    latencies = []
    for _ in range(int(seconds / PROBE_INTERVAL_S)):
        start = time.perf_counter()
        connection.request("GET", READY)
        connection.getresponse().read()
        latencies.append((time.perf_counter() - start) * 1000)
        time.sleep(PROBE_INTERVAL_S)
    connection.close()
    return latencies


def percentiles(latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100)
    worst = max(latencies)
    return f"p50 {q[49]:7.2f} ms  p99 {q[98]:7.2f} ms  max {worst:7.2f} ms  n={len(latencies)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fuzz", type=int, default=2000, help="malformed requests")
    parser.add_argument("--fuzz-seconds", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="of load")
    parser.add_argument("--workers", type=int, default=4, help="loading connections")
    parser.add_argument("--batch", type=int, default=1024, help="rows per valid body")
    parser.add_argument("--server-code", type=Path, help="an operator/ dir the server runs")
    args = parser.parse_args()
    env = {}
    if args.server_code is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(args.server_code.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    with tempfile.TemporaryDirectory(prefix="bench-safety-") as tmp:
        model_dir = build_example(Path(tmp))
        profile = Profile.model_validate_json((model_dir / "profile.json").read_bytes())
        body = request_body(model_dir, args.batch)
        with ServerProcess(model_dir, env=env, args=["--log-level", "error"]) as server:
            server.wait_ready(60)
            statuses = fuzz(server.port, profile.golden[-1].request, args.fuzz, args.fuzz_seconds)
            idle = probe_ready(server.port, 2.0)
            loader = threading.Thread(
                target=load,
                args=(server.port, body, 1_000_000, args.seconds, args.workers),
            )
            loader.start()
            loaded = probe_ready(server.port, args.seconds)
            loader.join()
    code = "server code: " + (str(args.server_code) if args.server_code else "this checkout")
    print(f"churn example, 127.0.0.1, {code}")
    print(f"fuzz: {sum(statuses.values())} malformed bodies (seed 17)")
    print(f"{'status':>8}{'count':>8}")
    for status, count in sorted(statuses.items()):
        print(f"{status:>8}{count:>8}")
    print(f"{'5xx':>8}{sum(n for s, n in statuses.items() if s >= 500):>8}")
    print(f"body of {args.batch} rows: {len(body)} bytes, {args.workers} loading connections")
    print(f"{READY} idle:   {percentiles(idle)}")
    print(f"{READY} loaded: {percentiles(loaded)}")


if __name__ == "__main__":
    main()
