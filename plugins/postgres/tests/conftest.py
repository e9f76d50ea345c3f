"""Fixtures: fresh tables on the machine's PostgreSQL (127.0.0.1:5432, database ``test``),
and tables and slots on the tests' own server with ``wal_level=logical`` (``logical_server``,
from the plugin's root conftest.py, started once per session on a free port)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

DSN = "postgresql://postgres@127.0.0.1:5432/test"


def execute(dsn: str, *statements: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run statements in autocommit; the rows of the last one."""
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(dsn, autocommit=True) as connection:
        for statement in statements:
            cursor = connection.execute(statement, params)
            rows = cursor.fetchall() if cursor.description else []
    return rows


@pytest.fixture
def table_name() -> Iterator[str]:
    """A unique table name on the machine's server (the test creates it), dropped after."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    execute(DSN, f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def logical(logical_server: Any) -> Iterator[CdcTables]:
    """A fresh source table (REPLICA IDENTITY FULL), output table and slot name on the own
    server; the slot is dropped after the test."""
    tables = CdcTables(logical_server, uuid.uuid4().hex[:10])
    yield tables
    tables.cleanup()


class CdcTables:
    def __init__(self, server: Any, suffix: str) -> None:
        self.server = server
        self.dsn = server.dsn
        self.source = f"src_{suffix}"
        self.output = f"out_{suffix}"
        self.slot = f"slot_{suffix}"
        execute(
            self.dsn,
            f"CREATE TABLE {self.source} (id int PRIMARY KEY, name text, amount numeric, "
            "tags jsonb, updated timestamptz DEFAULT now())",
            f"ALTER TABLE {self.source} REPLICA IDENTITY FULL",
            # Copies written by the pipeline: append-only, so duplicates can be counted.
            f"CREATE TABLE {self.output} (id int, kind text, commit_lsn pg_lsn, xid bigint)",
        )

    def create_slot(self) -> None:
        execute(self.dsn, "SELECT pg_create_logical_replication_slot(%s, 'wal2json')",
                params=(self.slot,))

    def confirmed(self) -> str:
        rows = execute(self.dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                       "WHERE slot_name = %s", params=(self.slot,))
        return str(rows[0][0])

    def cleanup(self) -> None:
        execute(self.dsn,
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s", params=(self.slot,))
        execute(self.dsn, f"DROP TABLE IF EXISTS {self.source}",
                f"DROP TABLE IF EXISTS {self.output}")
