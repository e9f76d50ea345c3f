"""``haive worker`` with a Kafka source: processes join the consumer group named by
``--group``; ``--replay-from earliest`` moves the group back so it reads everything again."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from haive_plugin_kafka.testing import TansuBroker

PIPELINE = str(Path(__file__).with_name("worker_pipeline.py"))

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def haive_worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli", "worker", PIPELINE, *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )


def summaries(stderr: str) -> list[dict[str, Any]]:
    prefix = "haive worker: "
    return [json.loads(line.removeprefix(prefix)) for line in stderr.splitlines()
            if line.startswith(prefix + "{")]


def test_two_workers_share_the_group_and_replay_from_reads_it_again(
    broker: TansuBroker, topic: Callable[..., str], kafka_io: Any
) -> None:
    read_topic, committed = kafka_io
    n = 3_000
    source_topic, out = topic(3), topic(3)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    for i in range(n):
        producer.produce(source_topic, orjson.dumps({"n": i}), key=str(i % 7).encode())
    assert producer.flush(30) == 0
    env = {"HAIVE_KAFKA_TEST_BOOTSTRAP": broker.bootstrap_servers,
           "HAIVE_KAFKA_TEST_IN": source_topic, "HAIVE_KAFKA_TEST_OUT": out}

    run = haive_worker(env, "--group", "pool", "-n", "2", "--consumer", "w")
    assert run.returncode == 0, run.stderr
    members = summaries(run.stderr)
    assert sorted(m["consumer"] for m in members) == ["w-1", "w-2"]
    assert {m["group"] for m in members} == {"pool"}
    copies = collections.Counter(
        orjson.loads(m.value())["n"] for m in read_topic(broker.bootstrap_servers, out, n)
    )
    # At-least-once across a rebalance: nothing lost; a member that loses a partition
    # mid-batch may leave its uncommitted tail to be read again by the other.
    assert sorted(copies) == list(range(n))
    first = sum(copies.values())
    offsets = committed(broker.bootstrap_servers, "pool", source_topic)
    assert sum(max(0, offset) for offset in offsets.values()) == n  # -1001: an empty partition

    again = haive_worker(env, "--group", "pool", "--replay-from", "earliest")
    assert again.returncode == 0, again.stderr
    assert summaries(again.stderr)[0]["processed"] == n
    copies = collections.Counter(
        orjson.loads(m.value())["n"] for m in read_topic(broker.bootstrap_servers, out, first + n)
    )
    assert sorted(copies) == list(range(n)) and sum(copies.values()) == first + n


def test_replay_from_an_unknown_position_is_refused(broker: TansuBroker) -> None:
    env = {"HAIVE_KAFKA_TEST_BOOTSTRAP": broker.bootstrap_servers}
    done = haive_worker(env, "--group", "pool", "--replay-from", "yesterday")
    assert done.returncode == 2
    assert "position must be one of ('earliest', 'latest'), got 'yesterday'" in done.stderr
