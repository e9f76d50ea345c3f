"""haive-plugin-postgres: a PostgreSQL sink (COPY, or COPY + upsert on a key, a transaction
per batch) and a change-data-capture source from a logical replication slot (wal2json).

The names are imported on first use (PEP 562), so plugin discovery does not load psycopg.

Example::

    >>> from haive.dataflow.plugins import get_registry
    >>> get_registry().sink("postgres").__name__, get_registry().source("postgres_cdc").__name__
    ('PostgresSink', 'PostgresCdcSource')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Every public name -> the module of this package defining it.
NAMES: dict[str, str] = {
    "DEFAULT_DSN": "connection",
    "ChangeEvent": "change",
    "MissingUniqueKeyError": "connection",
    "PostgresCdcSource": "source",
    "PostgresCdcSourceStats": "source",
    "PostgresConnectError": "connection",
    "PostgresError": "connection",
    "PostgresSink": "sink",
    "PostgresSinkStats": "sink",
    "PostgresWriteError": "sink",
    "ReplicationSetupError": "slot",
    "UnknownColumnError": "connection",
    "UnknownTableError": "connection",
    "drop_slot": "admin",
}

__all__ = sorted(NAMES)


def __getattr__(name: str) -> Any:
    module = NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'haive_plugin_postgres' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .admin import drop_slot as drop_slot
    from .change import ChangeEvent as ChangeEvent
    from .connection import DEFAULT_DSN as DEFAULT_DSN
    from .connection import MissingUniqueKeyError as MissingUniqueKeyError
    from .connection import PostgresConnectError as PostgresConnectError
    from .connection import PostgresError as PostgresError
    from .connection import UnknownColumnError as UnknownColumnError
    from .connection import UnknownTableError as UnknownTableError
    from .sink import PostgresSink as PostgresSink
    from .sink import PostgresSinkStats as PostgresSinkStats
    from .sink import PostgresWriteError as PostgresWriteError
    from .slot import ReplicationSetupError as ReplicationSetupError
    from .source import PostgresCdcSource as PostgresCdcSource
    from .source import PostgresCdcSourceStats as PostgresCdcSourceStats
