"""Fixtures: fresh tables on the machine's PostgreSQL (127.0.0.1:5432, database ``test``),
and a PostgreSQL server of the tests' own with ``wal_level=logical`` (for change data
capture and restarts), started once per session on a free port."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return path


class PostgresServer:
    """A PostgreSQL instance of the tests' own: ``wal_level=logical``, trust auth on
    127.0.0.1, a free port, its data in a temporary directory. initdb refuses to run as
    root, so as root every server command runs as the ``postgres`` user."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="haive-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._run(_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync")
        options = " ".join([
            "-c listen_addresses=127.0.0.1", f"-p {self.port}", f"-k {self.root}",
            "-c wal_level=logical", "-c max_replication_slots=20", "-c max_wal_senders=0",
            "-c fsync=off", "-c full_page_writes=off",
            "-c shared_buffers=32MB",
        ])
        if self._knows("output_plugin_libraries"):
            # Servers with this setting (Debian's 15.19 and later) allow only the listed
            # logical decoding plugins.
            options += " -c output_plugin_libraries=pgoutput,test_decoding,wal2json"

        self._options = options
        self.start()

    def _knows(self, setting: str) -> bool:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        probe = subprocess.run([*prefix, _binary("postgres"), "-D", str(self.data), "-C", setting],
                               capture_output=True, timeout=60)
        return probe.returncode == 0

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        subprocess.run([*prefix, *command], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=120)

    def _ctl(self, action: str, *args: str) -> None:
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", "60", *args, action)

    def start(self) -> None:
        self._ctl("start", "-o", self._options)
        self._wait()

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: connections are cut, the slots' state is kept."""
        self._ctl("restart", "-m", "fast", "-o", self._options)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: see {self.log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        try:
            self._ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def logical_server() -> Iterator[PostgresServer]:
    """The tests' own server with wal_level=logical, started once for the session."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def logical(logical_server: PostgresServer) -> Iterator[CdcTables]:
    """A fresh source table (REPLICA IDENTITY FULL), output table and slot name on the own
    server; the slot is dropped after the test."""
    tables = CdcTables(logical_server, uuid.uuid4().hex[:10])
    yield tables
    tables.cleanup()


class CdcTables:
    def __init__(self, server: PostgresServer, suffix: str) -> None:
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
