"""Redis Streams end to end through ``haive worker`` processes.

One input stream of N keyed JSON events (``{"key", "seq", "v"}``) is filled once; every
configuration reads all of it through its own consumer group and writes its own output
stream. A worker runs the pipeline ``decode -> per-key count in Redis state + enrich ->
RedisStreamSink`` (the same pipeline for both delivery modes). Workers start, join the group
and wait at a gate, so process start-up is not timed: the clock runs from opening the gate
until the group has no pending and no undelivered entry.

* ``redis_streams.alo.{1,2,4}worker.events_per_s`` and ``redis_streams.scaling.{2,4}v1``:
  at-least-once with 1, 2 and 4 worker processes sharing a consumer group.
* ``redis_streams.eos.1worker.events_per_s`` and ``redis_streams.eos_vs_alo``: the same with
  ``exactly_once`` (state, outputs and acks in one MULTI/EXEC per epoch), as a ratio.
* ``redis_streams.baseline_raw.events_per_s``: redis-py's plain loop of ``XREADGROUP COUNT
  1000`` + ``XACK`` (no decoding, no processing, no output) on the same stream, in this run,
  alternating with the one-worker runs; ``redis_streams.alo_vs_raw`` is our 1-worker figure
  over it. ``*.cpu_us_per_event``: the CPU time of the raw loop's process and of the worker
  process per event (Linux), steadier than rates when other jobs share the cores.
* ``redis_streams.sink.events_per_s`` (RedisStreamSink's hand-packed pipelined XADD) against
  ``redis_streams.baseline_redispy_pipeline_xadd.events_per_s`` (redis-py's pipeline).

Redis state latency (``state.redis.*``) is measured by the ``state`` case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import redis
import trio

from bench.recorder import Recorder, best_of

DESCRIPTION = "Redis Streams workers (1/2/4 processes, at-least/exactly-once) vs raw redis-py"

URL = "redis://127.0.0.1:6379/0"

WORKER_PIPELINE = '''
"""Benchmark worker: count per key in Redis state, enrich, write to the output stream."""
import os
from collections import Counter

from haive.dataflow.runtime.config import StreamConfig
from haive.dataflow.runtime.nodes import Node
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive_plugin_redis import RedisStreamSource


class GatedSource(RedisStreamSource):
    """Joins the group, then waits at the benchmark's gate before reading."""

    async def open(self):
        await super().open()
        r = self.client.redis
        await self.client.call(r.rpush, os.environ["BENCH_READY"], self.consumer)
        await self.client.call(r.blpop, [os.environ["BENCH_GO"]], 0)


source = GatedSource(
    os.environ["BENCH_IN"],
    delivery=os.environ["BENCH_DELIVERY"],
    batch_size=500,
    ack_every=8000,  # read ahead 16 batches between acknowledgment points
    block="20ms",
    stop_when_drained=True,
)
counts = source.state("counts")


class Enrich(Node):
    name = "enrich"

    async def process_batch(self, batch, ctx):
        await counts.add_many(Counter(e["key"] for e in batch))
        return [{"key": e["key"], "seq": e["seq"], "v2": e["v"] * 2} for e in batch]


pipeline = StreamingPipeline("bench", config=StreamConfig(chunk_size=500, buffer_size=4096))
pipeline.set_source(source)
pipeline.add_processor(Enrich())
pipeline.set_sink(source.sink(os.environ["BENCH_OUT"]))
'''


def _fill(r: redis.Redis, stream: str, n: int) -> None:
    from haive_plugin_redis.streams import pack_xadds

    conn = r.connection_pool.get_connection()
    try:
        for start in range(0, n, 5000):
            entries = [
                [b"data", orjson.dumps({"key": f"k{seq % 100}", "seq": seq, "v": seq * 0.5})]
                for seq in range(start, min(n, start + 5000))
            ]
            conn.send_packed_command([pack_xadds(stream, entries, None, True)])
            for _ in entries:
                conn.read_response()
    finally:
        r.connection_pool.release(conn)


def _drained(r: redis.Redis, stream: str, group: str) -> bool:
    for info in r.xinfo_groups(stream):
        if info["name"] == group.encode():
            return info["pending"] == 0 and info["lag"] == 0
    return False


def _workers(
    r: redis.Redis,
    file: str,
    stream: str,
    tag: str,
    run: str,
    delivery: str,
    k: int,
    n: int,
    cpu_per_event: list[float] | None = None,
) -> float:
    group, out = f"g-{run}", f"{{{tag}}}:out-{run}"
    ready, go = f"{{{tag}}}:ready-{run}", f"{{{tag}}}:go-{run}"
    r.xgroup_create(stream, group, id="0")
    env = {
        **os.environ,
        "BENCH_IN": stream,
        "BENCH_OUT": out,
        "BENCH_DELIVERY": delivery,
        "BENCH_READY": ready,
        "BENCH_GO": go,
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "haive.dataflow.cli",
                "worker",
                file,
                "--group",
                group,
                "--consumer",
                f"{run}-{i}",
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for i in range(k)
    ]
    try:
        deadline = time.monotonic() + 120
        while r.llen(ready) < k:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{run}: workers did not reach the gate")
            time.sleep(0.01)
        cpu_before = sum(_cpu_seconds(p.pid) for p in procs)
        started = time.perf_counter()
        r.rpush(go, *range(k))
        # Drained = nothing pending, nothing left to read. Checked every 20 ms: often enough
        # for runs of seconds (<= 1 % of the time), rarely enough not to take CPU from the
        # workers on the 2 shared cores. (Waiting for the processes to exit would add their
        # interpreter shutdown to the time.)
        while not _drained(r, stream, group):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{run}: not drained in time")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu_before
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    written = r.xlen(out)
    if written < n:
        raise RuntimeError(f"{run}: only {written} of {n} outputs")
    r.delete(out, ready, go)
    if cpu_per_event is not None:
        cpu_per_event.append(cpu / n * 1e6)
    return n / elapsed


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` so far (Linux; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raw_baseline(
    r: redis.Redis, stream: str, n: int, group: str, cpu_per_event: list[float] | None = None
) -> float:
    r.xgroup_create(stream, group, id="0")
    cpu_started = time.process_time()
    started = time.perf_counter()
    done = 0
    while done < n:
        reply = r.xreadgroup(group, "raw", {stream: ">"}, count=1000)
        if not reply:
            break
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        r.xack(stream, group, *[entry_id for entry_id, _ in entries])
        done += len(entries)
    elapsed = time.perf_counter() - started
    if cpu_per_event is not None:
        cpu_per_event.append((time.process_time() - cpu_started) / max(1, done) * 1e6)
    return done / elapsed


def _sink_rates(r: redis.Redis, tag: str, n: int) -> tuple[float, float]:
    from haive_plugin_redis import RedisStreamSink

    items = [{"key": f"k{i % 100}", "seq": i, "v": i * 0.5} for i in range(n)]

    async def ours() -> float:
        sink = RedisStreamSink(f"{{{tag}}}:sink-ours", url=URL)
        async with sink:
            started = time.perf_counter()
            for start in range(0, n, 1000):
                await sink.write_batch(items[start : start + 1000])
            return n / (time.perf_counter() - started)

    ours_rate = trio.run(ours)
    started = time.perf_counter()
    for start in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for item in items[start : start + 1000]:
            pipe.xadd(f"{{{tag}}}:sink-redispy", {"data": orjson.dumps(item)})
        pipe.execute()
    theirs = n / (time.perf_counter() - started)
    r.delete(f"{{{tag}}}:sink-ours", f"{{{tag}}}:sink-redispy")
    return ours_rate, theirs


def run(rec: Recorder) -> None:
    n = 40_000 if rec.quick else 200_000
    r = redis.Redis.from_url(URL)
    try:
        r.ping()
    except redis.ConnectionError:
        print("  no Redis on 127.0.0.1:6379: redis_streams skipped")
        return
    tag = f"haive-bench-{uuid.uuid4().hex[:8]}"
    stream = f"{{{tag}}}:in"
    workdir = tempfile.mkdtemp(prefix="haive-bench-redis-")
    file = str(Path(workdir) / "bench_worker.py")
    Path(file).write_text(WORKER_PIPELINE)
    try:
        _fill(r, stream, n)
        # The same repetitions on every side: best of two runs each. The raw loop and one
        # worker alternate (raw, worker, raw, worker), so their ratio compares runs made
        # under the same load on the shared cores.
        attempts = iter(range(1_000))
        raws: list[float] = []
        ones: list[float] = []
        raw_cpu: list[float] = []
        one_cpu: list[float] = []
        for _ in range(2):
            raws.append(_raw_baseline(r, stream, n, f"g-raw-{next(attempts)}", raw_cpu))
            ones.append(
                _workers(
                    r, file, stream, tag, f"alo1-{next(attempts)}", "at_least_once", 1, n, one_cpu
                )
            )
        raw = rec.figure(
            "redis_streams.baseline_raw.events_per_s",
            max(raws),
            "events/s",
            "redis-py XREADGROUP COUNT 1000 + XACK, no processing; best of 2",
        )
        rates: dict[int, float] = {
            1: rec.figure(
                "redis_streams.alo.1worker.events_per_s",
                max(ones),
                "events/s",
                "best of 2, alternating with the raw loop",
            )
        }
        for k in (2, 4):
            rates[k] = rec.figure(
                f"redis_streams.alo.{k}worker.events_per_s",
                best_of(
                    2,
                    lambda k=k: _workers(
                        r, file, stream, tag, f"alo{k}-{next(attempts)}", "at_least_once", k, n
                    ),
                ),
                "events/s",
                "best of 2",
            )
        rec.ratio("redis_streams.scaling.2v1", rates[2], rates[1])
        rec.ratio("redis_streams.scaling.4v1", rates[4], rates[1], "2 cores shared")
        rec.ratio("redis_streams.alo_vs_raw", rates[1], raw)
        if min(one_cpu) > 0:
            # CPU per event moves far less with the other jobs on the 2 cores than rates do.
            rec.figure(
                "redis_streams.baseline_raw.cpu_us_per_event",
                min(raw_cpu),
                "us",
                "the raw loop's process (redis-py + hiredis); best of 2",
            )
            rec.figure(
                "redis_streams.alo.1worker.cpu_us_per_event",
                min(one_cpu),
                "us",
                "the worker process while it runs (decode, state, enrich, XADD, XACK); best of 2",
            )
        eos = rec.figure(
            "redis_streams.eos.1worker.events_per_s",
            _workers(r, file, stream, tag, "eos1", "exactly_once", 1, n),
            "events/s",
        )
        rec.ratio("redis_streams.eos_vs_alo", eos, rates[1], "exactly-once cost")
        ours, theirs = _sink_rates(r, tag, min(n, 100_000))
        rec.figure(
            "redis_streams.sink.events_per_s", ours, "events/s", "hand-packed pipelined XADD"
        )
        rec.figure("redis_streams.baseline_redispy_pipeline_xadd.events_per_s", theirs, "events/s")
        rec.ratio("redis_streams.sink_vs_redispy_pipeline", ours, theirs)
    finally:
        keys = list(r.scan_iter(match=f"{{{tag}}}*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()
