"""The READMEs' Python blocks run: what a reader copies works.

Every fenced ``python`` block of the repository README and of each distribution's README is
one of:

* a doctest (``>>>`` lines): run, its output compared;
* a script: run on its own in a fresh interpreter, in an empty folder, against the real
  services (Redis on 127.0.0.1:6379); it must exit 0;
* a fragment, marked by the line ``<!-- fragment: why it cannot run alone -->`` right above the
  fence (it needs a cluster, a remote host, a server running forever...): it must compile
  (top-level ``await`` allowed) and every name it imports from ``haive`` must exist.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
READMES = [
    ROOT / "README.md",
    ROOT / "core" / "README.md",
    *sorted(ROOT.glob("plugins/*/README.md")),
    *sorted(ROOT.glob("contrib/*/README.md")),
]
FENCE = re.compile(r"^```(\w*)")
FRAGMENT = re.compile(r"^<!-- fragment: (.+\S) -->$")


@attrs.frozen
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    fragment: str | None  # why it cannot run alone, or None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def is_doctest(self) -> bool:
        return any(line.lstrip().startswith(">>> ") for line in self.code.splitlines())


def python_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        if opening.group(1) == "python":
            above = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            marked = FRAGMENT.match(above.strip())
            code = "\n".join(lines[index + 1 : end]) + "\n"
            blocks.append(Block(path, index + 1, code, marked.group(1) if marked else None))
        index = end + 1
    return blocks


BLOCKS = [block for path in READMES for block in python_blocks(path)]
DOCTESTS = [b for b in BLOCKS if b.is_doctest]
SCRIPTS = [b for b in BLOCKS if not b.is_doctest and b.fragment is None]
FRAGMENTS = [b for b in BLOCKS if not b.is_doctest and b.fragment is not None]


def test_the_readmes_have_python_blocks() -> None:
    assert len(BLOCKS) >= 10 and DOCTESTS and SCRIPTS and FRAGMENTS


@pytest.mark.parametrize("block", DOCTESTS, ids=[b.id for b in DOCTESTS])
def test_doctest_block(block: Block) -> None:
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    test = doctest.DocTestParser().get_doctest(block.code, {}, block.id, str(block.path), 0)
    assert test.examples
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=flags)
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)


@pytest.mark.parametrize("block", SCRIPTS, ids=[b.id for b in SCRIPTS])
def test_script_block(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "readme_block.py"
    script.write_text(block.code)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, f"{block.id}:\n{block.code}\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("block", FRAGMENTS, ids=[b.id for b in FRAGMENTS])
def test_fragment_block_compiles_and_its_imports_exist(block: Block) -> None:
    tree = compile(block.code, block.id, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("haive"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{block.id}: {node.module}.{alias.name}"
