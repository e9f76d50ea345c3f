"""Built-in backpressure strategies: block, drop_oldest, drop_newest, sliding_window."""

from __future__ import annotations

from typing import Any

from ..backpressure import (
    BlockStrategy,
    DropNewestStrategy,
    DropOldestStrategy,
    SlidingWindowStrategy,
)
from ..hookspecs import hookimpl


@hookimpl
def haive_register_backpressure_strategies() -> list[type[Any]]:
    return [BlockStrategy, DropOldestStrategy, DropNewestStrategy, SlidingWindowStrategy]
