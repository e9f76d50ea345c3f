"""Keyed partitions of Redis Streams (``PartitionedStreamSource``) through ``haive worker``.

A partitioned stream of 12 partitions is filled once with N keyed JSON events; each
configuration reads all of it in its own group and writes its own outputs next to each
partition. The worker pipeline is ``decode -> per-key count in the partition's state +
enrich -> outputs`` (at least once).

* ``partitions.alo.{1,2,4}worker.events_per_s`` and ``partitions.scaling.{2,4}v1``: 1, 2
  and 4 worker processes. Workers start, join, wait until the partitions are balanced
  between them (each owns its share), then wait at a gate: start-up and the initial
  rebalance are not timed; the clock runs from the gate until every partition's group has
  no pending and no undelivered entry.
* ``partitions.eos.1worker.events_per_s``: the same in exactly-once, one worker.
* ``partitions.vs_plain_stream.1worker``: one worker over 12 partitions against one
  ``RedisStreamSource`` worker on a single stream holding the same events (same
  pipeline), in this run: the cost of partitioning (a commit per partition switch).
* ``partitions.rebalance.after_expiry_s``: two workers own 6 partitions each; one is
  killed with SIGKILL and an event is written to each of its partitions. For each, the time
  from its lease's expiry (the lease's ``PTTL`` read just before the kill) to the first
  event the survivor processes in it; the figure is the worst partition (target < 2 s with
  ``lease_ttl=2s``, heartbeats every 0.67 s). ``partitions.rebalance.after_kill_s``: from
  the kill (the detection time, about ``lease_ttl``, included). Both are the worst of 3
  kills (1 with ``--quick``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import orjson
import redis

from bench.recorder import Recorder

DESCRIPTION = "keyed partitions: 1/2/4 workers over 12 partitions, rebalance time after a kill"

URL = "redis://127.0.0.1:6379/0"
PARTITIONS = 12

WORKER_PIPELINE = '''
"""Benchmark worker over a partitioned stream: count per key in the partition's state."""
import os
import time
from collections import Counter

import trio
from haive.dataflow.runtime.config import StreamConfig
from haive.dataflow.runtime.nodes import Node
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive_plugin_redis import PartitionedStreamSource, RedisStreamSource

K = int(os.environ["BENCH_K"])


class GatedSource(PartitionedStreamSource):
    """Joins, waits until the partitions are balanced, then waits at the gate."""

    async def open(self):
        await super().open()
        r = self.client.redis
        while len(self.live_members) < K or not self.balanced:
            await trio.sleep(0.05)
            await self.rebalance()
        await self.client.call(r.rpush, os.environ["BENCH_READY"], self.consumer)
        await self.client.call(r.blpop, [os.environ["BENCH_GO"]], 0)


class GatedStream(RedisStreamSource):
    async def open(self):
        await super().open()
        r = self.client.redis
        await self.client.call(r.rpush, os.environ["BENCH_READY"], self.consumer)
        await self.client.call(r.blpop, [os.environ["BENCH_GO"]], 0)


if os.environ.get("BENCH_PLAIN"):
    source = GatedStream(os.environ["BENCH_PLAIN"], batch_size=500, block="20ms",
                         stop_when_drained=True)
    sink = source.sink(os.environ["BENCH_PLAIN"] + ":out-" + os.environ["BENCH_RUN"])
else:
    source = GatedSource(
        os.environ["BENCH_NAME"], int(os.environ["BENCH_PARTITIONS"]),
        delivery=os.environ["BENCH_DELIVERY"], batch_size=500, block="20ms",
        lease_ttl=os.environ.get("BENCH_LEASE_TTL", "3s"),
        stop_when_drained=not os.environ.get("BENCH_FIRST"),
    )
    sink = source.sink("out-" + os.environ["BENCH_RUN"])
counts = source.state("counts")
first = os.environ.get("BENCH_FIRST")


class Enrich(Node):
    name = "enrich"

    async def process_batch(self, batch, ctx):
        if first:
            r = source.client.redis
            await source.client.call(
                r.hsetnx, first, str(source.current_member.partition), repr(time.time()))
        await counts.add_many(Counter(e["key"] for e in batch))
        return [{"key": e["key"], "seq": e["seq"], "v2": e["v"] * 2} for e in batch]


pipeline = StreamingPipeline("bench", config=StreamConfig(chunk_size=500, buffer_size=4096))
pipeline.set_source(source)
pipeline.add_processor(Enrich())
pipeline.set_sink(sink)
'''


def _stream(name: str, partition: int) -> str:
    return f"{{{name}:p{partition}}}"


def _fill(r: redis.Redis, name: str, n: int, plain: str) -> None:
    from haive_plugin_redis.streams import pack_xadds

    r.set(f"{{{name}}}:partitions", PARTITIONS)
    conn = r.connection_pool.get_connection()
    try:
        for start in range(0, n, 5000):
            by_partition: dict[int, list[list[bytes]]] = {}
            everything = []
            for seq in range(start, min(n, start + 5000)):
                key = f"k{seq % 1000}"
                entry = [b"data", orjson.dumps({"key": key, "seq": seq, "v": seq * 0.5})]
                by_partition.setdefault(zlib.crc32(key.encode()) % PARTITIONS, []).append(entry)
                everything.append(entry)
            packed = [pack_xadds(_stream(name, p), e, None, True) for p, e in by_partition.items()]
            packed.append(pack_xadds(plain, everything, None, True))
            conn.send_packed_command(packed)
            for _ in range(2 * len(everything)):
                conn.read_response()
    finally:
        r.connection_pool.release(conn)


def _drained(r: redis.Redis, streams: list[str], group: str) -> bool:
    for stream in streams:
        infos = [i for i in r.xinfo_groups(stream) if i["name"] == group.encode()]
        if not infos or infos[0]["pending"] or infos[0]["lag"]:
            return False
    return True


def _start(file: str, group: str, consumer: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "haive.dataflow.cli", "worker", file,
         "--group", group, "--consumer", consumer],
        env={**os.environ, **env},
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _workers(
    r: redis.Redis, file: str, name: str, run: str, delivery: str, k: int, n: int,
    plain: str | None = None,
) -> float:
    group = f"g-{run}"
    ready, go = f"{{{name}}}:ready-{run}", f"{{{name}}}:go-{run}"
    env = {
        "BENCH_NAME": name,
        "BENCH_PARTITIONS": str(PARTITIONS),
        "BENCH_DELIVERY": delivery,
        "BENCH_READY": ready,
        "BENCH_GO": go,
        "BENCH_RUN": run,
        "BENCH_K": str(k),
        **({"BENCH_PLAIN": plain} if plain else {}),
    }
    streams = [plain] if plain else [_stream(name, p) for p in range(PARTITIONS)]
    procs = [_start(file, group, f"{run}-{i}", env) for i in range(k)]
    try:
        deadline = time.monotonic() + 180
        while r.llen(ready) < k:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{run}: workers did not reach the gate")
            time.sleep(0.01)
        started = time.perf_counter()
        r.rpush(go, *range(k))
        while not _drained(r, streams, group):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{run}: not drained in time")
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outs = [f"{plain}:out-{run}"] if plain else [f"{s}:out-{run}" for s in streams]
    written = sum(r.xlen(o) for o in outs)
    if written < n:
        raise RuntimeError(f"{run}: only {written} of {n} outputs")
    r.delete(*outs, ready, go)
    return n / elapsed


def _rebalance(r: redis.Redis, file: str) -> tuple[float, float]:
    """Seconds from lease expiry (and from the kill) to the survivor's first event."""
    name = f"haive-bench-rb-{uuid.uuid4().hex[:8]}"
    first = f"{{{name}}}:first"
    env = {
        "BENCH_NAME": name,
        "BENCH_PARTITIONS": str(PARTITIONS),
        "BENCH_DELIVERY": "at_least_once",
        "BENCH_READY": f"{{{name}}}:ready",
        "BENCH_GO": f"{{{name}}}:go",
        "BENCH_RUN": "rb",
        "BENCH_K": "2",
        "BENCH_LEASE_TTL": "2s",
        "BENCH_FIRST": first,
    }
    r.rpush(f"{{{name}}}:go", 0, 1)
    procs = {c: _start(file, "rb", c, env) for c in ("victim", "survivor")}
    try:
        deadline = time.monotonic() + 120
        while r.llen(f"{{{name}}}:ready") < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                raise RuntimeError("rebalance: workers did not balance")
            time.sleep(0.01)
        leases = [f"{_stream(name, p)}:lease:rb" for p in range(PARTITIONS)]
        owned = [p for p, key in enumerate(leases) if (r.get(key) or b"").startswith(b"victim:")]
        killed = time.time()
        procs["victim"].send_signal(signal.SIGKILL)
        procs["victim"].wait()
        # Read after the kill: no renewal can move the expiry any more.
        now = time.time()
        expiry = {p: now + max(0, r.pttl(leases[p])) / 1000 for p in owned}
        for p in owned:
            r.xadd(_stream(name, p), {"data": orjson.dumps({"key": "x", "seq": p, "v": 0})})
        while r.hlen(first) < len(owned) or not all(r.hexists(first, p) for p in owned):
            if time.monotonic() > deadline:
                raise RuntimeError("rebalance: the survivor did not take the partitions")
            time.sleep(0.005)
        seen = {int(p): float(t) for p, t in r.hgetall(first).items()}
        after_expiry = max(seen[p] - expiry[p] for p in owned)
        after_kill = max(seen[p] - killed for p in owned)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        keys = list(r.scan_iter(match=f"*{name}*", count=1000))
        if keys:
            r.delete(*keys)
    return after_expiry, after_kill


def run(rec: Recorder) -> None:
    n = 40_000 if rec.quick else 200_000
    r = redis.Redis.from_url(URL)
    try:
        r.ping()
    except redis.ConnectionError:
        print("  no Redis on 127.0.0.1:6379: partitions skipped")
        return
    name = f"haive-bench-{uuid.uuid4().hex[:8]}"
    plain = f"{{{name}}}:plain"
    workdir = tempfile.mkdtemp(prefix="haive-bench-partitions-")
    file = str(Path(workdir) / "bench_partitioned_worker.py")
    Path(file).write_text(WORKER_PIPELINE)
    try:
        _fill(r, name, n, plain)
        rates: dict[int, float] = {}
        rates[1] = rec.figure(
            "partitions.alo.1worker.events_per_s",
            _workers(r, file, name, "alo1", "at_least_once", 1, n),
            "events/s",
            f"{PARTITIONS} partitions",
        )
        # Measured next to it (load on the shared machine moves between runs).
        single = rec.figure(
            "partitions.plain_stream.1worker.events_per_s",
            _workers(r, file, name, "plain1", "at_least_once", 1, n, plain=plain),
            "events/s",
            "RedisStreamSource, one stream, same pipeline",
        )
        rec.ratio("partitions.vs_plain_stream.1worker", rates[1], single)
        for k in (2, 4):
            rates[k] = rec.figure(
                f"partitions.alo.{k}worker.events_per_s",
                _workers(r, file, name, f"alo{k}", "at_least_once", k, n),
                "events/s",
                f"{PARTITIONS} partitions",
            )
        rec.ratio("partitions.scaling.2v1", rates[2], rates[1])
        rec.ratio("partitions.scaling.4v1", rates[4], rates[1], "2 cores shared")
        rec.figure(
            "partitions.eos.1worker.events_per_s",
            _workers(r, file, name, "eos1", "exactly_once", 1, n),
            "events/s",
        )
        trials = [_rebalance(r, file) for _ in range(1 if rec.quick else 3)]
        rec.figure(
            "partitions.rebalance.after_expiry_s",
            max(t[0] for t in trials),
            "s",
            f"worst partition, worst of {len(trials)} kills; target < 2 s",
        )
        rec.figure(
            "partitions.rebalance.after_kill_s",
            max(t[1] for t in trials),
            "s",
            "lease_ttl=2s, detection included",
        )
    finally:
        keys = list(r.scan_iter(match=f"*{name}*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()
