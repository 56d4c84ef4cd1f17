"""The package's shape (issue 14): the import graph of ``hybrid/`` has no cycle, and only the
front ends (the stages themselves, with the public API among them, and the CLI) import
``hybrid.stages``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "hybrid"
FRONT_ENDS = ("hybrid.stages", "hybrid.cli", "hybrid.__main__")   # the API is hybrid.stages.api


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the hybrid modules it imports, at module level or inside functions;
    ``from pkg import sub`` counts as importing pkg.sub, not pkg's __init__."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module \
                    and node.module.startswith("hybrid"):
                subs = [f"{node.module}.{a.name}" for a in node.names
                        if f"{node.module}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else subs + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("hybrid")]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and graph["hybrid.stages.predict"]   # the graph is read, not empty
    assert cycles(graph) == []


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_front_ends_import_the_stages():
    upward = sorted((a, b) for a, targets in import_graph().items() for b in targets
                    if b.startswith("hybrid.stages") and not a.startswith(FRONT_ENDS))
    assert upward == []


FAMILY_WORDS = re.compile(r"\bflow\b|navier|vorticity|\bis_flow\b|stokes", re.IGNORECASE)


def test_the_stages_are_the_same_for_every_family():
    """Issue 14: a stage asks the case's problem family (``hybrid.problems.problem_for``) for
    what differs between families, so no stage file names the flow family, and no stage imports
    a family's module (only the plug-in protocol and its chooser)."""
    stages = sorted((PACKAGE / "stages").glob("*.py"))
    assert len(stages) >= 8
    named = {p.name: FAMILY_WORDS.findall(p.read_text()) for p in stages}
    assert {k: v for k, v in named.items() if v} == {}
    families = sorted((a, b) for a, targets in import_graph().items() for b in targets
                      if a.startswith("hybrid.stages") and b.startswith("hybrid.problems.")
                      and b != "hybrid.problems.base")
    assert families == []
    # the check itself: the family's module does name it
    assert FAMILY_WORDS.search((PACKAGE / "problems" / "flow.py").read_text())
