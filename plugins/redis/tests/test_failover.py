"""Failover: a pipeline goes on, 0 lost, when a replica is promoted mid-stream.

Each test starts its own redis-server processes (and sentinels) on free local ports in a
temporary directory, and kills every one of them in teardown.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import trio
from haive_plugin_redis import RedisStreamSink, RedisStreamSource
from haive_plugin_redis._resp import pack
from haive_plugin_redis.failover import (
    FailoverClient,
    FailoverError,
    NoPrimaryError,
    ReplicationTimeoutError,
    RoleLocator,
)

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

pytestmark = pytest.mark.redis_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One redis-server process in its own directory; ``kill()`` is SIGKILL (a crash)."""

    def __init__(self, root: Path, name: str, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.port = free_port()
        self.log = self.dir / "server.log"
        self.proc = subprocess.Popen(
            [
                binary,
                *args,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.log),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                # Replicas sync at once (the default waits 5 s for more replicas to join).
                "--repl-diskless-sync-delay",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis("127.0.0.1", self.port, socket_timeout=2)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log.read_text() if self.log.exists() else ""
                    raise RuntimeError(f"{self.name} did not start:\n{log[-2000:]}") from None
                time.sleep(0.02)

    def info(self, section: str) -> dict[str, object]:
        return dict(self.client.info(section))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.client.close()


def wait_replica_synced(replica: Server, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while replica.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{replica.name} did not sync with its primary")
        time.sleep(0.02)


def replication_offset(server: Server) -> int:
    info = server.info("replication")
    return int(info.get("slave_repl_offset") or info.get("master_repl_offset") or 0)  # type: ignore[call-overload]


class Servers:
    """Starts servers under one temporary directory; ``close()`` kills every one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Server] = []

    def start(self, name: str, *args: str) -> Server:
        server = Server(self.root, name, *args)
        self.started.append(server)
        server.wait_ready()
        return server

    def replica_of(self, name: str, primary: Server) -> Server:
        return self.start(name, "--replicaof", "127.0.0.1", str(primary.port))

    def sentinel(self, name: str, primary: Server, quorum: int) -> Server:
        (self.root / name).mkdir()
        conf = self.root / name / "sentinel.conf"
        port = free_port()
        conf.write_text(
            f"port {port}\n"
            f"sentinel monitor mymaster 127.0.0.1 {primary.port} {quorum}\n"
            "sentinel down-after-milliseconds mymaster 400\n"
            "sentinel failover-timeout mymaster 5000\n"
        )
        server = Sentinel(self.root / name, conf, port)
        self.started.append(server)
        server.wait_ready()
        return server

    def close(self) -> None:
        for server in self.started:
            server.kill()


class Sentinel(Server):
    def __init__(self, directory: Path, conf: Path, port: int) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.name = directory.name
        self.dir = directory
        self.port = port
        self.log = directory / "sentinel.log"
        self.proc = subprocess.Popen(
            [binary, str(conf), "--sentinel", "--dir", str(directory), "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis("127.0.0.1", port, socket_timeout=2)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        started.close()


class RecordingSink(RedisStreamSink):
    """A stream sink that also counts the ``n`` of every item it wrote (after Redis answered)."""

    def __init__(self, stream: str, expected: int, **options: Any) -> None:
        super().__init__(stream, **options)
        self.expected = expected
        self.seen: Counter[int] = Counter()
        self.third = trio.Event()
        self.all_seen = trio.Event()

    async def write_batch(self, items: list[Any]) -> None:
        await super().write_batch(items)
        self.seen.update(item["n"] for item in items)
        if len(self.seen) >= self.expected // 3:
            self.third.set()
        if len(self.seen) >= self.expected:
            self.all_seen.set()


def stream_numbers(server: Server, stream: str) -> Counter[int]:
    entries = server.client.xrange(stream, "-", "+")
    return Counter(orjson.loads(fields[b"data"])["n"] for _, fields in entries)


def promote_most_advanced(replicas: list[Server]) -> Server:
    """What an operator (or Sentinel) does: promote the replica that received the most."""
    best = max(replicas, key=replication_offset)
    best.client.execute_command("REPLICAOF", "NO", "ONE")
    for other in replicas:
        if other is not best:
            other.client.execute_command("REPLICAOF", "127.0.0.1", str(best.port))
    return best


async def run_through_failover(
    failover: Any, n: int, make_client: Any
) -> tuple[FailoverClient, FailoverClient]:
    """Producer and at-least-once pipeline through FailoverClients; ``failover()`` mid-stream."""
    producer = make_client(pool_size=2)
    worker = make_client()
    stream, out = "{failover}:in", "{failover}:out"
    source = RedisStreamSource(
        stream, group="g", consumer="w1", client=worker, claim_idle="1s", block="50ms",
        batch_size=100,
    )  # fmt: skip
    sink = RecordingSink(out, n, client=worker)
    pipeline = StreamingPipeline("failover")
    pipeline.set_source(source)
    pipeline.add_processor(lambda entry: {"n": entry["n"]})
    pipeline.set_sink(sink)
    writer = RedisStreamSink(stream, client=producer)

    async def produce() -> None:
        for start in range(0, n, 25):
            if start == n // 2:
                await sink.third.wait()  # the failover starts now; keep producing through it
            await writer.write_batch([{"n": i} for i in range(start, min(n, start + 25))])
            await trio.sleep(0.003)  # paced like a live producer

    async def fail_over() -> None:
        await sink.third.wait()
        await trio.to_thread.run_sync(failover)

    try:
        with trio.fail_after(25):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipeline.execute)
                nursery.start_soon(fail_over)
                await produce()
                await sink.all_seen.wait()
                nursery.cancel_scope.cancel()
    finally:
        producer.close()
        worker.close()
    return producer, worker


async def test_pipeline_follows_a_replica_promoted_by_hand_with_nothing_lost(
    servers: Servers,
) -> None:
    primary = servers.start("primary")
    replicas = [servers.replica_of("replica-a", primary), servers.replica_of("replica-b", primary)]
    for replica in replicas:
        await trio.to_thread.run_sync(wait_replica_synced, replica)
    addresses = [primary.address] + [r.address for r in replicas]
    promoted: list[Server] = []

    def failover() -> None:
        primary.kill()  # a crash: no goodbye to clients or replicas
        promoted.append(promote_most_advanced(replicas))

    def make_client(**options: Any) -> FailoverClient:
        return FailoverClient.replicas(
            addresses, wait_replicas=1, failover_timeout="15s", **options
        )

    n = 3000
    producer, worker = await run_through_failover(failover, n, make_client)
    new_primary = promoted[0]
    written = await trio.to_thread.run_sync(stream_numbers, new_primary, "{failover}:out")
    produced = await trio.to_thread.run_sync(stream_numbers, new_primary, "{failover}:in")
    lost = set(range(n)) - set(written)
    duplicates = sum(count - 1 for count in written.values())
    print(f"\nmanual promotion: {n} events, 0 lost expected, {duplicates} duplicates")
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:10]}"
    assert set(produced) == set(range(n)), "an acknowledged producer write was lost"
    assert producer.stats.failovers == 1 and worker.stats.failovers == 1
    assert worker.primary == ("127.0.0.1", new_primary.port)


def wait_sentinels_ready(sentinels: list[Server], replicas: int, timeout: float = 10.0) -> None:
    """Every sentinel knows the other sentinels and the replicas (else no failover quorum)."""
    deadline = time.monotonic() + timeout
    while True:
        ready = all(
            len(s.client.execute_command("SENTINEL", "SENTINELS", "mymaster")) == len(sentinels) - 1
            and len(s.client.execute_command("SENTINEL", "REPLICAS", "mymaster")) == replicas
            for s in sentinels
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the sentinels did not discover each other and the replicas")
        time.sleep(0.05)


async def test_pipeline_follows_a_sentinel_failover_with_nothing_lost(servers: Servers) -> None:
    primary = servers.start("primary")
    replicas = [servers.replica_of("replica-a", primary), servers.replica_of("replica-b", primary)]
    for replica in replicas:
        await trio.to_thread.run_sync(wait_replica_synced, replica)
    sentinels = [servers.sentinel(f"sentinel-{i}", primary, quorum=2) for i in range(3)]
    await trio.to_thread.run_sync(wait_sentinels_ready, sentinels, 2)
    sentinel_addresses = [s.address for s in sentinels]

    def make_client(**options: Any) -> FailoverClient:
        return FailoverClient.sentinel(
            sentinel_addresses, "mymaster", wait_replicas=1, failover_timeout="20s", **options
        )

    n = 2000
    producer, worker = await run_through_failover(primary.kill, n, make_client)
    promoted = next(r for r in replicas if r.info("replication")["role"] == "master")
    written = await trio.to_thread.run_sync(stream_numbers, promoted, "{failover}:out")
    produced = await trio.to_thread.run_sync(stream_numbers, promoted, "{failover}:in")
    lost = set(range(n)) - set(written)
    duplicates = sum(count - 1 for count in written.values())
    print(f"\nsentinel failover: {n} events, {duplicates} duplicates")
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:10]}"
    assert set(produced) == set(range(n)), "an acknowledged producer write was lost"
    assert worker.stats.failovers == 1 and producer.stats.failovers == 1
    assert worker.primary == ("127.0.0.1", promoted.port)


async def test_a_demoted_primary_answering_readonly_is_left_for_the_new_one(
    servers: Servers,
) -> None:
    old = servers.start("old")
    new = servers.replica_of("new", old)
    await trio.to_thread.run_sync(wait_replica_synced, new)
    # wait_replicas: the SET is on the replica before send() returns, so it survives the swap.
    client = FailoverClient.replicas(
        [old.address, new.address], wait_replicas=1, failover_timeout="5s"
    )
    try:
        assert await client.send(pack("SET", "k", "1"), 1) == [b"OK"]
        assert client.primary == ("127.0.0.1", old.port)
        # Swap roles while both stay up: the old primary now answers writes with READONLY.
        new.client.execute_command("REPLICAOF", "NO", "ONE")
        old.client.execute_command("REPLICAOF", "127.0.0.1", str(new.port))
        with trio.fail_after(10):
            assert await client.send(pack("INCR", "k"), 1) == [2]
            assert await client.call(client.redis.get, "k") == b"2"
        assert client.primary == ("127.0.0.1", new.port)
        assert client.stats.failovers == 1
    finally:
        client.close()


async def test_two_primaries_are_ambiguous_and_time_out_with_the_reason(servers: Servers) -> None:
    a, b = servers.start("a"), servers.start("b")
    with pytest.raises(NoPrimaryError, match="2 servers claim to be primary"):
        await trio.to_thread.run_sync(RoleLocator([a.address, b.address]).locate)
    client = FailoverClient.replicas([a.address, b.address], failover_timeout="300ms")
    try:
        with pytest.raises(
            FailoverError, match=r"no Redis primary within 0\.3 s.*claim to be primary"
        ):
            await client.send(pack("PING"), 1)
    finally:
        client.close()


async def test_no_reachable_server_fails_after_the_timeout() -> None:
    dead = f"127.0.0.1:{free_port()}"
    client = FailoverClient.replicas([dead], failover_timeout="200ms")
    try:
        started = trio.current_time()
        with pytest.raises(FailoverError, match=f"{dead} unreachable"):
            await client.send(pack("PING"), 1)
        assert trio.current_time() - started < 5
    finally:
        client.close()


async def test_writes_not_on_enough_replicas_are_not_acknowledged(servers: Servers) -> None:
    lonely = servers.start("lonely")  # a primary without replicas
    client = FailoverClient.replicas(
        [lonely.address], wait_replicas=1, wait_timeout="50ms", failover_timeout="300ms"
    )
    try:
        with pytest.raises(ReplicationTimeoutError, match="only 0 of 1 replicas confirmed"):
            await client.send(pack("XADD", "s", "*", "data", "1"), 1)
        assert client.stats.replication_waits >= 1
        # Reads and writes without wait_replicas work on the same server.
        plain = FailoverClient.replicas([lonely.address])
        assert await plain.send(pack("XLEN", "s"), 1) == [1]
        plain.close()
    finally:
        client.close()


def test_configuration_errors() -> None:
    from haive.dataflow.errors import ConfigError

    with pytest.raises(ConfigError, match="expected an address"):
        FailoverClient.replicas(["127.0.0.1:notaport"])
    with pytest.raises(ConfigError, match="give a list of server addresses"):
        FailoverClient.replicas("127.0.0.1:6379")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="wait_replicas must be an int >= 0"):
        FailoverClient.replicas(["127.0.0.1:6379"], wait_replicas=-1)
    with pytest.raises(ConfigError, match="service must be a non-empty name"):
        FailoverClient.sentinel(["127.0.0.1:26379"], "")
