"""Cold import time of the path users take, next to ``import trio`` alone.

Each figure is a fresh interpreter (``python -X importtime -c "import X"``): the cumulative
time ``-X importtime`` reports for the top-level module, best of N runs (the machine is
shared), and how many modules the import loaded beyond a bare interpreter. Measured:

* ``import haive.dataflow.streaming`` (target: at most 80 ms) and ``import haive.dataflow``:
  names resolve lazily (PEP 562), so these load only the facades;
* ``from haive.dataflow.streaming import EventPipeline, FilterNode, TransformNode``: the
  README's first example, which loads trio and the runtime;
* ``import trio`` alone, the floor of anything that runs a pipeline.

The interpreter's own start-up (``site``, encodings) is not counted: every figure is the
cumulative time of the statement's top-level modules.
"""

from __future__ import annotations

import re
import subprocess
import sys

from bench.recorder import Recorder

DESCRIPTION = "cold import time of haive.dataflow.streaming (target <= 80 ms) vs import trio"

CASES: dict[str, str] = {
    "streaming": "import haive.dataflow.streaming",
    "package": "import haive.dataflow",
    "readme_names": "from haive.dataflow.streaming import EventPipeline, FilterNode, TransformNode",
    "trio": "import trio",
}

_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")
_COUNT = (
    "import sys; before = set(sys.modules); {statement}; "
    "print(len(set(sys.modules) - before))"
)


def measure(statement: str) -> tuple[float, int]:
    """(cumulative ms of the statement's top-level imports, modules it loaded), cold."""
    # Modules loaded by interpreter start-up are measured by a bare run and left out.
    baseline = _imported(subprocess_importtime("pass"))
    cumulative_us = 0
    for depth, module, total in _entries(subprocess_importtime(statement)):
        if depth == 0 and module not in baseline:
            cumulative_us += total
    count = int(
        subprocess.run(
            [sys.executable, "-c", _COUNT.format(statement=statement)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    return cumulative_us / 1000, count


def subprocess_importtime(statement: str) -> str:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
    ).stderr


def _entries(stderr: str) -> list[tuple[int, str, int]]:
    entries = []
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if match:
            _self, total, indent, module = match.groups()
            entries.append(((len(indent) - 1) // 2, module, int(total)))
    return entries


def _imported(stderr: str) -> set[str]:
    return {module for _depth, module, _total in _entries(stderr)}


def run(rec: Recorder) -> None:
    runs = 3 if rec.quick else 7
    for name, statement in CASES.items():
        timings = [measure(statement) for _ in range(runs)]
        best_ms = min(ms for ms, _count in timings)
        modules = timings[0][1]
        rec.figure(f"imports.{name}.ms", best_ms, "ms", f"best of {runs}: {statement}")
        rec.figure(f"imports.{name}.modules", modules, "modules")
