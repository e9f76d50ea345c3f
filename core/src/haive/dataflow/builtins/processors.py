"""Built-in processors: filter, transform and aggregate nodes."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from ..nodes import AggregateNode, FilterNode, TransformNode


@hookimpl
def haive_register_processors() -> list[type[Any]]:
    return [FilterNode, TransformNode, AggregateNode]
