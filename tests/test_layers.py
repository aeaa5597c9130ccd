"""The layer rule of the architecture page (docs/architecture.md), checked on the source: an import only ever points down.

    sentiment/   the command line, the demo, local services      (top: nothing imports it)
    stream/      the worker's parts and its Faust wiring
    training/    the training pipeline and the data files          (stream and training never import each other)
    model/       what serving needs to score a text
    schemas/     the events' contract
    core/        settings, the user-error type, small helpers      (bottom: imports nothing of the project)

Every import counts, also one inside a function (a lazy import is still an arrow). Within a package, modules may
import each other, but never in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Which packages each package may import (besides itself).
MAY_IMPORT = {
    "core": set(),
    "schemas": {"core"},
    "model": {"core", "schemas"},
    "training": {"core", "schemas", "model"},
    "stream": {"core", "schemas", "model"},
    "sentiment": {"core", "schemas", "model", "training", "stream"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in MAY_IMPORT
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``name`` imports, resolved to the longest known module name."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            parts = target.split(".")
            for cut in range(len(parts), 0, -1):
                candidate = ".".join(parts[:cut])
                if candidate in known:
                    if candidate != name:
                        found.add(candidate)
                    break
    return found


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def test_imports_only_point_down():
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if (theirs := target.split(".")[0]) != (ours := module.split(".")[0]) and theirs not in MAY_IMPORT[ours]
    ]
    assert not upward, "imports that point up or sideways (see the architecture page (docs/architecture.md)):\n" + "\n".join(
        upward
    )


def test_no_module_imports_itself_in_a_circle():
    graph = import_graph()
    # a module's package __init__ re-exporting it is not a circle of code: drop edges from a package to its own modules
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    cycles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_check_sees_an_upward_import(tmp_path):
    """The rule above is only worth having if it notices a violation: a lower layer importing the CLI."""
    fake = tmp_path / "stream" / "bad.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from sentiment.cli import main\n")
    known = set(product_modules()) | {"stream.bad"}
    assert imports_of("stream.bad", fake, known) == {"sentiment.cli"}
