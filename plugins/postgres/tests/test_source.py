"""PostgresCdcSource against a PostgreSQL server of the tests' own (wal_level=logical)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import trio
from haive_plugin_postgres import (
    ChangeEvent,
    PostgresCdcSource,
    PostgresSink,
    drop_slot,
)
from haive_plugin_postgres.slot import ReplicationSetupError

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.errors import ConfigError, NodeError
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

from .conftest import DSN, CdcTables, execute

pytestmark = pytest.mark.postgres_server


def source_of(cdc: CdcTables, **options: Any) -> PostgresCdcSource:
    options.setdefault("stop_when_drained", True)
    return PostgresCdcSource(cdc.slot, dsn=cdc.dsn, tables=[cdc.source], **options)


async def run(source: PostgresCdcSource, sink: StreamSink | None = None) -> MemorySink:
    memory = MemorySink()
    pipeline = StreamingPipeline("cdc")
    pipeline.set_source(source)
    pipeline.set_sink(sink or memory)
    with trio.fail_after(60):
        await pipeline.execute()
    return memory


async def test_inserts_updates_and_deletes_with_before_and_after_images(logical):
    logical.create_slot()
    started = datetime.now(UTC).timestamp()
    execute(logical.dsn,
            f"INSERT INTO {logical.source} (id, name, amount, tags) VALUES "
            "(1, 'ada', 10.5, '{\"vip\": true}'), (2, 'bo', 3, NULL)",
            f"UPDATE {logical.source} SET amount = 12 WHERE id = 1",
            f"DELETE FROM {logical.source} WHERE id = 2")
    events: list[ChangeEvent] = (await run(source_of(logical))).items
    assert [(e.kind, e.table, e.schema) for e in events] == [
        ("insert", logical.source, "public"), ("insert", logical.source, "public"),
        ("update", logical.source, "public"), ("delete", logical.source, "public"),
    ]
    first, _, update, delete = events
    assert first.before is None
    assert first.after is not None and first.after["name"] == "ada"
    assert first.after["tags"] == '{"vip": true}' and Decimal(str(first.after["amount"])) == Decimal("10.5")
    assert update.before is not None and update.after is not None
    assert (update.before["amount"], update.after["amount"]) == (10.5, 12)
    assert update.before["name"] == update.after["name"] == "ada"
    assert delete.after is None and delete.before is not None and delete.before["name"] == "bo"
    assert events[0].xid == events[1].xid != update.xid != delete.xid
    assert events[0].commit_lsn == events[1].commit_lsn < update.commit_lsn
    assert started - 5 < update.timestamp < datetime.now(UTC).timestamp() + 5
    assert update.commit_time.tzinfo is UTC
    # every change is written: the slot is past the last transaction
    assert logical.confirmed() == delete.commit_lsn


async def test_the_slot_is_created_and_a_restart_resumes_where_the_last_run_stopped(logical):
    source = source_of(logical)
    assert (await run(source)).items == []  # creates the slot: changes from now on
    execute(logical.dsn, f"INSERT INTO {logical.source} (id) SELECT g FROM generate_series(1, 300) g")
    first = await run(source_of(logical, batch_size=64))
    execute(logical.dsn, f"INSERT INTO {logical.source} (id) SELECT g FROM generate_series(301, 500) g")
    second = await run(source_of(logical, batch_size=64))
    ids = [e.after["id"] for e in first.items] + [e.after["id"] for e in second.items]
    assert ids == list(range(1, 501))  # 0 lost, 0 twice


class FailingSink(StreamSink):
    """Writes nothing: every batch fails, as a database that refuses writes would."""

    PLUGIN_NAME = "failing"

    async def write_batch(self, items: list[Any]) -> None:
        raise RuntimeError("the output database is down")


async def test_the_slot_does_not_move_when_the_sink_fails(logical):
    logical.create_slot()
    before = logical.confirmed()
    execute(logical.dsn, f"INSERT INTO {logical.source} (id) SELECT g FROM generate_series(1, 50) g")
    with pytest.raises(NodeError, match="the output database is down"):
        await run(source_of(logical), FailingSink())
    assert logical.confirmed() == before
    again = await run(source_of(logical))
    assert [e.after["id"] for e in again.items] == list(range(1, 51))


async def test_reading_is_bounded_by_batch_size_and_large_transactions_are_whole(logical):
    logical.create_slot()
    execute(logical.dsn,
            f"INSERT INTO {logical.source} (id) SELECT g FROM generate_series(1, 2000) g")
    source = source_of(logical, batch_size=100, ack_every=300)
    sizes: list[int] = []
    async with source:
        async for batch in source.batches(10_000):
            sizes.append(len(batch))
            if not batch:
                await source.acknowledge(source._pending)
    assert sum(sizes) == 2000 and max(sizes) == 100
    # one transaction: the slot moves only once all of it is acknowledged
    assert source.stats.advances == 1 and source.stats.transactions == 1


async def test_pipeline_into_the_postgres_sink_upserts_the_latest_rows(logical):
    logical.create_slot()
    execute(logical.dsn, f"CREATE TABLE {logical.output}_m (id int PRIMARY KEY, name text)")
    try:
        execute(logical.dsn,
                f"INSERT INTO {logical.source} (id, name) VALUES (1, 'a'), (2, 'b')",
                f"UPDATE {logical.source} SET name = 'c' WHERE id = 1")
        pipeline = StreamingPipeline("mirror")
        pipeline.set_source(source_of(logical))
        pipeline.add_processor(lambda change: change.row)
        pipeline.set_sink(PostgresSink(f"{logical.output}_m", key="id",
                                       columns=["id", "name"], dsn=logical.dsn))
        await pipeline.execute()
        assert execute(logical.dsn, f"SELECT * FROM {logical.output}_m ORDER BY id") == [
            (1, "c"), (2, "b")]
    finally:
        execute(logical.dsn, f"DROP TABLE {logical.output}_m")


async def test_a_failed_change_without_dead_letter_sink_stops_the_run_before_the_slot(logical):
    logical.create_slot()
    before = logical.confirmed()
    execute(logical.dsn, f"INSERT INTO {logical.source} (id) VALUES (1), (2)")

    def explode(change: ChangeEvent) -> object:
        if change.after and change.after["id"] == 2:
            raise ValueError("cannot price it")
        return change

    pipeline = StreamingPipeline("cdc")
    pipeline.set_source(source_of(logical))
    pipeline.add_processor(explode)
    pipeline.set_sink(MemorySink())
    with pytest.raises(NodeError, match=r"PostgresError: .* no dead-letter sink"):
        await pipeline.execute()
    assert logical.confirmed() == before


async def test_setup_errors_are_clear(logical):
    execute(logical.dsn, f"ALTER TABLE {logical.source} REPLICA IDENTITY DEFAULT")
    with pytest.raises(ReplicationSetupError, match="REPLICA IDENTITY FULL"):
        async with source_of(logical):
            pass
    async with source_of(logical, full_before_images=False):
        pass
    with pytest.raises(ReplicationSetupError, match="no replication slot 'slot_none'"):
        async with PostgresCdcSource("slot_none", dsn=logical.dsn, create_slot=False):
            pass
    with pytest.raises(ReplicationSetupError, match=rf"tables=None\), but .*public\.{logical.source}"):
        async with PostgresCdcSource(logical.slot, dsn=logical.dsn):  # every table
            pass
    assert await drop_slot(logical.slot, logical.dsn)
    assert not await drop_slot(logical.slot, logical.dsn)


@pytest.mark.postgres
async def test_a_server_without_logical_wal_is_a_clear_error():
    level = execute(DSN, "SHOW wal_level")[0][0]
    if level == "logical":
        pytest.skip("the machine's server already has wal_level=logical")
    with pytest.raises(ReplicationSetupError, match="needs wal_level=logical"):
        async with PostgresCdcSource("never", dsn=DSN):
            pass


def test_settings_are_checked_at_construction():
    with pytest.raises(ConfigError, match=r"slot must be 1 to 63 lower-case"):
        PostgresCdcSource("My-Slot")
    with pytest.raises(ConfigError, match=r"actions must be a non-empty list"):
        PostgresCdcSource(actions=["upsert"])
    with pytest.raises(ConfigError, match=r"tables must be a non-empty list"):
        PostgresCdcSource(tables="users")
    with pytest.raises(ConfigError, match=r"batch_size must be an integer >= 1"):
        PostgresCdcSource(batch_size=0)
    with pytest.raises(ConfigError, match=r"poll_interval must be a duration"):
        PostgresCdcSource(poll_interval="-1s")
