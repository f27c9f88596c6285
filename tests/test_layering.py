"""The house rules of autoprune's imports: no cycle between modules or packages, no import from a higher floor.

Floors (DESIGN.md section 1), lowest first; a module may import its own floor and the floors
below. Every import statement counts: at module level, inside functions and under
``TYPE_CHECKING``. Run as a script to print the import graph between packages:

    .venv/bin/python tests/test_layering.py
"""
from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "autoprune"

#: floor name -> the modules and packages on it, lowest floor first
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("errors", "registry", "validation", "plan", "config", "task", "inputs", "compat", "latency",
                "records", "files", "environment")),
    ("pruning, hardware, training, tasks", ("pruning", "hardware", "training", "tasks")),
    ("search", ("search",)),
    ("execution", ("execution",)),
    ("results", ("results",)),
    ("cli", ("cli", "console", "__main__", "__init__", "testing")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The autoprune modules ``path`` imports (``from package import submodule`` resolves to the submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "autoprune"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "autoprune":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, set(known)) - {name} for name, path in known.items()}


def unit(module: str) -> str:
    """The module's unit on its floor: its subpackage (``autoprune.search``) or itself (``autoprune.plan``)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "autoprune.__init__"
    return ".".join(parts[:2])


def floor(module: str) -> int:
    name = unit(module).split(".")[1]
    for index, (_, members) in enumerate(FLOORS):
        if name in members:
            return index
    raise AssertionError(f"{module} is on no floor: add it to FLOORS")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def unit_graph(edges: dict[str, set[str]]) -> Counter[tuple[str, str]]:
    """Import statements between units (subpackages and top-level modules), by (importer, imported)."""
    return Counter((unit(a), unit(b)) for a, targets in edges.items() for b in targets if unit(a) != unit(b))


def test_every_module_is_on_a_floor() -> None:
    for module in graph():
        floor(module)


def test_no_import_cycle_between_modules() -> None:
    assert cycles(graph()) == []


def test_no_import_cycle_between_packages() -> None:
    units: dict[str, set[str]] = {}
    for a, b in unit_graph(graph()):
        units.setdefault(a, set()).add(b)
    assert cycles(units) == []


def test_no_module_imports_a_higher_floor() -> None:
    upward = [(a, b) for a, targets in graph().items() for b in targets if floor(b) > floor(a)]
    assert upward == []


def main() -> None:
    edges = graph()
    print("floors (lowest first):")
    for index, (name, members) in enumerate(FLOORS):
        print(f"  {index} {name}: {', '.join(members)}")
    print("imports between units (importer -> imported: statements):")
    for (a, b), count in sorted(unit_graph(edges).items(), key=lambda item: (floor(item[0][0]), item[0])):
        print(f"  [{floor(a)}] {a} -> [{floor(b)}] {b}: {count}")
    upward = [(a, b) for a, targets in edges.items() for b in targets if floor(b) > floor(a)]
    print(f"modules: {len(edges)}; cycles: {len(cycles(edges))}; upward imports: {len(upward)}")


if __name__ == "__main__":
    main()
