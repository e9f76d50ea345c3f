"""``haive worker`` with a JetStream source: two processes share the durable consumer named
by ``--group``; ``--replay-from`` makes the group read everything again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
import trio
from haive_plugin_nats import JetStreamSink

from .conftest import consumer_state, read_subject

PIPELINE = str(Path(__file__).with_name("worker_pipeline.py"))

pytestmark = [pytest.mark.nats, pytest.mark.slow]


def haive_worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli", "worker", PIPELINE, *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )


def summaries(stderr: str) -> list[dict[str, object]]:
    prefix = "haive worker: "
    return [json.loads(line.removeprefix(prefix)) for line in stderr.splitlines()
            if line.startswith(prefix + "{")]


async def test_two_workers_share_the_group_and_replay_from_reads_it_again(stream):
    n = 4_000
    async with JetStreamSink(stream.input, url=stream.url) as producer:
        await producer.write_batch([{"n": i} for i in range(n)])
    env = {"HAIVE_NATS_TEST_URL": stream.url, "HAIVE_NATS_TEST_STREAM": stream.name}

    run = await trio.to_thread.run_sync(
        lambda: haive_worker(env, "--group", "pool", "-n", "2", "--consumer", "w")
    )
    assert run.returncode == 0, run.stderr
    members = summaries(run.stderr)
    assert sorted(str(m["consumer"]) for m in members) == ["w-1", "w-2"]
    assert {m["group"] for m in members} == {"pool"}
    assert sum(int(str(m["processed"])) for m in members) == n
    copies = Counter(orjson.loads(m.data)["n"] for m in
                     await read_subject(stream.url, stream.name, stream.output))
    assert sorted(copies) == list(range(n)) and set(copies.values()) == {1}
    info = await consumer_state(stream.url, stream.name, "pool")
    assert info.num_pending == 0 and info.num_ack_pending == 0

    again = await trio.to_thread.run_sync(
        lambda: haive_worker(env, "--group", "pool", "--replay-from", "1")
    )
    assert again.returncode == 0, again.stderr
    assert summaries(again.stderr)[0]["processed"] == n
    copies = Counter(orjson.loads(m.data)["n"] for m in
                     await read_subject(stream.url, stream.name, stream.output))
    assert sorted(copies) == list(range(n)) and set(copies.values()) == {2}


async def test_replay_from_an_unknown_position_is_refused(stream):
    env = {"HAIVE_NATS_TEST_URL": stream.url, "HAIVE_NATS_TEST_STREAM": stream.name}
    done = await trio.to_thread.run_sync(
        lambda: haive_worker(env, "--group", "pool", "--replay-from", "yesterday")
    )
    assert done.returncode == 2
    assert "position must be a stream sequence (1 = everything), 'all' or 'new'" in done.stderr
