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


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of nodes of ``graph`` that import each other in a circle (Tarjan's strongly connected components)."""
    cycles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:
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
    return cycles


def test_no_module_imports_itself_in_a_circle():
    graph = import_graph()
    # a module's package __init__ re-exporting it is not a circle of code: drop edges from a package to its own modules
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    cycles = circles(graph)
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_check_sees_an_upward_import(tmp_path):
    """The rule above is only worth having if it notices a violation: a lower layer importing the CLI."""
    fake = tmp_path / "stream" / "bad.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from sentiment.cli import main\n")
    known = set(product_modules()) | {"stream.bad"}
    assert imports_of("stream.bad", fake, known) == {"sentiment.cli"}


# stream/ is grouped by job into sub-packages (stream/ingest/, stream/observe/, ...) under a few modules at its top
# (app.py, worker.py, ...) that wire them together: the sub-packages never import each other in a circle, and never
# reach up to a module at the top.


def in_stream_sub_package(module: str) -> bool:
    parts = module.split(".")
    return len(parts) >= 2 and parts[0] == "stream" and (ROOT / "stream" / parts[1]).is_dir()


def stream_part(module: str) -> str:
    """The sub-package of stream/ a module belongs to (``stream.ingest``), or the module itself at the top."""
    return ".".join(module.split(".")[:2]) if in_stream_sub_package(module) else module


def stream_parts_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which sub-packages of stream/ each sub-package imports (a module at the top counts as its own part)."""
    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module.split(".")[0] != "stream":
            continue
        ours = stream_part(module)
        parts.setdefault(ours, set()).update(
            theirs for t in targets if t.split(".")[0] == "stream" and (theirs := stream_part(t)) != ours
        )
    return parts


def reaching_up(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a sub-package of stream/ to a module at stream/'s top (or to the package ``stream`` itself)."""
    return [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if in_stream_sub_package(module)
        for target in sorted(targets)
        if target.split(".")[0] == "stream" and not in_stream_sub_package(target)
    ]


def test_stream_sub_packages_import_each_other_in_no_circle():
    parts = stream_parts_graph(import_graph())
    assert {"stream.ingest", "stream.observe", "stream.web"} <= set(parts), sorted(parts)
    cycles = circles(parts)
    assert not cycles, "sub-packages of stream/ that import each other in a circle:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_stream_sub_package_reaches_up_to_the_top_of_stream():
    upward = reaching_up(import_graph())
    assert not upward, "a sub-package of stream/ importing a module at the top of stream/:\n" + "\n".join(upward)


def test_the_stream_checks_see_a_circle_and_an_arrow_up():
    graph = {
        "stream.app": {"stream.ingest.batch"},
        "stream.ingest.batch": {"stream.observe.metrics"},
        "stream.observe.metrics": {"stream.observe.health"},
        "stream.observe.health": set(),
    }
    assert circles(stream_parts_graph(graph)) == [] and reaching_up(graph) == []
    graph["stream.observe.health"] = {"stream.ingest.topics"}  # observe -> ingest -> observe
    assert circles(stream_parts_graph(graph)) == [["stream.ingest", "stream.observe"]]
    graph["stream.observe.health"] = {"stream.app"}  # up to the top, and a circle through it
    assert reaching_up(graph) == ["stream.observe.health imports stream.app"]
    assert circles(stream_parts_graph(graph)) == [["stream.app", "stream.ingest", "stream.observe"]]
