"""The stable's latency with and without the shadow mirror, side by side.

    python bench/bench_shadow.py [--rounds 4] [--seconds 8] [--rate 40] [--percent 100]
        [--server-code DIR]

Trains the churn example into a temporary directory and starts four `modeldeploy serve`
processes on 127.0.0.1: a stable without a mirror, the same stable mirroring `--percent` of
its requests to a shadow, the shadow, and the same stable mirroring to a sink. The shadow is
behind the pod runner's local Service forwarder (`devenv.forwarder`, in a process of its own
as in the local environment); the sink is such a forwarder with nothing behind it, answering
503 at once: the stable's own cost of mirroring, without the shadow's inference competing
for the same cores. Alternates paced rounds (open loop at `--rate` requests/s, 4 keep-alive
connections) between the stables (ABC CBA order, so that background load hits all alike) and
prints p50/p95/p99 of each side by side with their ratios to the stable without a mirror,
and what each mirror sent. Everything shares the machine's cores (in a cluster the shadow
has its own), so this is an upper bound of the mirror's cost. `--server-code` runs the
stables from another checkout's `operator/` (a before/after). Asserts nothing.
"""

import argparse
import http.client
import multiprocessing
import multiprocessing.process
import os
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_serving import build_example, request_body, summary, timed_infer

from modeldeploy import contract
from modeldeploy.devenv.endpoints import Endpoint, Published, ServiceMembers
from modeldeploy.devenv.forwarder import ServiceForwarder
from modeldeploy.devenv.pods import ServiceRef
from modeldeploy.serving.process import LOOPBACK, ServerProcess

CONNECTIONS = 4


def paced(port: int, body: bytes, rate: float, seconds: float) -> dict[str, Any]:
    """Open-loop load: request i is due at i / rate, over CONNECTIONS keep-alive
    connections (connection k takes every k-th request); bounded by `seconds`."""
    count = int(rate * seconds)
    latencies: list[float] = []
    lock = threading.Lock()
    began = time.perf_counter()

    def worker(k: int) -> None:
        connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
        mine = []
        for i in range(k, count, CONNECTIONS):
            wait = began + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            mine.append(timed_infer(connection, body))
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"n": len(latencies), "seconds": time.perf_counter() - began, "latencies": latencies}


def forward(shadow_port: int | None, addresses: "multiprocessing.Queue[str]") -> None:
    """The local Service forwarder in front of the shadow (None: nothing behind it), in a
    process of its own (as in the pod runner's): in this one it would share the load
    generator's GIL."""
    members = Published(
        [Endpoint("bench", "shadow", "churn", "r2", "churn",
                  f"{LOOPBACK}:{shadow_port}", True, 0, "")] if shadow_port else [],
        [ServiceMembers("bench", "churn-canary", ("shadow",) if shadow_port else ())],
    )  # fmt: skip
    forwarder = ServiceForwarder(ServiceRef("bench", "churn-canary"), lambda: members).start()
    addresses.put(forwarder.address)
    threading.Event().wait()  # until terminated


def start_forwarder(shadow_port: int | None) -> tuple[multiprocessing.process.BaseProcess, str]:
    context = multiprocessing.get_context("spawn")
    addresses: multiprocessing.Queue[str] = context.Queue()
    process = context.Process(target=forward, args=(shadow_port, addresses), daemon=True)
    process.start()
    return process, addresses.get(timeout=60)


def shadow_counts(server: ServerProcess) -> dict[str, float]:
    """The stable's shadow_requests_total by result, from its /metrics."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(contract.SHADOW_REQUESTS_TOTAL + "{"):
            result = re.search(r'result="(\w+)"', line)
            if result:
                found[result.group(1)] = float(line.rpartition(" ")[2])
    return found


def mirroring_to(address: str, percent: float) -> dict[str, str]:
    return {
        contract.ENV_SHADOW_URL: f"http://{address}",
        contract.ENV_SHADOW_PERCENT: f"{percent:g}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="per round and server")
    parser.add_argument("--rate", type=float, default=40.0, help="requests/s, at most 200")
    parser.add_argument("--percent", type=float, default=100.0, help="share mirrored")
    parser.add_argument("--server-code", type=Path, help="an operator/ dir the stables run")
    args = parser.parse_args()
    if not (0 < args.rate <= 200 and 1 <= args.rounds <= 20 and 0 < args.seconds <= 60):
        parser.error("rate in (0, 200], rounds in 1..20, seconds in (0, 60]")
    code: dict[str, str] = {}
    if args.server_code is not None:
        code["PYTHONPATH"] = os.pathsep.join(
            [str(args.server_code.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp:
        model_dir = build_example(Path(tmp))
        body = request_body(model_dir, 1)
        shadow = ServerProcess(model_dir)
        forwarding, address = start_forwarder(shadow.port)
        sinking, sink = start_forwarder(None)
        stables = {
            "mirror off": ServerProcess(model_dir, env=code),
            "to shadow": ServerProcess(
                model_dir, env={**code, **mirroring_to(address, args.percent)}
            ),
            "to sink": ServerProcess(model_dir, env={**code, **mirroring_to(sink, args.percent)}),
        }
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in stables}
        servers = [shadow, *stables.values()]
        try:
            for server in servers:
                server.start()
            for server in servers:
                server.wait_ready(60)
            for server in stables.values():  # warm all (and the mirrors' connections)
                paced(server.port, body, args.rate, 2)
            order = list(stables)
            for _ in range(args.rounds):
                for name in order:
                    run = paced(stables[name].port, body, args.rate, args.seconds)
                    results[name].append(run)
                order.reverse()  # ABC CBA
            time.sleep(1)  # the last mirrored requests finish (each has a 0.5 s timeout)
            sent = {name: shadow_counts(stables[name]) for name in ("to shadow", "to sink")}
        finally:
            for server in servers:
                server.stop()
            for forwarder in (forwarding, sinking):
                forwarder.terminate()
                forwarder.join(10)
    figures = {name: summary(runs) for name, runs in results.items()}
    print(
        f"churn example, {args.rate:g} requests/s open loop over {CONNECTIONS} connections, "
        f"{args.rounds} alternating rounds of {args.seconds:g}s, mirror {args.percent:g}% to a "
        f"shadow behind the local Service forwarder or to a sink (a forwarder answering 503), "
        f"127.0.0.1, stables' code: {args.server_code or 'this checkout'}"
    )
    print(f"{'':12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p50 x':>8}{'p99 x':>8}{'requests':>10}")
    off = figures["mirror off"]
    for name, f in figures.items():
        ratios = f"{f['p50'] / off['p50']:8.2f}{f['p99'] / off['p99']:8.2f}"
        print(f"{name:12}{f['p50']:9.2f}{f['p95']:9.2f}{f['p99']:9.2f}{ratios}{f['n']:10.0f}")
    for name, counts in sent.items():
        print(f"mirrored {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items())))
    for name, runs in results.items():
        medians = [statistics.median(r["latencies"]) * 1000 for r in runs]
        print(f"p50 ms per round, {name}: " + ", ".join(f"{m:.2f}" for m in medians))


if __name__ == "__main__":
    main()
