"""Collects figures under stable dotted names and prints them as a table."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs


@attrs.define
class Figure:
    name: str
    value: float
    unit: str
    note: str = ""


@attrs.define
class Recorder:
    """What a benchmark case writes its figures into.

    ``figure("pipeline.5stage.events_per_s", 1.2e6, "events/s")`` records a measurement;
    ``ratio("pipeline.5stage.vs_asyncio", ours, theirs)`` records ours / theirs.
    """

    quick: bool = False
    figures: list[Figure] = attrs.field(factory=list)
    current_case: str = ""

    def figure(self, name: str, value: float, unit: str, note: str = "") -> float:
        self.figures.append(Figure(name, float(value), unit, note))
        print(f"  {name:<55} {_fmt(value):>14} {unit} {note}", flush=True)
        return value

    def ratio(self, name: str, ours: float, baseline: float, note: str = "") -> float:
        value = ours / baseline if baseline else float("inf")
        return self.figure(name, value, "x", note)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": {
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "processor": platform.processor(),
            },
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "figures": {
                f.name: {"value": f.value, "unit": f.unit, "note": f.note} for f in self.figures
            },
        }


def _fmt(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 1e7:
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:.3e}"


def best_of(runs: int, fn: Callable[[], float]) -> float:
    """Run ``fn`` (returning a rate) ``runs`` times and keep the best: less noise from the other core."""
    return max(fn() for _ in range(runs))
