"""The package's shape: small modules, one-way imports, citations of the project's own docs.

The rules are the ones docs/architecture.md draws: every module at most
``MAX_LINES`` lines, no import cycle anywhere (function-level and
``TYPE_CHECKING`` imports count: an import inside a function is still an arrow),
and comments cite ``docs/api-behaviour.md``, never a file outside the repository.
The figures are printed at the end of the run.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pgcloud_nb"
MAX_LINES = 400
# Citations of notes that live outside the repository, or of issue numbers.
FOREIGN = re.compile(r"API-NOTES|\bDOC-[A-Z]+\b|\[U\]|\bissues? #?\d+\b", re.IGNORECASE)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every package module ``name`` imports, wherever the import statement sits."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from pkg import mod` imports the submodule; `from mod import name` the module.
            targets = [
                f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                for a in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_modules_are_small(figures: dict[str, str]) -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    largest = max(sizes, key=lambda n: sizes[n])
    over = sorted(n for n, size in sizes.items() if size > MAX_LINES)
    per_room = Counter(
        n.split(".")[2] for n in sizes if n.startswith("pgcloud_nb.sandbox.") and n.count(".") >= 3
    )
    figures["modules over 400 lines"] = f"{len(over)} (aim: 0)"
    figures["largest module"] = f"{largest} ({sizes[largest]} lines)"
    figures["modules per sandbox subpackage"] = ", ".join(
        f"{room} {count}" for room, count in sorted(per_room.items())
    )
    assert not over, {n: sizes[n] for n in over}


def test_no_import_cycles(figures: dict[str, str]) -> None:
    found = cycles(import_graph())
    figures["import cycles (function-level and TYPE_CHECKING imports counted)"] = (
        f"{len(found)} (aim: 0)"
    )
    assert not found, found


def test_cycle_finder_sees_function_level_imports(tmp_path: Path) -> None:
    # The control: a cycle closed only by an import inside a function is still found.
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert cycles(graph) == [["a", "b"]]
    text = "def f():\n    from pgcloud_nb import b\n"
    (tmp_path / "a.py").write_text(text)
    assert imports_of("pgcloud_nb.a", tmp_path / "a.py", {"pgcloud_nb.b"}) == {"pgcloud_nb.b"}


def test_sandbox_imports_one_way() -> None:
    # api -> services -> postgres; telemetry and insights beside services; the sandbox never
    # imports the client side of the package.
    rank = {"postgres": 0, "telemetry": 1, "insights": 1, "services": 2, "api": 3}
    client_side = {"client", "requester", "waiters", "widgets", "charts", "frames", "credentials"}
    wrong = []
    for mod, targets in import_graph().items():
        if not mod.startswith("pgcloud_nb.sandbox."):
            continue
        room = mod.split(".")[2]
        for target in targets:
            parts = target.split(".")
            if target.startswith("pgcloud_nb.sandbox.") and room in rank and parts[2] in rank:
                if rank[parts[2]] > rank[room]:
                    wrong.append(f"{mod} -> {target}")
            elif parts[:2] == ["pgcloud_nb", parts[1]] and parts[1] in client_side:
                wrong.append(f"{mod} -> {target}")
    assert not wrong, wrong


def test_citations_are_the_projects_own(figures: dict[str, str]) -> None:
    found = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), ROOT / "README.md"]:
        if path == Path(__file__):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FOREIGN.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    figures["citations of notes outside the repository or of issue numbers"] = (
        f"{len(found)} (aim: 0)"
    )
    assert not found, "\n".join(found)
    assert (ROOT / "docs" / "api-behaviour.md").is_file()
