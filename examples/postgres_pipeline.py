"""Sensor readings into PostgreSQL: every reading appended by COPY, the latest per sensor
upserted, a bad reading dead-lettered with the server's error.

Two StreamingPipelines read the same readings. The first appends each one to
``readings`` with ``PostgresSink(mode="copy")`` (one COPY and one transaction per batch).
The second keeps one row per sensor in ``latest`` with ``PostgresSink(key="sensor")``:
each batch is COPied into a staging table and merged with ``INSERT ... ON CONFLICT (sensor)
DO UPDATE``, so running it twice changes nothing (idempotent on replay). One reading has a
negative battery level, which a CHECK constraint refuses: the sink finds that row (the rest
of its batch is committed) and the pipeline sends it to its dead-letter sink with the error.

Change data capture (``PostgresCdcSource``) needs a server with ``wal_level=logical`` and
the wal2json plugin; see the plugin's README. Needs PostgreSQL on 127.0.0.1:5432 (user
postgres, database ``test``) and haive-plugin-postgres.
"""

from __future__ import annotations

import os
import uuid

import psycopg
import trio

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.streaming import PostgresSink, StreamingPipeline

DSN = "postgresql://postgres@127.0.0.1:5432/test"
READINGS = 2_000 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 100_000
SENSORS = 50


def readings() -> list[dict[str, object]]:
    batch: list[dict[str, object]] = [
        {"sensor": f"s{i % SENSORS}", "seq": i, "celsius": 20 + (i % 70) / 10, "battery": 100 - i % 90}
        for i in range(READINGS)
    ]
    batch[1234 % READINGS]["battery"] = -3  # refused by the CHECK constraint
    return batch


async def run(name: str, sink: PostgresSink) -> tuple[int, list[dict[str, object]]]:
    dead = MemorySink()
    pipeline = StreamingPipeline(name)
    pipeline.set_source(IterableSource(readings()))
    pipeline.set_sink(sink)
    pipeline.set_dead_letter_sink(dead)
    report = await pipeline.execute()
    return report.processed, dead.items


async def main() -> None:
    suffix = uuid.uuid4().hex[:8]
    readings_table, latest_table = f"readings_{suffix}", f"latest_{suffix}"
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {readings_table} (sensor text, seq int, celsius float8, "
                      "battery int CHECK (battery >= 0), at timestamptz DEFAULT now())")
        admin.execute(f"CREATE TABLE {latest_table} (sensor text PRIMARY KEY, seq int, "
                      "celsius float8, battery int CHECK (battery >= 0))")
    try:
        columns = ["sensor", "seq", "celsius", "battery"]
        appended, dead = await run("append", PostgresSink(readings_table, mode="copy",
                                                          columns=columns, dsn=DSN))
        print(f"appended {appended} readings by COPY; dead-lettered {len(dead)}: "
              f"{dead[0]['error']['message'].splitlines()[0]}")
        for attempt in ("first run", "replay"):
            sink = PostgresSink(latest_table, key="sensor", dsn=DSN)
            await run("latest", sink)
            print(f"latest per sensor, {attempt}: {sink.stats.written} rows upserted in "
                  f"{sink.stats.batches} transactions")
        with psycopg.connect(DSN) as conn:
            stored = conn.execute(f"SELECT count(*) FROM {readings_table}").fetchone()
            latest = conn.execute(f"SELECT count(*), max(seq) FROM {latest_table}").fetchone()
        assert stored == (READINGS - 1,), stored
        assert latest == (SENSORS, READINGS - 1), latest
        print(f"{readings_table}: {stored[0]} rows; {latest_table}: {latest[0]} sensors, "
              f"newest reading {latest[1]}")
    finally:
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(f"DROP TABLE IF EXISTS {readings_table}")
            admin.execute(f"DROP TABLE IF EXISTS {latest_table}")


if __name__ == "__main__":
    trio.run(main)
