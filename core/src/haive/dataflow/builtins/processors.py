"""Built-in processors: filter, transform and aggregate nodes."""

from __future__ import annotations

from typing import Any

from ..plugins.hookspecs import hookimpl
from ..runtime.nodes import AggregateNode, FilterNode, TransformNode


@hookimpl
def haive_register_processors() -> list[type[Any]]:
    return [FilterNode, TransformNode, AggregateNode]
