"""PostgreSQL sink and CDC source (haive-plugin-postgres) against raw psycopg, same run.

* ``postgres.sink.rows_per_s``: ``PostgresSink(mode="copy").write_batch`` of batches of
  5,000 dict items (rows made from the dicts, one COPY and one transaction per batch) into
  an unlogged table on 127.0.0.1:5432, against ``postgres.baseline_raw_copy.rows_per_s``:
  psycopg's own ``cursor.copy`` of the same dicts as rows (``write_row``) + ``commit`` per
  batch, no pipeline, no bridge. ``postgres.sink.vs_copy`` is ours over it (target >= 0.8).
* ``postgres.sink_upsert.rows_per_s``: the same with ``key="id"`` (COPY into a staging
  table, ``INSERT ... SELECT DISTINCT ON ... ON CONFLICT DO UPDATE``) against the same two
  statements written by hand (``postgres.baseline_raw_upsert.rows_per_s``,
  ``postgres.sink_upsert.vs_raw``).
* ``postgres.cdc.events_per_s``: a StreamingPipeline reading N inserted rows from a
  wal2json slot with ``PostgresCdcSource`` (its defaults: batch_size 1,000, the slot advanced after the
  pipeline handled them) on a server of the bench's own with ``wal_level=logical``, against
  ``postgres.baseline_raw_peek.events_per_s``: psycopg peeking the slot
  (``pg_logical_slot_peek_changes``, the same wal2json options and peek size, 32,000 changes),
  ``orjson.loads`` of every change, its row as a dict by column name (one value read), and
  ``pg_replication_slot_advance`` after each peek.
  ``postgres.cdc.vs_raw`` (target >= 0.8). Skipped where the server binaries or wal2json
  are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any

import orjson
import trio

from bench.recorder import Recorder

DESCRIPTION = "PostgreSQL sink (COPY, upsert) and wal2json CDC source vs raw psycopg"

DSN = "postgresql://postgres@127.0.0.1:5432/test"
SINK_BATCH = 5_000
WAL2JSON = ["format-version", "2", "include-xids", "1", "include-timestamp", "1",
            "include-lsn", "1", "include-transaction", "1", "include-types", "0",
            "actions", "insert,update,delete"]


def _answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


def _items(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "sensor": f"s{i % 100}", "value": i * 0.5, "ok": i % 7 != 0}
            for i in range(n)]


COLUMNS = ("id", "sensor", "value", "ok")


async def _ours_sink(table: str, items: list[dict[str, Any]], key: str | None) -> float:
    from haive_plugin_postgres import PostgresSink

    async with PostgresSink(table, key=key, dsn=DSN, columns=list(COLUMNS)) as sink:
        started = time.perf_counter()
        for start in range(0, len(items), SINK_BATCH):
            await sink.write_batch(items[start : start + SINK_BATCH])
        return len(items) / (time.perf_counter() - started)


def _raw_sink(table: str, items: list[dict[str, Any]], upsert: bool) -> float:
    import psycopg

    with psycopg.connect(DSN) as conn:
        if upsert:
            conn.execute(f"CREATE TEMP TABLE stage ON COMMIT DELETE ROWS AS SELECT id, sensor, "
                         f"value, ok FROM {table} WITH NO DATA")
            conn.execute("ALTER TABLE stage ADD COLUMN seq bigint")
            conn.commit()
        copy_sql = ("COPY stage (id, sensor, value, ok, seq) FROM STDIN" if upsert
                    else f"COPY {table} (id, sensor, value, ok) FROM STDIN")
        merge = (f"INSERT INTO {table} (id, sensor, value, ok) SELECT DISTINCT ON (id) id, "
                 "sensor, value, ok FROM stage ORDER BY id, seq DESC ON CONFLICT (id) DO UPDATE "
                 "SET sensor = EXCLUDED.sensor, value = EXCLUDED.value, ok = EXCLUDED.ok")
        started = time.perf_counter()
        for start in range(0, len(items), SINK_BATCH):
            with conn.cursor() as cursor:
                with cursor.copy(copy_sql) as copy:
                    for seq, item in enumerate(items[start : start + SINK_BATCH]):
                        row = (item["id"], item["sensor"], item["value"], item["ok"])
                        copy.write_row((*row, seq) if upsert else row)
                if upsert:
                    cursor.execute(merge)
            conn.commit()
        return len(items) / (time.perf_counter() - started)


def _sql(dsn: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _bench_sink(rec: Recorder, n: int, runs: int) -> None:
    items = _items(n)
    suffix = uuid.uuid4().hex[:8]
    append, upsert = f"bench_copy_{suffix}", f"bench_upsert_{suffix}"
    _sql(DSN,
         f"CREATE UNLOGGED TABLE {append} (id int, sensor text, value float8, ok bool)",
         f"CREATE UNLOGGED TABLE {upsert} (id int PRIMARY KEY, sensor text, value float8, "
         "ok bool)")
    try:
        ours, raw, ours_up, raw_up = [], [], [], []
        # Best of each; which side goes first alternates (the machine is shared, and a run
        # right after another's writes meets the server's background work).
        for run in range(runs):
            steps = [lambda: ours.append(trio.run(_ours_sink, append, items, None)),
                     lambda: raw.append(_raw_sink(append, items, upsert=False)),
                     lambda: ours_up.append(trio.run(_ours_sink, upsert, items, "id")),
                     lambda: raw_up.append(_raw_sink(upsert, items, upsert=True))]
            order = [0, 1, 2, 3] if run % 2 == 0 else [1, 0, 3, 2]
            for step in order:
                steps[step]()
        a = rec.figure("postgres.sink.rows_per_s", max(ours), "rows/s",
                       f"COPY, {SINK_BATCH:,} per batch and transaction")
        b = rec.figure("postgres.baseline_raw_copy.rows_per_s", max(raw), "rows/s",
                       "psycopg cursor.copy write_row + commit per batch")
        rec.ratio("postgres.sink.vs_copy", a, b)
        a = rec.figure("postgres.sink_upsert.rows_per_s", max(ours_up), "rows/s",
                       "COPY to staging + INSERT ON CONFLICT, per batch")
        b = rec.figure("postgres.baseline_raw_upsert.rows_per_s", max(raw_up), "rows/s",
                       "the same two statements by hand")
        rec.ratio("postgres.sink_upsert.vs_raw", a, b)
    finally:
        _sql(DSN, f"DROP TABLE IF EXISTS {append}", f"DROP TABLE IF EXISTS {upsert}")


# -- CDC: a server of our own with wal_level=logical ------------------------------------------


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class _LogicalServer:
    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="haive-bench-pg-")
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        data = f"{self.root}/data"
        self._run(str(_binary("initdb")), "-D", data, "-U", "postgres", "--auth=trust",
                  "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                   "-c wal_level=logical -c fsync=off -c max_wal_senders=0")
        probe = subprocess.run([*self._prefix(), str(_binary("postgres")), "-D", data, "-C",
                                "output_plugin_libraries"], capture_output=True)
        if probe.returncode == 0:
            options += " -c output_plugin_libraries=pgoutput,wal2json"
        self._run(str(_binary("pg_ctl")), "-D", data, "-l", f"{self.root}/log", "-w",
                  "-o", options, "start")

    def _prefix(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if self.as_postgres else []

    def _run(self, *command: str) -> None:
        subprocess.run([*self._prefix(), *command], check=True, capture_output=True,
                       timeout=120)

    def stop(self) -> None:
        subprocess.run([*self._prefix(), str(_binary("pg_ctl")), "-D", f"{self.root}/data",
                        "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


async def _ours_cdc(dsn: str, slot: str, n: int) -> float:
    from haive_plugin_postgres import PostgresCdcSource

    from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

    pipeline = StreamingPipeline("bench-postgres-cdc")
    pipeline.set_source(PostgresCdcSource(slot, dsn=dsn, tables=["bench_cdc"],
                                          stop_when_drained=True, create_slot=False))
    pipeline.add_processor(lambda change: change.after["value"])
    started = time.perf_counter()
    report = await pipeline.execute()
    elapsed = time.perf_counter() - started
    assert report.processed == n, (report.processed, n)
    return n / elapsed


def _raw_cdc(dsn: str, slot: str, n: int) -> float:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        peek = ("SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, NULL, 32000, "
                + ", ".join(["%s"] * len(WAL2JSON)) + ")")
        done = 0
        started = time.perf_counter()
        while True:
            rows = conn.execute(peek, [slot, *WAL2JSON]).fetchall()
            if not rows:
                break
            last_commit = None
            for lsn, data in rows:
                change = orjson.loads(data)
                if change["action"] == "I":
                    # the row by column name, its value read, as the pipeline does
                    row = {column["name"]: column["value"] for column in change["columns"]}
                    row["value"]
                    done += 1
                elif change["action"] == "C":
                    last_commit = lsn
            if last_commit is not None:
                conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                             (slot, last_commit))
        elapsed = time.perf_counter() - started
    assert done == n, (done, n)
    return n / elapsed


def _bench_cdc(rec: Recorder, n: int, runs: int) -> None:
    if not all(_binary(b) for b in ("initdb", "pg_ctl", "postgres")):
        print("  no PostgreSQL server binaries: postgres.cdc skipped")
        return
    libdir = os.path.join(os.path.dirname(os.path.dirname(str(_binary("initdb")))), "lib")
    if not os.path.exists(os.path.join(libdir, "wal2json.so")):
        print("  wal2json is not installed: postgres.cdc skipped")
        return
    server = _LogicalServer()
    try:
        slots = [f"ours{i}" for i in range(runs)] + [f"raw{i}" for i in range(runs)]
        _sql(server.dsn, "CREATE TABLE bench_cdc (id int PRIMARY KEY, sensor text, "
             "value float8, ok bool)", "ALTER TABLE bench_cdc REPLICA IDENTITY FULL")
        _sql(server.dsn, *[f"SELECT pg_create_logical_replication_slot('{s}', 'wal2json')"
                           for s in slots])
        _sql(server.dsn, *[
            f"INSERT INTO bench_cdc SELECT g, 's' || g % 100, g * 0.5, g % 7 <> 0 "
            f"FROM generate_series({start}, {start + 999}) g"
            for start in range(0, n, 1000)
        ])
        ours, raw = [], []
        for i in range(runs):
            if i % 2:
                raw.append(_raw_cdc(server.dsn, f"raw{i}", n))
            ours.append(trio.run(_ours_cdc, server.dsn, f"ours{i}", n))
            if not i % 2:
                raw.append(_raw_cdc(server.dsn, f"raw{i}", n))
        a = rec.figure("postgres.cdc.events_per_s", max(ours), "events/s",
                       "pipeline, wal2json slot, advanced after handling")
        b = rec.figure("postgres.baseline_raw_peek.events_per_s", max(raw), "events/s",
                       "psycopg peek 32,000 + orjson + row dict + advance, no pipeline")
        rec.ratio("postgres.cdc.vs_raw", a, b)
    finally:
        server.stop()


def run(rec: Recorder) -> None:
    if not _answers():
        print("  no PostgreSQL on 127.0.0.1:5432: postgres skipped")
        return
    runs = 4
    _bench_sink(rec, 20_000 if rec.quick else 200_000, runs)
    _bench_cdc(rec, 10_000 if rec.quick else 100_000, runs)
