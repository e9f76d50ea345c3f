"""The core's layers (docs/architecture.md), checked on the source: no import cycles at run
time and no import from a layer above.

Every import statement of every module of ``haive.dataflow`` counts, also those inside
functions (they run too, only later); imports under ``if TYPE_CHECKING:`` do not (they never
run). Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` (unless the importer is itself
inside ``a.b``), so that package counts as imported too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import haive.dataflow

PACKAGE = "haive.dataflow"
ROOT = Path(haive.dataflow.__file__).parent

#: Bottom to top. A module may import from its own layer and the layers before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("errors", ("haive.dataflow.errors",)),
    ("plugin system", ("haive.dataflow.plugins",)),
    ("runtime", ("haive.dataflow.runtime",)),
    ("io", ("haive.dataflow.io",)),
    ("state", ("haive.dataflow.state",)),
    ("parallel", ("haive.dataflow.parallel",)),
    ("pipelines", ("haive.dataflow.pipelines",)),
    ("reactive", ("haive.dataflow.reactive",)),
    ("built-in plugins", ("haive.dataflow.builtins",)),
    ("cli", ("haive.dataflow.cli",)),
    ("public facades", ("haive.dataflow", "haive.dataflow.streaming")),
)


def module_name(path: Path, root: Path = ROOT) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join([PACKAGE, *parts]), is_package


def all_modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name, is_package = module_name(path, root)
        modules[name] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def run_time_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: anywhere, except under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from run_time_imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from run_time_imports(node)


def imported_modules(
    name: str, is_package: bool, tree: ast.AST, known: set[str]
) -> set[str]:
    """The modules of the package that ``name`` runs by importing (packages included)."""
    targets: set[str] = set()
    for node in run_time_imports(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        targets.add(module)
        # `from package import submodule` imports the submodule.
        targets.update(f"{module}.{alias.name}" for alias in node.names)
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    if is_package:
        own_packages.add(name)
    found: set[str] = set()
    for target in targets:
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            prefix = ".".join(parts[:i])
            # Importing a.b.c runs a.b's __init__ too, unless the importer is inside a.b.
            if prefix in known and prefix not in own_packages and prefix != name:
                found.add(prefix)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = all_modules(root)
    known = set(modules)
    return {
        name: imported_modules(name, is_package, ast.parse(path.read_text()), known)
        for name, (path, is_package) in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    best, best_length = -1, -1
    for position, (_title, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            # the facade `haive.dataflow` is only the package's own __init__
            if prefix == PACKAGE and module != PACKAGE:
                inside = False
            if inside and len(prefix) > best_length:
                best, best_length = position, len(prefix)
    return best


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, imported in sorted(graph.items()):
        own = layer_of(module)
        for target in sorted(imported):
            if layer_of(target) > own:
                problems.append(
                    f"{module} ({LAYERS[own][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                )
    return problems


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in import_graph() if layer_of(name) < 0]
    assert unplaced == [], f"add these modules' package to LAYERS: {unplaced}"


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_each_layer_imports_only_from_below() -> None:
    assert layer_violations(import_graph()) == []


# -- the checker itself ----------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_cycles_through_function_imports_and_package_inits(
    tmp_path: Path,
) -> None:
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "runtime/__init__.py": "",
            "runtime/nodes.py": "def run():\n    from ..parallel.runner import go\n",
            "parallel/__init__.py": "from .runner import go\n",
            "parallel/runner.py": "from ..runtime import nodes\n",
            "cli/__init__.py": "",
            "cli/main.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from .demo import x\n"
            ),
            "cli/demo.py": "from .main import y\n",
        },
    )
    graph = import_graph(root)
    assert graph["haive.dataflow.runtime.nodes"] == {
        "haive.dataflow.parallel",
        "haive.dataflow.parallel.runner",
    }
    assert graph["haive.dataflow.cli.main"] == set()  # TYPE_CHECKING only
    assert cycles(graph) == [
        [
            "haive.dataflow.parallel",
            "haive.dataflow.parallel.runner",
            "haive.dataflow.runtime.nodes",
        ]
    ]
    assert layer_violations(graph) == [
        "haive.dataflow.runtime.nodes (runtime) imports haive.dataflow.parallel (parallel)",
        "haive.dataflow.runtime.nodes (runtime) imports haive.dataflow.parallel.runner (parallel)",
    ]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("haive.dataflow", "public facades"),
        ("haive.dataflow.streaming", "public facades"),
        ("haive.dataflow.errors", "errors"),
        ("haive.dataflow.runtime.nodes", "runtime"),
        ("haive.dataflow.state", "state"),
    ],
)
def test_layer_of(module: str, layer: str) -> None:
    assert LAYERS[layer_of(module)][0] == layer
