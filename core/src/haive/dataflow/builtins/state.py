"""Built-in state: the memory and SQLite backends, datetime conversion, the windowed node."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    import cattrs


@hookimpl
def haive_register_state_backends() -> list[type[Any]]:
    from ..state.memory import MemoryStateBackend
    from ..state.sqlite import SQLiteStateBackend

    return [MemoryStateBackend, SQLiteStateBackend]


def _structure_datetime(value: Any, _: type[Any]) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    raise TypeError(f"expected an ISO 8601 datetime string, got {type(value).__name__} {value!r}")


def _structure_date(value: Any, _: type[Any]) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value)
    raise TypeError(f"expected an ISO 8601 date string, got {type(value).__name__} {value!r}")


@hookimpl
def haive_configure_converter(converter: cattrs.Converter) -> None:
    # Stored state (sessions' last_activity...) holds datetimes: ISO 8601 on the wire.
    converter.register_unstructure_hook(dt.datetime, dt.datetime.isoformat)
    converter.register_structure_hook(dt.datetime, _structure_datetime)
    converter.register_unstructure_hook(dt.date, dt.date.isoformat)
    converter.register_structure_hook(dt.date, _structure_date)


@hookimpl
def haive_register_processors() -> list[type[Any]]:
    from ..state.join_node import JoinNode
    from ..state.table_join import TableJoinNode
    from ..state.windows import WindowedAggregateNode

    return [WindowedAggregateNode, JoinNode, TableJoinNode]
