"""Fault tests on the tests' own PostgreSQL server: a CDC worker killed with SIGKILL in the
middle of a batch, and the server restarted (pg_ctl restart) under a running pipeline. At
least once: nothing lost, and every duplicate accounted for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from haive_plugin_postgres import ChangeEvent, PostgresCdcSource, PostgresSink

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

from .conftest import CdcTables, execute

HERE = Path(__file__).parent
pytestmark = [pytest.mark.postgres_server, pytest.mark.slow]


def fill(cdc: CdcTables, n: int, per_transaction: int) -> None:
    """``n`` inserted rows, ``per_transaction`` per transaction."""
    statements = [
        f"INSERT INTO {cdc.source} (id, name) SELECT g, 'n' || g "
        f"FROM generate_series({start}, {min(start + per_transaction, n + 1) - 1}) g"
        for start in range(1, n + 1, per_transaction)
    ]
    execute(cdc.dsn, *statements)


def copies(cdc: CdcTables) -> tuple[int, int]:
    """(rows written, distinct ids) in the output table."""
    total, distinct = execute(cdc.dsn, f"SELECT count(*), count(DISTINCT id) FROM {cdc.output}")[0]
    return int(total), int(distinct)


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "haive.dataflow.cli", "run", str(HERE / "worker_pipeline.py")],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


async def test_cdc_worker_killed_mid_batch_loses_nothing(logical, tmp_path, record_property):
    n = 10_000
    logical.create_slot()
    fill(logical, n, per_transaction=250)
    env = {"HAIVE_PG_TEST_DSN": logical.dsn, "HAIVE_PG_TEST_SLOT": logical.slot,
           "HAIVE_PG_TEST_SOURCE": logical.source, "HAIVE_PG_TEST_OUTPUT": logical.output}
    hanging = tmp_path / "hanging"
    victim = start_worker({**env, "HAIVE_PG_TEST_HANG_AFTER": "4321",
                           "HAIVE_PG_TEST_HANG_FILE": str(hanging)})
    try:
        deadline = time.monotonic() + 120
        while not hanging.exists():
            assert victim.poll() is None, victim.communicate()[1]
            assert time.monotonic() < deadline, "the victim never reached its 4321st change"
            await trio.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    confirmed_at_kill = logical.confirmed()
    written_before, _ = copies(logical)
    # Written by the victim in transactions the slot had not passed: these come again.
    expected_duplicates = execute(
        logical.dsn,
        f"SELECT count(*) FROM {logical.output} WHERE commit_lsn > %s::pg_lsn",
        params=(confirmed_at_kill,),
    )[0][0]
    survivor = start_worker(env)
    _, stderr = await trio.to_thread.run_sync(lambda: survivor.communicate(timeout=300))
    assert survivor.returncode == 0, stderr

    total, distinct = copies(logical)
    result = {
        "changes": n,
        "written_before_kill": written_before,
        "written_after_slot_position_at_kill": expected_duplicates,
        "outputs": total,
        "distinct": distinct,
        "lost": n - distinct,
        "duplicated": total - distinct,
    }
    print(result)
    record_property("postgres_kill9", result)
    assert written_before > 0 and expected_duplicates > 0  # killed mid-stream, holding some
    assert distinct == n  # nothing lost
    assert total - distinct == expected_duplicates  # exactly the unacknowledged tail, again
    ids = execute(logical.dsn, f"SELECT min(id), max(id) FROM {logical.output}")[0]
    assert ids == (1, n)


async def test_server_restart_under_a_running_pipeline_loses_nothing(logical,
                                                                    record_property):
    n, stop_at = 12_000, 5_000
    logical.create_slot()
    fill(logical, n, per_transaction=400)
    holding, restarted = trio.Event(), trio.Event()
    held_at_restart: list[int] = []

    async def gate(change: ChangeEvent) -> dict[str, object]:
        assert change.after is not None
        if change.after["id"] >= stop_at and not restarted.is_set():
            holding.set()
            await restarted.wait()  # in flight while the server goes down and comes back
        return {"id": change.after["id"], "kind": change.kind,
                "commit_lsn": change.commit_lsn, "xid": change.xid}

    source = PostgresCdcSource(logical.slot, dsn=logical.dsn, tables=[logical.source],
                               batch_size=250, stop_when_drained=True)
    sink = PostgresSink(logical.output, mode="copy", columns=["id", "kind", "commit_lsn", "xid"],
                        dsn=logical.dsn)
    pipeline = StreamingPipeline("restart")
    pipeline.set_source(source)
    pipeline.add_processor(gate)
    pipeline.set_sink(sink)

    async def restart_when_held() -> None:
        await holding.wait()
        await trio.sleep(0.2)  # the source reads ahead meanwhile
        held_at_restart.append(source._pending)
        await trio.to_thread.run_sync(logical.server.restart)
        restarted.set()

    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_when_held)
            report = await pipeline.execute()

    total, distinct = copies(logical)
    result = {
        "changes": n,
        "outputs": total,
        "distinct": distinct,
        "lost": n - distinct,
        "duplicated": total - distinct,
        "unacknowledged_at_restart": held_at_restart[0],
        "pipeline_processed": report.processed,
        "source_read_errors": source.stats.read_errors,
        "source_advance_errors": source.stats.advance_errors,
        "sink_retries": sink.stats.retries,
    }
    print(result)
    record_property("postgres_restart", result)
    assert distinct == n  # nothing lost
    assert result["duplicated"] <= result["unacknowledged_at_restart"]
    assert source.stats.read_errors + sink.stats.retries > 0  # the restart was felt
    # the slot passed every change written (and the transactions with nothing for it)
    assert execute(logical.dsn, f"SELECT max(commit_lsn) <= %s::pg_lsn FROM {logical.output}",
                   params=(logical.confirmed(),)) == [(True,)]


async def test_sink_rides_out_a_server_restart_between_batches(logical):
    sink = PostgresSink(logical.output, mode="copy", columns=["id", "kind"], dsn=logical.dsn)
    async with sink:
        await sink.write_batch([{"id": i, "kind": "before"} for i in range(100)])
        await trio.to_thread.run_sync(logical.server.restart)
        await sink.write_batch([{"id": i, "kind": "after"} for i in range(100, 200)])
    assert execute(logical.dsn, f"SELECT kind, count(*) FROM {logical.output} GROUP BY 1 "
                   "ORDER BY 1") == [("after", 100), ("before", 100)]
    assert sink.stats.retries <= 1 and sink.stats.batches == 2  # one new connection at most
