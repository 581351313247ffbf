"""The package's import structure: no import cycle anywhere (module level, in functions or under TYPE_CHECKING),
and lower layers never import higher ones.

Read from the source with :mod:`ast` (nothing is imported), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import m3search

ROOT = Path(m3search.__file__).parent

# Lowest first; a module may import its own layer and the ones before it. A new top-level module or package must be
# placed here (the test names it). ingest/ and finetune/ are listed before they exist.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("errors", "types", "settings", "limits", "validation", "_optional", "memory", "lazy",
                    "locks")),
    ("models", ("models", "llm")),
    ("store", ("store",)),
    ("ingest", ("ingest",)),
    ("retrieval", ("retrieval",)),
    ("finetune", ("finetune",)),
    # "": the package façade m3search/__init__
    ("interfaces", ("cli", "server", "integrations", "testing", "__main__", "")),
]
RANK = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    assert top in RANK, f"{module} is in no layer: place '{top}' in LAYERS of {__file__}"
    return RANK[top]


def test_cycle_finder_finds_a_loop() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_lower_layers_never_import_higher_ones() -> None:
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            if target == "m3search" and _only_version(module):
                continue  # the version string is a fact every layer may read
            if layer(target) > layer(module):
                upward.append(f"{module} -> {target}")
    assert upward == []


def _only_version(module: str) -> bool:
    """Whether ``module`` imports nothing from the package façade but ``__version__``."""
    path = ROOT.parent.joinpath(*module.split("."))
    source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text(encoding="utf-8")
    names = [alias.name for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.ImportFrom) and node.module == "m3search" for alias in node.names]
    return set(names) == {"__version__"}
