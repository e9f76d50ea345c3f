"""Built-in backpressure strategies: block, drop_oldest, drop_newest, sliding_window."""

from __future__ import annotations

from typing import Any

from ..plugins.hookspecs import hookimpl
from ..runtime.backpressure import (
    BlockStrategy,
    DropNewestStrategy,
    DropOldestStrategy,
    SlidingWindowStrategy,
)


@hookimpl
def haive_register_backpressure_strategies() -> list[type[Any]]:
    return [BlockStrategy, DropOldestStrategy, DropNewestStrategy, SlidingWindowStrategy]
