"""Fixtures: a tansu Kafka-protocol broker of the test session (topics unique per test), and
a broker or proxy of one test's own for the fault tests that restart it.

Consumer groups here use a 2 s session timeout: tansu holds a group join for about half
of it before assigning, so groups form in about a second.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from haive_plugin_kafka.testing import TansuBroker

#: Consumer settings for fast group joins against tansu.
FAST_GROUP = {"session_timeout": "2s"}


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    with TansuBroker(tmp_path_factory.mktemp("tansu")) as running:
        yield running


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker for this test alone (it may be stopped and restarted)."""
    with TansuBroker(tmp_path / "tansu") as running:
        yield running


@pytest.fixture
def topic(broker: TansuBroker) -> Callable[..., str]:
    """``topic(partitions=3)``: a new topic with a unique name on the session broker."""

    def create(partitions: int = 3, name: str | None = None) -> str:
        created = name or f"t-{uuid.uuid4().hex[:12]}"
        broker.create_topic(created, partitions=partitions)
        return created

    return create


def read_topic(
    bootstrap_servers: str, name: str, expected: int, timeout: float = 60.0
) -> list[Message]:
    """Every record of topic ``name`` (all partitions, from the start) once ``expected``
    are there, or what there is after ``timeout`` seconds; read without a group."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers, "group.id": "unused", "enable.partition.eof": False}
    )
    try:
        metadata = consumer.list_topics(name, timeout=30)
        partitions = metadata.topics[name].partitions
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            records += [m for m in consumer.consume(1000, 0.2) if m.error() is None]
        # Anything beyond ``expected`` (duplicates) still on its way.
        records += [m for m in consumer.consume(1000, 0.5) if m.error() is None]
        return records
    finally:
        consumer.close()


def committed(bootstrap_servers: str, group: str, name: str) -> dict[int, int]:
    """The group's committed offset per partition of ``name`` (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group})
    try:
        partitions = consumer.list_topics(name, timeout=30).topics[name].partitions
        offsets = consumer.committed([TopicPartition(name, p) for p in partitions], timeout=30)
        return {tp.partition: tp.offset for tp in offsets}
    finally:
        consumer.close()


@pytest.fixture
def kafka_io() -> tuple[Callable[..., list[Message]], Callable[..., dict[int, int]]]:
    """(read_topic, committed): helpers reading a topic and a group's offsets."""
    return read_topic, committed
