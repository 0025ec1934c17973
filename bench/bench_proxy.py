"""What `modeldeploy proxy` costs in front of MLServer: throughput and latency of the churn
example served by the runtime, by the proxy in front of MLServer, and by MLServer alone.

    python bench/bench_proxy.py [--rounds 3] [--requests 600] [--seconds 5] [--batch 1]

Trains the example into a temporary directory, starts on 127.0.0.1 a `modeldeploy serve`
of it, MLServer serving its joblib file (hack/mlserver-env.sh) and a `modeldeploy proxy` in
front of that MLServer, then runs bounded rounds of closed-loop load (bench_serving.load)
against each, in turn, the order reversed every round so that background load hits them
alike: JSON and binary tensor data bodies for the runtime and the proxy, JSON for MLServer
(it has no binary extension; the proxy speaks JSON to it). Prints a table and the proxy's
added latency (proxy minus MLServer alone, JSON); asserts nothing.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench_serving import build_example, load, request_body, summary

from modeldeploy import contract as c
from modeldeploy.devenv.mlserver import MLServerProcess
from modeldeploy.profile_schema import Profile
from modeldeploy.serving.binary import BINARY_CONTENT_TYPE, HEADER_LENGTH, tensor_bytes
from modeldeploy.serving.process import ServerProcess
from modeldeploy.serving.protocol import RequestParser, encode_json
from modeldeploy.serving.proxy_config import UpstreamConfig
from modeldeploy.serving.upstream import upstream_request

Body = tuple[bytes, dict[str, str]]
JSON = {"content-type": "application/json"}


def binary_body(json_body: bytes) -> Body:
    """The same request in the binary tensor data extension (as tritonclient sends it)."""
    body = json.loads(json_body)
    tails = []
    for tensor in body["inputs"]:
        values = [float("nan") if v is None else v for v in tensor.pop("data")]
        tails.append(tensor_bytes(tensor["datatype"], values))
        tensor["parameters"] = {"binary_data_size": len(tails[-1])}
    header = encode_json(body)
    headers = {HEADER_LENGTH: str(len(header)), "content-type": BINARY_CONTENT_TYPE}
    return header + b"".join(tails), headers


def mlserver_body(model_dir: Path, json_body: bytes) -> Body:
    """The request as the proxy sends it upstream (upstream.upstream_request)."""
    profile = Profile.model_validate_json((model_dir / "profile.json").read_bytes())
    columns = RequestParser(profile.features, 1 << 20).parse(json.loads(json_body)).columns
    body = upstream_request(profile.features, columns, profile.output, UpstreamConfig())
    return encode_json(body), JSON


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=600, help="per round and variant")
    parser.add_argument("--seconds", type=float, default=5.0, help="per round and variant")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    env = {**os.environ, c.ENV_MODEL_VERSION: "1"}
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        model_dir = build_example(Path(tmp))
        plain = request_body(model_dir, args.batch)
        bodies = {"json": (plain, JSON), "binary": binary_body(plain)}
        with MLServerProcess(model_dir, name="churn") as mlserver:
            runtime = ServerProcess(model_dir, env=env, args=["--log-level", "warning"])
            proxy = ServerProcess.proxy(
                model_dir / "profile.json", mlserver.url, "churn", env=env,
                args=["--log-level", "warning"],
            )  # fmt: skip
            with runtime, proxy:
                mlserver.wait_ready(180)
                runtime.wait_ready(180)
                proxy.wait_ready(180)
                variants: dict[str, tuple[int, Body]] = {
                    "runtime json": (runtime.port, bodies["json"]),
                    "runtime binary": (runtime.port, bodies["binary"]),
                    "proxy json": (proxy.port, bodies["json"]),
                    "proxy binary": (proxy.port, bodies["binary"]),
                    "mlserver json": (mlserver.port, mlserver_body(model_dir, plain)),
                }
                for port, (body, headers) in variants.values():  # warm: connections, caches
                    load(port, body, 100, 3, args.workers, headers=headers)
                results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
                order = list(variants)
                for _ in range(args.rounds):
                    for name in order:
                        port, (body, headers) = variants[name]
                        results[name].append(
                            load(
                                port,
                                body,
                                args.requests,
                                args.seconds,
                                args.workers,
                                headers=headers,
                            )
                        )
                    order.reverse()
    figures = {name: summary(runs) for name, runs in results.items()}
    print(
        f"churn example, batch {args.batch}, {args.workers} connections, "
        f"{args.rounds} rounds in alternating order, 127.0.0.1"
    )
    print(f"{'':16}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'requests':>10}")
    for name, f in figures.items():
        print(
            f"{name:16}{f['rps']:9.0f}{f['p50']:9.2f}{f['p95']:9.2f}{f['p99']:9.2f}{f['n']:10.0f}"
        )
    alone, fronted = figures["mlserver json"], figures["proxy json"]
    print(
        "proxy in front of MLServer, JSON, against MLServer alone: "
        f"p50 +{fronted['p50'] - alone['p50']:.2f} ms ({fronted['p50'] / alone['p50']:.2f}x), "
        f"p99 +{fronted['p99'] - alone['p99']:.2f} ms ({fronted['p99'] / alone['p99']:.2f}x), "
        f"throughput {fronted['rps'] / alone['rps']:.2f}x"
    )


if __name__ == "__main__":
    main()
