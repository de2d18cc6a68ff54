"""The import graph between leanseg, kernels3d and pipelines, read statically from the source.

Every ``import`` and ``from ... import`` counts, at module level or inside a function (a lazy import is still an
arrow), and so does ``import_module("...")`` with a literal name. Arrows go to the module named: ``from a.b
import c`` points to ``a.b.c`` when that is a module, else to ``a.b``. Importing a submodule also runs its
package's ``__init__``, but that is not counted as an arrow: otherwise every package with submodules that import
each other through it would be a cycle, and the arrows would say nothing about how the code is layered.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("leanseg", "kernels3d", "pipelines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _called(call: ast.Call) -> str | None:
    """The called name: ``f(...)`` -> f, ``m.f(...)`` -> f."""
    return getattr(call.func, "id", getattr(call.func, "attr", None))


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of ours that ``path`` (module ``name``) imports, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_pkg else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Call) and _called(node) == "import_module" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                targets = [first.value]
        for target in targets:
            while target and target not in known:  # `import a.b.c` where only a.b is ours, etc.
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def module_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dsts in module_graph().items():
        for dst in dsts:
            a, b = src.split(".")[0], dst.split(".")[0]
            if a != b:
                graph[a].add(b)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def test_the_graph_sees_lazy_and_string_imports():
    """The walker itself: function-level imports and import_module literals are arrows."""
    graph = module_graph()
    assert "kernels3d.fused" in graph["leanseg.nn.backend"]  # a lazy import inside the dispatcher
    assert "kernels3d.reference" in graph["leanseg.nn.functional"]
    assert "leanseg.cli.predict_cmd" in graph["leanseg.cli.main"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kernels3d_is_a_leaf():
    graph = module_graph()
    up = {src: sorted(d for d in dsts if not d.startswith("kernels3d"))
          for src, dsts in graph.items() if src.startswith("kernels3d")}
    assert {src: d for src, d in up.items() if d} == {}, "kernels3d must import nothing from leanseg or pipelines"


def test_cli_main_and_commands_have_no_cycle():
    graph = module_graph()
    cli = {src: {d for d in dsts if d.startswith("leanseg.cli")} for src, dsts in graph.items()
           if src.startswith("leanseg.cli")}
    assert cycles(cli) == []
    commands = [m for m in cli if m not in ("leanseg.cli", "leanseg.cli.main")]
    assert commands and all("leanseg.cli.main" not in graph[m] for m in commands)


def test_no_module_cycle_inside_leanseg():
    graph = module_graph()
    inside = {src: {d for d in dsts if d.startswith("leanseg")} for src, dsts in graph.items()
              if src.startswith("leanseg")}
    assert cycles(inside) == []


def test_leanseg_imports_nothing_from_pipelines():
    assert "pipelines" not in package_graph().get("leanseg", set())
    assert cycles(package_graph()) == []
