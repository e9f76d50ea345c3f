"""The public facades (``haive.dataflow``, ``haive.dataflow.streaming``) are cheap to import:
names resolve on first use from static tables, which must stay true to the code."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import haive.dataflow
from haive.dataflow import streaming

FACADES = {
    "haive.dataflow": (Path(haive.dataflow.__file__), haive.dataflow.NAMES),
    "haive.dataflow.streaming": (Path(streaming.__file__), streaming.CORE_NAMES),
}


def _loaded_after(statement: str) -> list[str]:
    code = (
        "import sys\n"
        f"{statement}\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout.split()


@pytest.mark.parametrize("facade", sorted(FACADES))
def test_every_name_of_the_table_resolves_to_where_the_table_says(facade: str) -> None:
    module = importlib.import_module(facade)
    _path, names = FACADES[facade]
    for name, where in names.items():
        defining = importlib.import_module(f"haive.dataflow.{where}")
        assert getattr(module, name) is getattr(defining, name), name
    assert set(module.__all__) <= set(names)


@pytest.mark.parametrize("facade", sorted(FACADES))
def test_type_checkers_see_the_same_names(facade: str) -> None:
    path, names = FACADES[facade]
    seen: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.level == 1
                for alias in stmt.names:
                    seen[alias.asname or alias.name] = stmt.module or ""
    assert seen == names


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        haive.dataflow.NoSuchThing
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        streaming.NoSuchThing


def test_importing_the_facades_loads_no_runtime() -> None:
    loaded = _loaded_after("import haive.dataflow.streaming")
    ours = [m for m in loaded if m.startswith("haive.")]
    assert ours == ["haive.dataflow", "haive.dataflow.errors", "haive.dataflow.streaming"]
    assert "trio" not in loaded


def test_the_readme_names_load_the_runtime_not_reactive_or_state() -> None:
    loaded = _loaded_after(
        "from haive.dataflow.streaming import EventPipeline, FilterNode, TransformNode"
    )
    assert "haive.dataflow.pipelines.event_pipeline" in loaded
    unwanted = [
        m
        for m in loaded
        if m.startswith(("haive.dataflow.reactive", "haive.dataflow.state", "haive_plugin"))
    ]
    assert unwanted == []
