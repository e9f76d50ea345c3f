"""A worker pipeline for the kill -9 test, run with ``haive run``: copies the changes of the
table ``HAIVE_PG_TEST_SOURCE`` (slot ``HAIVE_PG_TEST_SLOT``) into the append-only table
``HAIVE_PG_TEST_OUTPUT``, one row per change with its commit LSN (so duplicates can be
counted and explained exactly).

With ``HAIVE_PG_TEST_HANG_AFTER=K`` and ``HAIVE_PG_TEST_HANG_FILE=PATH`` the worker stops
in the middle of a batch at its K-th change (earlier batches written, this one and the
slot's position not), creates PATH and waits to be killed: the test kills it at a known
point, not after a sleep.
"""

from __future__ import annotations

import os

import trio
from haive_plugin_postgres import ChangeEvent, PostgresCdcSource, PostgresSink

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

dsn = os.environ.get("HAIVE_PG_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
slot = os.environ.get("HAIVE_PG_TEST_SLOT", "haive_worker")
source_table = os.environ.get("HAIVE_PG_TEST_SOURCE", "orders")
output_table = os.environ.get("HAIVE_PG_TEST_OUTPUT", "order_copies")
hang_after = int(os.environ.get("HAIVE_PG_TEST_HANG_AFTER", "0"))
hang_file = os.environ.get("HAIVE_PG_TEST_HANG_FILE")
seen = 0


async def copy(change: ChangeEvent) -> dict[str, object]:
    global seen
    seen += 1
    if hang_after and seen == hang_after and hang_file:
        await trio.Path(hang_file).touch()
        await trio.sleep_forever()
    assert change.row is not None
    return {"id": change.row["id"], "kind": change.kind, "commit_lsn": change.commit_lsn,
            "xid": change.xid}


pipeline = StreamingPipeline("postgres-worker")
pipeline.set_source(
    PostgresCdcSource(slot, dsn=dsn, tables=[source_table], batch_size=200,
                      stop_when_drained=True)
)
pipeline.add_processor(copy)
pipeline.set_sink(PostgresSink(output_table, mode="copy",
                               columns=["id", "kind", "commit_lsn", "xid"], dsn=dsn))
