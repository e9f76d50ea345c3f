"""``haive worker`` with a RabbitMQ source: the queue is the group (competing consumers);
two worker processes share it and every message is written once."""

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
from haive_plugin_rabbitmq import RabbitMQSink, RabbitMQSource

from haive.dataflow.errors import ConfigError

from .conftest import read_queue

PIPELINE = str(Path(__file__).with_name("worker_pipeline.py"))


def haive_worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli", "worker", PIPELINE, *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )


def test_join_names_the_queue_and_the_default_dead_letter_key_follows():
    source = RabbitMQSource("orders.in")
    source.join(group="billing", consumer="w-1")
    assert (source.queue, source.dead_letter_routing_key) == ("billing", "billing.dead")
    assert source.membership()["group"] == "billing"
    assert source.membership()["consumer"] == "w-1"
    pinned = RabbitMQSource("orders.in", dead_letter_routing_key="all.dead")
    pinned.join(group="billing")
    assert pinned.dead_letter_routing_key == "all.dead"
    with pytest.raises(ConfigError, match="group must be"):
        pinned.join(group="")


@pytest.mark.rabbitmq
@pytest.mark.slow
async def test_two_workers_share_the_queue(queues):
    n = 2_000
    async with RabbitMQSink(routing_key=queues.input, url=queues.url) as producer:
        await producer.write_batch([{"n": i} for i in range(n)])
    env = {"HAIVE_RABBITMQ_TEST_URL": queues.url, "HAIVE_RABBITMQ_TEST_NAME": queues.name}
    run = await trio.to_thread.run_sync(
        lambda: haive_worker(env, "--group", queues.input, "-n", "2", "--consumer", "w")
    )
    assert run.returncode == 0, run.stderr
    prefix = "haive worker: "
    members = [json.loads(line.removeprefix(prefix)) for line in run.stderr.splitlines()
               if line.startswith(prefix + "{")]
    assert sorted(m["consumer"] for m in members) == ["w-1", "w-2"]
    assert {m["group"] for m in members} == {queues.input}
    assert sum(m["processed"] for m in members) == n
    copies = Counter(orjson.loads(m.body)["n"] for m in await read_queue(queues.url,
                                                                          queues.output))
    assert sorted(copies) == list(range(n)) and set(copies.values()) == {1}
