"""Checkpoints: source position + node state saved together; crash, restart, replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import trio

from haive.dataflow import StreamConfig, StreamingPipeline
from haive.dataflow.builtins.sinks import JsonLinesSink, MemorySink
from haive.dataflow.builtins.sources import AsyncIterableSource, IterableSource, JsonLinesSource
from haive.dataflow.errors import ConfigError, NodeError
from haive.dataflow.state import (
    StatefulProcessor,
    StateStore,
    Sum,
    TumblingWindow,
    WindowedAggregateNode,
)
from haive.dataflow.state.checkpoint import Checkpointer, CheckpointError, CheckpointRecord


class RunningCount(StatefulProcessor):
    def initial_state(self, key):
        return 0

    def process(self, item, state):
        state.value += 1
        return {"key": item["key"], "n": state.value}


class CrashOnce:
    """Raises on one item, the first time only (a crash mid-stream)."""

    def __init__(self, at):
        self.at = at
        self.armed = True

    def __call__(self, item):
        if self.armed and item["i"] == self.at:
            self.armed = False
            raise RuntimeError("power cut")
        return item


def events(n, keys=5):
    return [{"i": i, "key": f"k{i % keys}", "ts": i / 100, "value": i % 3} for i in range(n)]


def build(items, store, sink, crash, **options):
    pipeline = StreamingPipeline("ckpt", on_error="raise", config=StreamConfig(chunk_size=16))
    pipeline.set_source(IterableSource(items))
    pipeline.add_node(crash)
    pipeline.add_node(RunningCount("count", store=store, key="key"))
    pipeline.set_sink(sink)
    return pipeline, pipeline.enable_checkpointing(store, **options)


async def test_crash_and_resume_in_process_exactly_once():
    store = StateStore(namespace="t")
    sink = MemorySink()
    items = events(500)
    crash = CrashOnce(at=333)
    first, checkpointer = build(items, store, sink, crash, every=50)
    with pytest.raises(NodeError, match="power cut"):
        await first.execute()
    assert checkpointer.stats.taken >= 5
    # State in the store is only what checkpoints committed: at most the checkpointed prefix.
    committed = sum([v for _, v in await store.scan("count:")])
    assert committed == (await checkpointer.latest()).source
    second, again = build(items, store, sink, crash, every=50)
    await second.execute()
    assert again.stats.restored_seq == checkpointer.stats.taken
    # Every input produced exactly one output, in order per key, across the crash.
    per_key: dict[str, list[int]] = {}
    for out in sink.items:
        per_key.setdefault(out["key"], []).append(out["n"])
    assert per_key == {f"k{k}": list(range(1, 101)) for k in range(5)}
    assert dict(await store.scan("count:")) == {f"count:k{k}": 100 for k in range(5)}
    latest = await again.latest()
    assert latest.completed and latest.source == 500


async def test_keyed_state_in_another_store_than_the_checkpoints():
    checkpoints = StateStore(namespace="ckpt")
    state = StateStore(namespace="state")
    sink = MemorySink()
    items = events(200)
    crash = CrashOnce(at=120)

    def pipeline():
        p = StreamingPipeline("two", on_error="raise", config=StreamConfig(chunk_size=8))
        p.set_source(IterableSource(items))
        p.add_node(crash)
        p.add_node(RunningCount("count", store=state, key="key"))
        p.set_sink(sink)
        p.enable_checkpointing(checkpoints, every=30)
        return p

    with pytest.raises(NodeError):
        await pipeline().execute()
    await pipeline().execute()
    assert dict(await state.scan("count:")) == {f"count:k{k}": 40 for k in range(5)}
    assert [o["n"] for o in sink.items if o["key"] == "k0"] == list(range(1, 41))


async def test_completed_run_is_not_replayed():
    store = StateStore()
    sink = MemorySink()
    first, _ = build(events(40), store, sink, CrashOnce(-1), every=7)
    await first.execute()
    assert len(sink.items) == 40
    second, checkpointer = build(events(40), store, sink, CrashOnce(-1), every=7)
    await second.execute()
    assert checkpointer.stats.restored_completed
    assert len(sink.items) == 40
    fresh, checkpointer = build(
        events(40), store, MemorySink(), CrashOnce(-1), every=7, resume=False
    )
    await fresh.execute()
    assert fresh.sink.items[-1]["n"] == 16  # counts went on from the stored state


async def test_interval_checkpoints_on_trio_clock(autojump_clock):
    async def slow():
        for i in range(50):
            await trio.sleep(0.1)
            yield {"i": i, "key": "a"}

    class SlowIterable(IterableSource):
        async def batches(self, chunk_size):
            self._yielded = self._start
            async for item in slow():
                if item["i"] < self._start:
                    continue
                self._yielded += 1
                yield [item]

    store = StateStore()
    pipeline = StreamingPipeline("timed")
    pipeline.set_source(SlowIterable([]))
    pipeline.add_node(RunningCount("count", store=store, key="key"))
    pipeline.set_sink(MemorySink())
    checkpointer = pipeline.enable_checkpointing(store, interval="1s")
    await pipeline.execute()
    # 5 s of input: one checkpoint per second, plus the final one.
    assert 4 <= checkpointer.stats.taken <= 6
    assert (await checkpointer.latest()).completed


async def test_window_state_survives_restart():
    store = StateStore()
    sink = MemorySink()
    items = events(300)

    def pipeline(crash):
        p = StreamingPipeline("win", on_error="raise", config=StreamConfig(chunk_size=10))
        p.set_source(IterableSource(items))
        p.add_node(crash)
        p.add_node(
            WindowedAggregateNode(
                name="w",
                window=TumblingWindow("1s"),
                key="key",
                timestamp="ts",
                aggregate=Sum("value"),
            )
        )
        p.set_sink(sink)
        p.enable_checkpointing(store, every=25)
        return p

    crash = CrashOnce(at=155)
    with pytest.raises(NodeError):
        await pipeline(crash).execute()
    await pipeline(crash).execute()
    got = sorted((r.key, r.start, r.count, r.value) for r in sink.items)
    expected: Counter = Counter()
    sums: Counter = Counter()
    for e in items:
        expected[(e["key"], float(e["ts"] // 1))] += 1
        sums[(e["key"], float(e["ts"] // 1))] += e["value"]
    assert got == sorted((k, s, n, sums[(k, s)]) for (k, s), n in expected.items())


async def test_damaged_checkpoint_is_dead_lettered_and_run_starts_over():
    store = StateStore(namespace="d")
    sink = MemorySink()
    first, checkpointer = build(events(30), store, sink, CrashOnce(-1), every=10)
    await first.execute()
    raw = await store.backend.get("d:checkpoint:ckpt")
    await store.backend.put("d:checkpoint:ckpt", raw[:-3] + b"xyz")
    with pytest.raises(CheckpointError, match="checksum"):
        await checkpointer.latest()
    second_sink = MemorySink()
    second, again = build(events(30), store, second_sink, CrashOnce(-1), every=10)
    await second.execute()
    assert again.stats.corrupt == 1 and again.stats.restored_seq is None
    assert len(second_sink.items) == 30  # nothing lost
    [letter] = await store.dead_letters()
    assert letter.key == "checkpoint:ckpt" and "damaged checkpoint" in letter.reason


def test_record_decode_errors():
    with pytest.raises(CheckpointError, match="header"):
        CheckpointRecord.decode(b"nope")


def test_enable_checkpointing_errors(tmp_path):
    store = StateStore()
    p = StreamingPipeline("p")
    with pytest.raises(ConfigError, match="set the source first"):
        p.enable_checkpointing(store)

    async def gen():
        yield 1

    p.set_source(AsyncIterableSource(gen()))
    with pytest.raises(ConfigError, match="cannot be checkpointed"):
        p.enable_checkpointing(store)
    p.set_source(IterableSource([1]))
    p.set_sink(JsonLinesSink(tmp_path / "o.jsonl", mode="wb"))
    with pytest.raises(ConfigError, match="append"):
        p.enable_checkpointing(store)
    p.set_sink(MemorySink())
    p.enable_checkpointing(store)
    with pytest.raises(ConfigError, match="already"):
        p.enable_checkpointing(store)
    with pytest.raises(ConfigError, match="interval"):
        Checkpointer(store, name="x", interval=None)
    with pytest.raises(ConfigError, match="every"):
        Checkpointer(store, name="x", every=0)


async def test_jsonl_source_position_and_seek(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"n":0}\n\n{"n":1}\n{"n":2}\n{"n":3}')  # blank line, no final newline
    source = JsonLinesSource(path)
    seen = []
    async for batch in source.batches(2):
        seen.append((batch, source.position()))
    assert seen[0] == ([{"n": 0}, {"n": 1}], {"offset": 17, "line": 3})
    assert seen[-1][1] == {"offset": path.stat().st_size, "line": 5}
    source.seek({"offset": 17, "line": 3})
    rest = [item async for b in source.batches(10) for item in b]
    assert rest == [{"n": 2}, {"n": 3}]
    with pytest.raises(ConfigError):
        source.seek(17)


async def test_jsonl_sink_rolls_back(tmp_path):
    path = tmp_path / "out.jsonl"
    sink = JsonLinesSink(path)
    async with sink:
        await sink.write_batch([1, 2])
        mark = await sink.position()
        await sink.write_batch([3])
    await sink.seek(mark)
    assert path.read_text() == "1\n2\n"
    path.write_text("")
    with pytest.raises(CheckpointError, match="truncated"):
        await sink.seek(mark)


# -- a real crash: SIGKILL a process mid-stream, restart it, check nothing is lost ----------

_WORKER = textwrap.dedent(
    """
    import sys, trio
    from haive.dataflow import StreamConfig, StreamingPipeline, StreamProcessor
    from haive.dataflow.builtins.sinks import JsonLinesSink
    from haive.dataflow.builtins.sources import JsonLinesSource
    from haive.dataflow.state import StatefulProcessor, StateStore, Sum, TumblingWindow, WindowedAggregateNode

    class RunningCount(StatefulProcessor):
        def initial_state(self, key):
            return 0

        def process(self, item, state):
            state.value += 1
            return item

    class Slow(StreamProcessor):
        async def process_batch(self, batch, ctx):
            await trio.sleep(float(sys.argv[4]))
            return batch

    async def main(workdir):
        store = StateStore(f"{workdir}/state.db", namespace="job")
        pipeline = StreamingPipeline("job", on_error="raise", config=StreamConfig(chunk_size=100))
        pipeline.set_source(JsonLinesSource(f"{workdir}/in.jsonl"))
        pipeline.add_node(Slow("slow"))
        pipeline.add_node(RunningCount("count", store=store, key="key"))
        pipeline.add_node(WindowedAggregateNode(
            name="win", window=TumblingWindow("1s"), key="key", timestamp="ts",
            aggregate=Sum("value")))
        pipeline.set_sink(JsonLinesSink(f"{workdir}/out.jsonl"))

        def progress(record):
            print("checkpoint", record.seq, record.source["line"], flush=True)

        pipeline.enable_checkpointing(store, every=int(sys.argv[2]), interval=sys.argv[3],
                                      on_checkpoint=progress)
        report = await pipeline.execute()
        print("done", report.read, flush=True)

    trio.run(main, sys.argv[1])
    """
)


def _run_worker(workdir: Path, *, every: int, slow: float, kill_after_checkpoints: int | None):
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(workdir), str(every), "30s", str(slow)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if kill_after_checkpoints is not None and line.startswith("checkpoint"):
                if int(line.split()[1]) >= kill_after_checkpoints:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, lines, proc.stderr.read()


@pytest.mark.slow
def test_sigkill_mid_stream_and_resume_loses_nothing(tmp_path):
    n = 6000
    items = [{"key": f"k{i % 13}", "ts": i / 500, "value": i % 7} for i in range(n)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(e) + "\n" for e in items))

    code, lines, err = _run_worker(tmp_path, every=500, slow=0.01, kill_after_checkpoints=4)
    assert code == -signal.SIGKILL, (lines, err)
    assert not any(line.startswith("done") for line in lines)
    killed_at = int([line for line in lines if line.startswith("checkpoint")][-1].split()[2])
    assert 0 < killed_at < n

    code, lines, err = _run_worker(tmp_path, every=500, slow=0.0, kill_after_checkpoints=None)
    assert code == 0, err
    # The restarted run read only what came after the last checkpoint.
    assert lines[-1].startswith("done") and int(lines[-1].split()[1]) < n

    # Output: one result per (key, 1s window) with exact counts and sums: 0 lost, 0 twice.
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    got = sorted((r["key"], r["start"], r["count"], r["value"]) for r in results)
    counts: Counter = Counter()
    sums: Counter = Counter()
    for e in items:
        counts[(e["key"], float(e["ts"] // 1))] += 1
        sums[(e["key"], float(e["ts"] // 1))] += e["value"]
    assert got == sorted((k, s, c, sums[(k, s)]) for (k, s), c in counts.items())

    # Keyed state saved with the checkpoints equals the input exactly.
    async def state():
        async with StateStore(tmp_path / "state.db", namespace="job") as store:
            return dict(await store.scan("count:"))

    assert trio.run(state) == {
        f"count:k{k}": Counter(e["key"] for e in items)[f"k{k}"] for k in range(13)
    }
