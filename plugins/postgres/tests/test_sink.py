"""PostgresSink against the machine's PostgreSQL (127.0.0.1:5432, database test)."""

from __future__ import annotations

import attrs
import pytest
import trio
from haive_plugin_postgres import (
    MissingUniqueKeyError,
    PostgresSink,
    UnknownColumnError,
    UnknownTableError,
)

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sinks import RejectedItems
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

from .conftest import DSN, execute

pytestmark = pytest.mark.postgres


def create(table: str, columns: str) -> None:
    execute(DSN, f"CREATE TABLE {table} ({columns})")


def rows(table: str, order: str = "id") -> list[tuple[object, ...]]:
    return execute(DSN, f"SELECT * FROM {table} ORDER BY {order}")


async def test_upsert_is_idempotent_on_replay(table_name):
    create(table_name, "id int PRIMARY KEY, name text, score int")
    items = [{"id": i, "name": f"n{i}", "score": i * 10} for i in range(1_000)]
    async with PostgresSink(table_name, key="id", dsn=DSN) as sink:
        for start in range(0, 1_000, 250):
            await sink.write_batch(items[start : start + 250])
        before = rows(table_name)
        for start in range(0, 1_000, 250):  # a replay after a crash: the same batches again
            await sink.write_batch(items[start : start + 250])
    assert rows(table_name) == before
    assert len(before) == 1_000 and before[7] == (7, "n7", 70)
    assert sink.stats.batches == 8 and sink.stats.rejected == 0


async def test_upsert_updates_and_the_last_item_of_a_key_in_a_batch_wins(table_name):
    create(table_name, "id int PRIMARY KEY, name text, score int")
    async with PostgresSink(table_name, key="id", dsn=DSN) as sink:
        await sink.write_batch([{"id": 1, "name": "a", "score": 1},
                                {"id": 2, "name": "b", "score": 2}])
        await sink.write_batch([{"id": 1, "name": "a2", "score": 3},
                                {"id": 1, "name": "a3", "score": 4},
                                {"id": 3, "name": "c", "score": 5}])
    assert rows(table_name) == [(1, "a3", 4), (2, "b", 2), (3, "c", 5)]


async def test_upsert_on_a_composite_key_with_named_columns(table_name):
    create(table_name, "tenant text, id int, name text, seen timestamptz DEFAULT now(), "
           "PRIMARY KEY (tenant, id)")
    async with PostgresSink(table_name, key=("tenant", "id"), columns=["tenant", "id", "name"],
                            dsn=DSN) as sink:
        await sink.write_batch([{"tenant": "t1", "id": 1, "name": "x"},
                                {"tenant": "t2", "id": 1, "name": "y"}])
        await sink.write_batch([{"tenant": "t1", "id": 1, "name": "z"}])
    found = execute(DSN, f"SELECT tenant, id, name, seen IS NOT NULL FROM {table_name} "
                    "ORDER BY tenant")
    assert found == [("t1", 1, "z", True), ("t2", 1, "y", True)]  # the default filled seen


async def test_copy_mode_appends(table_name):
    create(table_name, "id int, payload jsonb, at timestamptz DEFAULT now()")
    items = [{"id": i, "payload": {"n": i, "tags": ["a", "b"]}} for i in range(500)]
    async with PostgresSink(table_name, mode="copy", columns=["id", "payload"], dsn=DSN) as sink:
        await sink.write_batch(items)
        await sink.write_batch(items[:10])  # append-only: a replay appends again
    assert execute(DSN, f"SELECT count(*), count(DISTINCT id) FROM {table_name}") == [(510, 500)]
    assert execute(DSN, f"SELECT payload FROM {table_name} WHERE id = 3 LIMIT 1") == [
        ({"n": 3, "tags": ["a", "b"]},)
    ]
    assert sink.stats.written == 510


@attrs.frozen
class Reading:
    sensor: str
    value: float


async def test_attrs_items_and_column_functions(table_name):
    create(table_name, "sensor text PRIMARY KEY, value float8, doubled float8")
    columns = {"sensor": "sensor", "value": "value", "doubled": lambda r: r.value * 2}
    async with PostgresSink(table_name, key="sensor", columns=columns, dsn=DSN) as sink:
        await sink.write_batch([Reading("s1", 1.5), Reading("s2", 2.0)])
    assert rows(table_name, "sensor") == [("s1", 1.5, 3.0), ("s2", 2.0, 4.0)]


@pytest.mark.parametrize("mode", ["upsert", "copy"])
async def test_rows_the_server_refuses_are_found_and_rejected_the_rest_committed(table_name,
                                                                                 mode):
    create(table_name, "id int PRIMARY KEY, qty int CHECK (qty >= 0), name text NOT NULL")
    items: list[object] = [{"id": i, "qty": i, "name": f"n{i}"} for i in range(200)]
    items[17] = {"id": 17, "qty": -1, "name": "negative"}  # check constraint
    items[90] = {"id": 90, "qty": "lots", "name": "x"}  # not an integer
    items[91] = {"id": 91, "qty": 1, "name": None}  # not null
    items[150] = "not a row"  # no row can be made of it
    key = "id" if mode == "upsert" else None
    async with PostgresSink(table_name, key=key, mode=mode, dsn=DSN) as sink:
        with pytest.raises(RejectedItems) as caught:
            await sink.write_batch(items)
    errors = caught.value.errors
    assert sorted(errors) == [17, 90, 91, 150]
    assert "check constraint" in str(errors[17])
    assert "integer" in str(errors[90])
    assert "null value" in str(errors[91])
    assert isinstance(errors[150], TypeError)
    written = [r[0] for r in rows(table_name)]
    assert written == [i for i in range(200) if i not in (17, 90, 91, 150)]
    assert sink.stats.written == 196 and sink.stats.rejected == 4 and sink.stats.batches == 1


async def test_a_bad_row_goes_to_the_dead_letter_sink_with_the_error(table_name):
    create(table_name, "id int PRIMARY KEY, qty int CHECK (qty >= 0)")
    pipeline = StreamingPipeline("to-postgres")
    pipeline.set_source(IterableSource([{"id": i, "qty": -5 if i == 33 else i}
                                        for i in range(100)]))
    pipeline.set_sink(PostgresSink(table_name, key="id", dsn=DSN))
    dead = MemorySink()
    pipeline.set_dead_letter_sink(dead)
    report = await pipeline.execute()
    assert len(rows(table_name)) == 99
    assert len(dead.items) == 1
    letter = dead.items[0]
    assert letter["data"] == {"id": 33, "qty": -5}
    assert "check constraint" in letter["error"]["message"]
    assert report.failed == 1


async def test_unknown_table_fails_at_start(table_name):
    with pytest.raises(UnknownTableError, match=f"no table '{table_name}'"):
        async with PostgresSink(table_name, key="id", dsn=DSN):
            pass
    with pytest.raises(UnknownTableError, match="schema 'nowhere'"):
        async with PostgresSink(f"nowhere.{table_name}", mode="copy", dsn=DSN):
            pass


async def test_unknown_column_and_key_without_unique_constraint_fail_at_start(table_name):
    create(table_name, "id int, name text")
    with pytest.raises(UnknownColumnError, match=r"column 'nme' not in table .* id, name"):
        async with PostgresSink(table_name, mode="copy", columns=["id", "nme"], dsn=DSN):
            pass
    with pytest.raises(UnknownColumnError, match="key column 'ident'"):
        async with PostgresSink(table_name, key="ident", dsn=DSN):
            pass
    with pytest.raises(MissingUniqueKeyError, match=r"no unique constraint .* \(id\)"):
        async with PostgresSink(table_name, key="id", dsn=DSN):
            pass


def test_settings_are_checked_at_construction():
    with pytest.raises(ConfigError, match=r"PostgresSink\(mode='upsert'\): .* needs key="):
        PostgresSink("t", mode="upsert")
    with pytest.raises(ConfigError, match=r"key must be None with mode='copy'"):
        PostgresSink("t", key="id", mode="copy")
    with pytest.raises(ConfigError, match=r"mode must be one of 'upsert', 'copy'"):
        PostgresSink("t", mode="merge")
    with pytest.raises(ConfigError, match=r"table must be 'table' or 'schema.table'"):
        PostgresSink("a.b.c", mode="copy")
    with pytest.raises(ConfigError, match=r"dsn must be a libpq connection string"):
        PostgresSink("t", dsn="host=x port")
    with pytest.raises(ConfigError, match=r"statement_timeout must be a duration"):
        PostgresSink("t", mode="copy", statement_timeout="soon")
    with pytest.raises(ConfigError, match=r"columns must be"):
        PostgresSink("t", mode="copy", columns="id")
    assert "***" in repr(PostgresSink("t", mode="copy", dsn="postgresql://u:pw@h/db"))


async def test_refused_connection_is_a_clear_error():
    from haive_plugin_postgres import PostgresConnectError

    with pytest.raises(PostgresConnectError, match="cannot connect to PostgreSQL"):
        async with PostgresSink("t", mode="copy",
                                dsn="postgresql://postgres@127.0.0.1:5432/no_such_db"):
            pass


async def test_write_before_open_is_an_error():
    from haive_plugin_postgres import PostgresError

    with pytest.raises(PostgresError, match="is not open"):
        await PostgresSink("t", mode="copy").write_batch([{}])
    await trio.lowlevel.checkpoint()
