"""The package's layering: no import cycles between modules or between subpackages.

Every import is counted, those inside functions too (a lazy import hides a cycle from Python, not
from the reader). Subpackages may import ``core`` and each other in one direction only; ``core``
imports nothing but ``core``; only the composition roots (``ifplay.cli``, ``ifplay.plan``) see
every subpackage, and only ``ifplay.cli`` is imported by no module.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "workflow" / "ifplay"
ROOTS = {"ifplay.cli", "ifplay.plan"}  # the composition roots: they import the subpackages


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str:
    """The module an imported dotted name is in (``ifplay.a.b.Name`` -> ``ifplay.a.b``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {resolve(alias.name) for alias in node.names if alias.name.startswith("ifplay")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ifplay") and not node.level:
            found |= {resolve(f"{node.module}.{alias.name}") for alias in node.names}
    return found - {module}


GRAPH = {module: imports_of(module) for module in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def subpackage(module: str) -> str:
    parts = module.split(".")
    return module if module in ROOTS or len(parts) < 3 else ".".join(parts[:2])


def test_the_package_is_split_into_subpackages():
    flat = sorted(m for m, path in MODULES.items() if path.parent == PACKAGE and path.name != "__init__.py"
                  and m not in ROOTS)
    assert not flat, f"modules outside a subpackage: {flat}"


def test_no_import_cycle_between_modules():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_no_import_cycle_between_subpackages():
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(subpackage(module), set()).update(subpackage(t) for t in targets)
    for name, targets in packages.items():
        targets.discard(name)
    cycle = find_cycle(packages)
    assert cycle is None, " -> ".join(cycle)


def test_core_imports_only_core_and_nothing_imports_the_cli():
    for module, targets in GRAPH.items():
        if subpackage(module) == "ifplay.core":
            outside = {t for t in targets if subpackage(t) != "ifplay.core" and t != "ifplay"}
            assert not outside, f"{module} imports {sorted(outside)}"
        assert "ifplay.cli" not in targets, f"{module} imports ifplay.cli"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
