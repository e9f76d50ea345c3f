"""Housekeeping for change data capture: dropping a replication slot no longer read."""

from __future__ import annotations

from typing import Any

from haive.dataflow.runtime.bridge import open_thread_bridge

from .connection import DEFAULT_DSN, close_quietly, connect


def _drop(dsn: str, slot: str) -> bool:
    connection = connect(dsn, autocommit=True, connect_timeout=10,
                         application_name="haive-postgres-admin")
    try:
        row: Any = connection.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s", (slot,)
        ).fetchone()
        return row is not None
    finally:
        close_quietly(connection)


async def drop_slot(slot: str, dsn: str = DEFAULT_DSN) -> bool:
    """Drop the replication slot ``slot`` (a slot holds back the WAL it has not passed, so
    one that nobody reads fills the server's disk). Returns whether it existed.

    Example::

        >>> import trio
        >>> trio.run(drop_slot, "no_such_slot", "postgresql://postgres@127.0.0.1:5432/test")
        False
    """
    async with open_thread_bridge(name="postgres-admin") as bridge:
        return await bridge.run(_drop, dsn, slot)
