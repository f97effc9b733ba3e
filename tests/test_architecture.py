"""The layering rules of docs/architecture.md, checked on the source (run by ``make lint``).

An AST walk over ``dispatcher/``, ``messengers/``, ``tasks/`` and ``config/``
finds every import that runs (at load time or inside a function; imports
under ``if TYPE_CHECKING:`` do not run) and checks:

- no import cycle, counting imports inside functions too, so a cycle cannot
  hide in a function body;
- ``messengers/`` is below the engine: it imports nothing of ``dispatcher``,
  ``tasks`` or ``config``, and nothing of Django but its signals;
- the engine never imports what is built on it (the inbox, subscriptions,
  model events, views, the dashboard) nor the Celery glue in ``tasks``;
- an import inside a function is one of the few listed below, each with its
  reason; any other is reported, since its usual purpose is to dodge a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dispatcher", "messengers", "tasks", "config")

ENGINE = {
    "dispatcher.api", "dispatcher.bulk", "dispatcher.counters", "dispatcher.delivery",
    "dispatcher.exceptions",
    "dispatcher.links", "dispatcher.messages", "dispatcher.models", "dispatcher.publish",
    "dispatcher.partitions", "dispatcher.queues", "dispatcher.registry", "dispatcher.signals",
    "dispatcher.sweeps",
}
BUILT_ON_THE_ENGINE = (
    "dispatcher.inbox", "dispatcher.feed", "dispatcher.subscriptions", "dispatcher.model_events",
    "dispatcher.views", "dispatcher.dashboard", "dispatcher.admin", "tasks",
)
#: Imports of the project's modules inside a function, and why each is not a dodge.
FUNCTION_LEVEL_ALLOWED = {
    # Django loads app modules that connect signal receivers from AppConfig.ready().
    ("*.apps", "*"): "AppConfig.ready() is where Django wants receivers connected",
    # pytest loads its plugins before Django is set up; the fixture imports the engine when used.
    ("dispatcher.pytest_plugin", "dispatcher.testing"): "pytest loads plugins before Django's setup",
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``: they never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    return skipped


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]


def edges() -> Iterator[Edge]:
    modules = project_modules()
    known = set(modules)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_blocks(tree)
        in_function = {
            id(child)
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for child in ast.walk(node)
        }
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
                for target in _targets(module, node, path.name == "__init__.py", known):
                    yield Edge(module, target, node.lineno, id(node) in in_function)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _allowed_in_function(edge: Edge) -> bool:
    for (source, target) in FUNCTION_LEVEL_ALLOWED:
        source_ok = edge.source == source or (source.startswith("*") and edge.source.endswith(source[1:]))
        if source_ok and (target == "*" or _within(edge.target, target)):
            return True
    return False


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph``, as a path that starts and ends on the same module."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _internal(edge: Edge) -> bool:
    return edge.target.split(".")[0] in PACKAGES


def test_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for edge in edges():
        if _internal(edge) and edge.target != edge.source and not _within(edge.source, edge.target):
            graph.setdefault(edge.source, set()).add(edge.target)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_messengers_know_protocols_not_the_engine():
    wrong = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in edges()
        if _within(e.source, "messengers")
        and (e.target.split(".")[0] in ("dispatcher", "tasks", "config")
             or (_within(e.target, "django") and not _within(e.target, "django.dispatch")))
    ]
    assert wrong == []


def test_the_engine_does_not_import_what_is_built_on_it():
    wrong = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in edges()
        if e.source in ENGINE and any(_within(e.target, upper) for upper in BUILT_ON_THE_ENGINE)
    ]
    assert wrong == []


def test_no_function_level_import_dodges_a_cycle():
    wrong = [
        f"{e.source}:{e.line} imports {e.target} inside a function"
        for e in edges()
        if e.in_function and _internal(e) and not _allowed_in_function(e)
    ]
    assert wrong == []


def test_the_checks_see_a_cycle_and_a_forbidden_import():
    # The checks themselves: a cycle and a layering breach in a made-up graph are found.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
    assert any(e.source == "dispatcher.delivery" and e.target == "messengers.base" for e in edges())
    assert _allowed_in_function(Edge("dispatcher.apps", "dispatcher.beat", 1, True))
    assert not _allowed_in_function(Edge("dispatcher.models", "dispatcher.model_events", 1, True))
