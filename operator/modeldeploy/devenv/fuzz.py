"""Malformed V2 request bodies, seeded: mutations of a valid request (tests, benchmarks).

    bodies = MalformedBodies(golden_request, seed=0)
    for _ in range(2000):
        raw = bodies.next()   # bytes: usually wrong JSON or a wrong V2 field, sometimes valid

Each body is the valid request with one to three mutations: a value anywhere in the tree
replaced by one of another type (containers, nesting, huge and non-finite numbers, long
strings), a key dropped or added, a tensor duplicated, the JSON text cut or corrupted. The
server must answer every one below 500: they are the client's fault, never the model's.
"""

import copy
import json
import random
from collections.abc import Callable
from typing import Any

Json = Any
_KEYS = ("name", "shape", "datatype", "data", "parameters", "inputs", "outputs", "id", "x")


class MalformedBodies:
    def __init__(self, valid: Json, seed: int = 0) -> None:
        self._valid = valid
        self._random = random.Random(seed)
        self._tree_mutations: list[Callable[[Json], None]] = [
            self._replace_value,
            self._replace_value,
            self._replace_value,
            self._drop_key,
            self._add_key,
            self._duplicate_tensor,
        ]

    def next(self) -> bytes:
        body = copy.deepcopy(self._valid)
        for _ in range(self._random.randint(1, 3)):
            self._random.choice(self._tree_mutations)(body)
        raw = json.dumps(body).encode()
        if self._random.random() < 0.15:
            return self._corrupt_text(raw)
        return raw

    # --- the JSON tree --------------------------------------------------------------------

    def _containers(self, node: Json) -> list[Json]:
        """Every dict and list in the tree (to mutate in place)."""
        found = [node] if isinstance(node, dict | list) else []
        children = node.values() if isinstance(node, dict) else node if found else []
        for child in children:
            found += self._containers(child)
        return found

    def _replace_value(self, body: Json) -> None:
        node = self._random.choice(self._containers(body))
        if not node:
            return
        key = self._random.choice(list(node) if isinstance(node, dict) else range(len(node)))
        node[key] = self._value(depth=0)

    def _drop_key(self, body: Json) -> None:
        dicts = [n for n in self._containers(body) if isinstance(n, dict) and n]
        if dicts:
            node = self._random.choice(dicts)
            del node[self._random.choice(list(node))]

    def _add_key(self, body: Json) -> None:
        dicts = [n for n in self._containers(body) if isinstance(n, dict)]
        if dicts:
            self._random.choice(dicts)[self._random.choice(_KEYS)] = self._value(depth=0)

    def _duplicate_tensor(self, body: Json) -> None:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if isinstance(inputs, list) and inputs:
            inputs.append(copy.deepcopy(self._random.choice(inputs)))

    def _value(self, depth: int) -> Json:
        """A JSON value of a random kind, nested at most three deep."""
        kinds: list[Callable[[], Json]] = [
            lambda: None,
            lambda: self._random.random() < 0.5,
            lambda: self._random.randint(-(2**70), 2**70),
            lambda: self._random.choice([0, -1, 1, 2, 1024, 10**6]),
            lambda: self._random.choice([0.5, -1e308, 1e308, 1e-320, 3.0]),
            lambda: self._random.choice(["", "FP64", "BYTES", "INT64", "label", "é\u0000"]),
            lambda: "x" * self._random.choice([1, 100, 10_000]),
        ]
        if depth < 3:
            kinds += [
                lambda: [self._value(depth + 1) for _ in range(self._random.randint(0, 4))],
                lambda: {
                    self._random.choice(_KEYS): self._value(depth + 1)
                    for _ in range(self._random.randint(0, 3))
                },
            ]
        return self._random.choice(kinds)()

    # --- the JSON text --------------------------------------------------------------------

    def _corrupt_text(self, raw: bytes) -> bytes:
        cut = self._random.randrange(len(raw))
        match self._random.randrange(4):
            case 0:
                return raw[:cut]
            case 1:
                return raw[:cut] + bytes([self._random.randrange(256)]) + raw[cut + 1 :]
            case 2:
                return raw[:cut] + b"NaN" + raw[cut:]
            case _:
                return b"[" * 5000 + raw
