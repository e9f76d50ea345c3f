"""The plugin on a real 3-master Redis Cluster started by this module (``redis+cluster://``)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
import trio
from haive_plugin_redis import RedisStateBackend, RedisStreamSink, RedisStreamSource
from haive_plugin_redis._resp import pack
from haive_plugin_redis.cluster import ClusterClient
from redis.crc import key_slot

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.plugins import get_registry
from haive.dataflow.state.store import resolve_backend

pytestmark = pytest.mark.redis_server


def _free_port() -> int:
    """A port that is free with its cluster bus port (port + 10000)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 >= 65536:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free port pair for a cluster node")


class Cluster:
    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.url = f"redis+cluster://127.0.0.1:{ports[0]}"
        self.nodes = {p: redis.Redis("127.0.0.1", p) for p in ports}

    def owner(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot."""
        slot = key_slot(key.encode())
        for start, end, master, *_ in self.nodes[self.ports[0]].execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise AssertionError(f"slot {slot} has no owner")

    def node_id(self, port: int) -> str:
        return self.nodes[port].execute_command("CLUSTER MYID").decode()

    def tag_on(self, port: int, prefix: str) -> str:
        """A hash tag ``prefix-N`` whose slot lives on ``port``."""
        for n in range(10_000):
            if self.owner(f"{{{prefix}-{n}}}") == port:
                return f"{prefix}-{n}"
        raise AssertionError("no tag found")

    def keys(self) -> dict[int, int]:
        return {p: int(node.dbsize()) for p, node in self.nodes.items()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp("cluster")
    ports: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(3):
            port = _free_port()
            while port in ports:
                port = _free_port()
            ports.append(port)
            procs.append(
                subprocess.Popen(
                    ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                     "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                try:
                    redis.Redis("127.0.0.1", port).ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        while True:
            infos = [redis.Redis("127.0.0.1", p).cluster("info") for p in ports]
            if all(i["cluster_state"] == "ok" for i in infos):
                break
            if time.monotonic() > deadline + 20:
                raise RuntimeError(f"cluster not ok: {infos}")
            time.sleep(0.05)
        yield Cluster(ports)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)


def stream_items(node: redis.Redis, stream: str) -> list[object]:
    return [orjson.loads(fields[b"data"]) for _, fields in node.xrange(stream)]


# -- state ------------------------------------------------------------------------------


async def test_state_get_put_update_scan_across_slots(cluster: Cluster) -> None:
    assert get_registry().state_backend("redis") is RedisStateBackend
    assert "redis+cluster" in RedisStateBackend.URL_SCHEMES
    backend = resolve_backend(cluster.url, prefix="st:")  # what StateStore(url) does
    assert isinstance(backend, RedisStateBackend) and backend.cluster
    await backend.open()
    try:
        before = cluster.keys()
        keys = [f"user:{n}" for n in range(60)]
        for key in keys[:30]:
            await backend.put(key, key.encode(), ttl=60)
        await backend.write_batch([(key, key.encode(), None) for key in keys[30:]])
        after = cluster.keys()
        assert all(after[p] > before[p] for p in cluster.ports)  # keys on every master
        assert await backend.get("user:7") == b"user:7"
        assert await backend.get_many(["user:1", "nope", "user:59"]) == [
            b"user:1",
            None,
            b"user:59",
        ]

        # update: read-modify-write on the key's node, concurrent writers never lose one
        async def bump(key: str) -> None:
            for _ in range(10):
                await backend.update(key, lambda old: b"%d" % (int(old or 0) + 1))

        async with trio.open_nursery() as nursery:
            for key in ("hits:a", "hits:b", "hits:c"):
                for _ in range(3):
                    nursery.start_soon(bump, key)
        assert await backend.get_many(["hits:a", "hits:b", "hits:c"]) == [b"30"] * 3
        assert await backend.update("hits:a", lambda old: None) is None
        assert await backend.get("hits:a") is None

        assert await backend.incr_many({"c:1": 2, "c:2": 5}, ttl=60) == [2, 5]
        assert await backend.incr("c:1", 3) == 5

        scanned = await backend.scan("user:")
        assert sorted(scanned) == sorted((key, key.encode()) for key in keys)
        assert await backend.delete("user:0") is True
        assert await backend.delete_prefix("") == 59 + 2 + 2  # users, hits:b/c, c:1/c:2
        assert await backend.scan("") == []
    finally:
        await backend.aclose()


# -- streams ----------------------------------------------------------------------------


async def test_exactly_once_pipeline_on_a_non_first_node(cluster: Cluster) -> None:
    port = cluster.ports[2]
    tag = cluster.tag_on(port, "eo")
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    n = 500
    producer = RedisStreamSink(src, url=cluster.url)
    await producer.write_batch([{"n": i, "key": f"k{i % 4}"} for i in range(n)])
    producer.client.close()

    source = RedisStreamSource(
        src,
        url=cluster.url,
        group="g",
        delivery="exactly_once",
        batch_size=64,
        stop_when_drained=True,
    )
    assert isinstance(source.client, ClusterClient)
    counts = source.state("counts")

    async def count(event: dict[str, object]) -> dict[str, object]:
        await counts.add(str(event["key"]))
        return event

    pipeline = StreamingPipeline("cluster-eo")
    pipeline.set_source(source)
    pipeline.add_processor(count)
    pipeline.set_sink(source.sink(out))
    try:
        report = await pipeline.execute()
    finally:
        source.client.close()
    assert report.processed == n
    assert source.client.primary == ("127.0.0.1", port)
    assert source.stats.commits >= 2 and source.stats.aborted_commits == 0

    node = cluster.nodes[port]  # the data is on the slot's node, not the seed
    outputs = stream_items(node, out)
    assert len(outputs) == n
    assert sorted(o["n"] for o in outputs) == list(range(n))  # type: ignore[index]
    assert {k: int(node.get(counts.prefix + f"k{k}")) for k in range(4)} == {
        k: n // 4 for k in range(4)
    }
    assert node.xinfo_groups(src)[0]["pending"] == 0
    node.delete(src, out, *(counts.prefix + f"k{k}" for k in range(4)))


async def test_moved_reply_relocates_and_resends(cluster: Cluster) -> None:
    """A stale node (as after a resharding) answers MOVED: the client looks again, resends."""
    port = cluster.ports[1]
    stream = f"{{{cluster.tag_on(port, 'mv')}}}:s"
    client = ClusterClient(cluster.url, key=stream, pool_size=2)
    try:
        wrong = cluster.ports[0]
        client._primary._address = client._primary.last = ("127.0.0.1", wrong)  # stale
        assert await client.send(pack("XADD", stream, "*", "data", "1"), 1)
        assert client.primary == ("127.0.0.1", port)
        assert client.stats.retries == 1 and client.stats.failovers == 1
        assert cluster.nodes[port].xlen(stream) == 1
        cluster.nodes[port].delete(stream)
    finally:
        client.close()


def _migrate_slot(cluster: Cluster, key: str, src: int, dst: int) -> None:
    slot = key_slot(key.encode())
    s, d = cluster.nodes[src], cluster.nodes[dst]
    s_id, d_id = cluster.node_id(src), cluster.node_id(dst)
    d.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", s_id)
    s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", d_id)
    while keys := s.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
        s.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
    for node in (d, s, *(cluster.nodes[p] for p in cluster.ports if p not in (src, dst))):
        node.execute_command("CLUSTER SETSLOT", slot, "NODE", d_id)


async def test_sink_and_source_follow_a_slot_migration(cluster: Cluster) -> None:
    src_port, dst_port = cluster.ports[0], cluster.ports[2]
    tag = cluster.tag_on(src_port, "mig")
    stream, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    sink = RedisStreamSink(stream, url=cluster.url)
    source = RedisStreamSource(stream, url=cluster.url, group="g", stop_when_drained=True)
    try:
        await sink.write_batch([{"n": i} for i in range(100)])
        _migrate_slot(cluster, stream, src_port, dst_port)
        await sink.write_batch([{"n": i} for i in range(100, 200)])  # MOVED, then resent
        assert sink.client.primary == ("127.0.0.1", dst_port)

        pipeline = StreamingPipeline("cluster-migrated")
        pipeline.set_source(source)
        pipeline.set_sink(source.sink(out))
        report = await pipeline.execute()
        assert report.processed == 200
        assert [o["n"] for o in stream_items(cluster.nodes[dst_port], out)] == list(range(200))  # type: ignore[index]
        cluster.nodes[dst_port].delete(stream, out)
    finally:
        sink.client.close()
        source.client.close()


async def test_exactly_once_survives_a_slot_migration_mid_stream(cluster: Cluster) -> None:
    """The slot moves while an epoch is open: its commit is refused, the epoch replays."""
    src_port, dst_port = cluster.ports[1], cluster.ports[0]
    tag = cluster.tag_on(src_port, "eomig")
    stream, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    n = 400
    producer = RedisStreamSink(stream, url=cluster.url)
    await producer.write_batch([{"n": i} for i in range(n)])
    producer.client.close()
    source = RedisStreamSource(
        stream,
        url=cluster.url,
        group="g",
        delivery="exactly_once",
        batch_size=50,
        ack_every=50,
        stop_when_drained=True,
    )
    counts = source.state("counts")
    migrated = False

    async def step(event: dict[str, int]) -> dict[str, int]:
        nonlocal migrated
        await counts.add("seen")
        if event["n"] == 180 and not migrated:
            migrated = True
            await trio.to_thread.run_sync(_migrate_slot, cluster, stream, src_port, dst_port)
        return event

    pipeline = StreamingPipeline("cluster-eo-migrated")
    pipeline.set_source(source)
    pipeline.add_processor(step)
    pipeline.set_sink(source.sink(out))
    try:
        await pipeline.execute()
    finally:
        source.client.close()
    assert migrated and source.client.primary == ("127.0.0.1", dst_port)
    assert source.stats.aborted_commits >= 1  # the epoch open during the move replayed
    node = cluster.nodes[dst_port]
    outputs = [o["n"] for o in stream_items(node, out)]  # type: ignore[index]
    assert sorted(outputs) == list(range(n))  # every input once, no duplicate
    assert int(node.get(counts.prefix + "seen")) == n
    assert node.xinfo_groups(stream)[0]["pending"] == 0
    node.delete(stream, out, counts.prefix + "seen")


async def test_keyed_partitions_spread_over_the_cluster(cluster: Cluster) -> None:
    """Two exactly-once workers over 6 partitions, each partition on its own slot's node."""
    from haive_plugin_redis import PartitionedStream, PartitionedStreamSink, PartitionedStreamSource

    name = f"parts-{time.monotonic_ns()}"
    layout = PartitionedStream(name, 6)
    assert len({cluster.owner(s) for s in layout.streams()}) > 1  # spread over nodes
    n = 600
    async with PartitionedStreamSink(layout, key="key", url=cluster.url) as producer:
        await producer.write_batch([{"seq": i, "key": f"k{i % 12}"} for i in range(n)])

    def worker(consumer: str) -> tuple[StreamingPipeline, PartitionedStreamSource]:
        source = PartitionedStreamSource(
            layout, url=cluster.url, group="g", consumer=consumer, delivery="exactly_once",
            batch_size=50, block="20ms", lease_ttl="2s", stop_when_drained=True,
        )  # fmt: skip
        counts = source.state("counts")

        async def count(event: dict[str, object]) -> dict[str, object]:
            await counts.add(str(event["key"]))
            return event

        pipeline = StreamingPipeline(f"cluster-parts-{consumer}")
        pipeline.set_source(source)
        pipeline.add_processor(count)
        pipeline.set_sink(source.sink("out"))
        return pipeline, source

    workers = [worker("a"), worker("b")]
    async with trio.open_nursery() as nursery:
        for pipeline, _ in workers:
            nursery.start_soon(pipeline.execute)
    assert sum(source.membership()["read"] for _, source in workers) >= n
    seqs: list[int] = []
    for p, stream in enumerate(layout.streams()):
        node = cluster.nodes[cluster.owner(stream)]
        outputs = stream_items(node, stream + ":out")
        seqs += [o["seq"] for o in outputs]  # type: ignore[misc]
        assert all(layout.partition(o["key"]) == p for o in outputs)
        assert node.xinfo_groups(stream)[0]["pending"] == 0
    assert sorted(seqs) == list(range(n))  # exactly once
    for k in range(12):
        key = f"k{k}"
        stream = layout.partition_stream(key)
        stored = cluster.nodes[cluster.owner(stream)].get(f"{stream}:state:counts:{key}")
        assert int(stored) == n // 12
