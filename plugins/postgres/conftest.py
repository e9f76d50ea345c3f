"""The plugin's own PostgreSQL server with ``wal_level=logical`` (change data capture
needs it; the machine's server runs with the default), started once per session on a free
port, for the tests and for the doctests of the CDC source (``logical_dsn``)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest


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


@pytest.fixture(autouse=True)
def _logical_dsn_for_doctests(request: pytest.FixtureRequest,
                              doctest_namespace: dict[str, Any]) -> None:
    """The CDC source's doctest gets ``logical_dsn``: a database on the own server."""
    node = request.node
    if type(node).__name__ == "DoctestItem" and "PostgresCdcSource" in node.name:
        server = request.getfixturevalue("logical_server")
        doctest_namespace["logical_dsn"] = server.dsn
