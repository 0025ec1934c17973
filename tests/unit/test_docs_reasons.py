"""docs/troubleshooting.md names every condition reason and Event reason the operator emits.

The reasons are string literals where conditions and Events are made, so the operator's
source is read with `ast`: every `Event(type, reason, ...)`, `.event(type, reason, ...)`,
`_Cond(type, status, reason, ...)`, `Condition(reason=...)` and `refuse(subject, reason, ...)`
(an Event and the conditions of a refused spec), a reason written as a
variable followed to its assignments (in the function, else a module constant). A reason
that cannot be followed must be one of the few known to be copied from elsewhere.
"""

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modeldeploy.rollout.podstatus import NOT_READY, OOM_KILLED, UNSCHEDULABLE, WAITING_REASONS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "modeldeploy"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
# The local development stack (pod runner, demo) is not the operator.
NOT_THE_OPERATOR = ("devenv",)

POD_REASONS = WAITING_REASONS | {OOM_KILLED, UNSCHEDULABLE, NOT_READY}
"""Degraded carries a stable pod problem's reason, as the kubelet or the scheduler wrote it."""
COPIED_REASONS = {
    "rollout/machine.py: reason": "`event()`'s and `refuse()`'s parameter: their callers are read",
    "rollout/report.py: reason": "`refused()`'s parameter: `refuse()`'s callers are read",
    "rollout/report.py: stable_problems[0].reason": "a pod problem's reason: POD_REASONS",
    "rollout/report.py: progressing.reason": "kstatus Reconciling mirrors Progressing",
    "rollout/report.py: degraded.reason": "kstatus Stalled mirrors Degraded",
    "rollout/report.py: cond.reason": "a made condition turned into the API's Condition",
}


@dataclass
class Reasons:
    conditions: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    copied: set[str] = field(default_factory=set)
    """`module: expression` of reasons that cannot be followed to a literal."""


def module_constants(trees: dict[str, ast.Module]) -> dict[str, str]:
    """NAME = "text" at the top of any module (names of reasons are unique in the package)."""
    constants = {}
    for tree in trees.values():
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                        constants[target.id] = node.value.value
    return constants


class Follower:
    """The string literals an expression can evaluate to, as far as they can be followed."""

    def __init__(self, module: str, constants: dict[str, str], reasons: Reasons) -> None:
        self.module, self.constants, self.reasons = module, constants, reasons

    def strings(self, expr: ast.expr, scope: ast.AST) -> Iterator[str]:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            yield expr.value
        elif isinstance(expr, ast.IfExp):
            yield from self.strings(expr.body, scope)
            yield from self.strings(expr.orelse, scope)
        elif isinstance(expr, ast.Dict):
            for value in expr.values:
                yield from self.strings(value, scope)
        elif (
            isinstance(expr, ast.Call)
            and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "get"
        ):
            yield from self.strings(expr.func.value, scope)  # a dict's values
            for default in expr.args[1:]:
                yield from self.strings(default, scope)
        elif isinstance(expr, ast.Name) and (assigned := list(self.assignments(expr.id, scope))):
            for value in assigned:
                yield from self.strings(value, scope)
        elif isinstance(expr, ast.Name) and expr.id in self.constants:
            yield self.constants[expr.id]
        else:
            self.reasons.copied.add(f"{self.module}: {ast.unparse(expr)}")

    @staticmethod
    def assignments(name: str, scope: ast.AST) -> Iterator[ast.expr]:
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                yield value


def reason_argument(call: ast.Call) -> tuple[str, ast.expr] | None:
    """("events" | "conditions", the reason's expression) of a call that makes one."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else ""
    method = func.attr if isinstance(func, ast.Attribute) else ""
    on_self = isinstance(func, ast.Attribute) and ast.unparse(func.value) == "self"
    keyword = next((k.value for k in call.keywords if k.arg == "reason"), None)
    if (name == "Event" or (on_self and method == "event")) and len(call.args) >= 2:
        return "events", call.args[1]
    if name == "_Cond" and len(call.args) >= 3:
        return "conditions", call.args[2]
    if name in ("_Cond", "Condition") and keyword is not None:
        return "conditions", keyword
    return None


def functions_and_calls(tree: ast.Module) -> Iterator[tuple[ast.AST, ast.Call]]:
    """Each call with its innermost enclosing function (or the module)."""

    def visit(node: ast.AST, scope: ast.AST) -> Iterator[tuple[ast.AST, ast.Call]]:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope
            if isinstance(child, ast.Call):
                yield scope, child
            yield from visit(child, inner)

    yield from visit(tree, tree)


def operator_reasons() -> Reasons:
    trees = {
        path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.relative_to(PACKAGE).as_posix().startswith(NOT_THE_OPERATOR)
    }
    constants = module_constants(trees)
    reasons = Reasons()
    for module, tree in trees.items():
        follower = Follower(module, constants, reasons)
        for scope, call in functions_and_calls(tree):
            found = reason_argument(call)
            if found is not None:
                kind, expr = found
                getattr(reasons, kind).update(follower.strings(expr, scope))
            if isinstance(call.func, ast.Name) and call.func.id == "refuse" and len(call.args) >= 2:
                refusal = set(follower.strings(call.args[1], scope))
                reasons.events |= refusal
                reasons.conditions |= refusal
    return reasons


def documented(section: str) -> set[str]:
    """The reasons in the first column of the tables under `## <section>`."""
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z]+)` \|", body, flags=re.MULTILINE))


def test_the_reasons_are_found_in_the_code() -> None:
    reasons = operator_reasons()
    assert {"StableServing", "InsufficientReplicas", "Promoting", "PodsFailing"} <= (
        reasons.conditions
    )
    assert {"RolledBack", "Aborted", "AnalysisNoData", "InvalidSpec"} <= reasons.events
    assert reasons.copied == set(COPIED_REASONS), "follow or explain a new kind of reason"


def test_every_condition_reason_is_explained() -> None:
    in_code = operator_reasons().conditions | POD_REASONS
    in_doc = documented("Condition reasons")
    assert in_code - in_doc == set(), "emitted but not in docs/troubleshooting.md"
    assert in_doc - in_code == set(), "in docs/troubleshooting.md but never emitted"


def test_every_event_reason_is_explained() -> None:
    in_code = operator_reasons().events
    in_doc = documented("Event reasons")
    assert in_code - in_doc == set(), "emitted but not in docs/troubleshooting.md"
    assert in_doc - in_code == set(), "in docs/troubleshooting.md but never emitted"
