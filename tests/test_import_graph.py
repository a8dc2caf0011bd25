"""The package's layout: no import cycle among binclf's modules (top-level imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import binclf

SRC = Path(binclf.__file__).resolve().parent.parent


def _import_graph() -> dict[str, set[str]]:
    """``module -> binclf modules it imports at top level`` (``if TYPE_CHECKING:`` blocks excluded)."""
    mods = {}
    for f in (SRC / "binclf").rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.parse(f.read_text()).body:
            body = node.body if isinstance(node, ast.Try) else [node]
            for n in body:
                if isinstance(n, ast.Import):
                    targets = [a.name for a in n.names]
                elif isinstance(n, ast.ImportFrom) and not n.level:
                    targets = [n.module or ""] + [f"{n.module}.{a.name}" for a in n.names]
                else:
                    continue
                for t in targets:
                    r = resolve(t) if t.startswith("binclf") else None
                    if r and r != m and not m.startswith(r + "."):
                        graph[m].add(r)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_import_cycle_among_binclf_modules():
    graph = _import_graph()
    assert len(graph) > 50 and graph["binclf.train.pipeline"]  # the walk found the package
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
