"""max_memory_usage: buffers and caches stay under the cap; the strategy applies at the cap."""

from __future__ import annotations

import json
import os
import sys

import pytest
import trio

from haive.dataflow import ConfigError, StreamConfig, StreamingPipeline
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.runtime.backpressure import BoundedBuffer
from haive.dataflow.runtime.caching import ResultCache
from haive.dataflow.runtime.memory import MemoryGovernor, approx_sizeof

# Runs in a fresh interpreter so nothing else in the test process disturbs its peak RSS.
# A source makes 2000 items of 64 KB (131 MB in all) as fast as it can; the sink sleeps
# 2 ms per batch; every edge may hold 100,000 items. Prints the peak RSS and the totals.
# The interpreter with haive imported holds about 30 MB, so an 80 MB cap leaves ~50 MB for
# data: far less than the uncapped run buffers, far more than the capped ones need.
SCRIPT = r"""
import json, resource, sys
import trio
from haive.dataflow import StreamConfig, StreamingPipeline, TransformNode
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.io.sources import DataSource

N = 2000
cap = None if sys.argv[1] == "none" else sys.argv[1]

class Fast(DataSource):
    async def batches(self, chunk_size):
        for start in range(0, N, chunk_size):
            yield [i.to_bytes(8, "little") * 8192 for i in range(start, min(N, start + chunk_size))]

class Slow(StreamSink):
    async def write_batch(self, items):
        await trio.sleep(0.002)

config = StreamConfig(buffer_size=100_000, chunk_size=64, max_memory_usage=cap)
pipeline = StreamingPipeline("mem", config=config, backpressure=sys.argv[2])
pipeline.set_source(Fast())
pipeline.add_processor(TransformNode(name="same", transform_fn=bytes))
pipeline.set_sink(Slow())
report = trio.run(pipeline.execute)
try:
    # VmHWM: the peak of this process's own memory since exec. ru_maxrss would also count
    # the parent's pages at the fork/exec (a test process that loaded torch: ~800 MB).
    with open("/proc/self/status") as status:
        peak = next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:"))
except OSError:  # no /proc (macOS): the best there is
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak": peak, "processed": report.processed, "dropped": report.dropped}))
"""

CAP = 80_000_000
N = 2000


async def _measure(cap: str, strategy: str) -> dict[str, int]:
    proc = await trio.run_process(
        [sys.executable, "-c", SCRIPT, cap, strategy], capture_stdout=True, capture_stderr=True
    )
    result: dict[str, int] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


async def test_fast_producer_slow_consumer_stays_under_the_cap() -> None:
    runs: dict[tuple[str, str], dict[str, int]] = {}

    async def one(cap: str, strategy: str) -> None:
        runs[cap, strategy] = await _measure(cap, strategy)

    cases = [
        ("none", "block"),
        ("80MB", "block"),
        ("80MB", "drop_newest"),
        ("80MB", "drop_oldest"),
    ]
    # One after the other (each takes well under a second alone): four at once would put
    # their peaks on a shared, loaded machine at the same time. The deadline only guards
    # against a hang; nothing asserted depends on speed.
    with trio.fail_after(600):
        for cap, strategy in cases:
            await one(cap, strategy)
    # Without a cap the same pipeline buffers far more than 80 MB: the check can fail.
    assert runs["none", "block"]["peak"] > CAP
    blocked = runs["80MB", "block"]
    assert blocked["peak"] < CAP
    assert blocked["processed"] == N and blocked["dropped"] == 0
    for strategy in ("drop_newest", "drop_oldest"):
        run = runs["80MB", strategy]
        assert run["peak"] < CAP
        assert run["processed"] + run["dropped"] == N and run["dropped"] > 0


async def test_a_cap_below_what_the_process_uses_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="of at least 32MB"):
        StreamConfig(max_memory_usage="5MB")
    pipeline = StreamingPipeline("p", config=StreamConfig(max_memory_usage="33MB"))
    pipeline.set_source(IterableSource([1]))
    with pytest.raises(
        ConfigError, match=r"max_memory_usage is 33MB, but this process already uses"
    ):
        await pipeline.execute()


def _governor(strategy: str = "block", rss: int = 50_000_000, **kw: object) -> MemoryGovernor:
    buffers = [
        BoundedBuffer(10_000, "block", name="a.in"),
        BoundedBuffer(10_000, "block", name="out"),
    ]
    return MemoryGovernor(
        "200MB",
        buffers=buffers,
        strategy=strategy,
        baseline=40_000_000,
        rss=lambda: rss,
        **kw,  # type: ignore[arg-type]
    )


def test_capacities_follow_the_item_size_estimate() -> None:
    governor = _governor()
    governor.observe([b"x" * 1000] * 10)
    small = governor.buffers[0].buffer_size
    governor.observe([b"x" * 100_000] * 10)
    big = governor.buffers[0].buffer_size
    assert big < small <= 10_000
    per_item = approx_sizeof(b"x" * 100_000)
    assert big * per_item * len(governor.buffers) <= governor.buffer_budget


def test_caches_get_at_most_half_the_budget() -> None:
    cache = ResultCache("1GB")
    governor = _governor(caches=[cache])
    assert cache.max_bytes == governor.budget // 2
    assert governor.buffer_budget == governor.budget - cache.max_bytes


async def test_pressure_applies_the_strategy() -> None:
    drained: list[bool] = []

    async def wait_drained() -> None:
        drained.append(True)

    over = 195_000_000
    block = _governor("block", rss=over, wait_drained=wait_drained)
    assert await block.admit([1, 2]) == [1, 2] and drained == [True]

    newest = _governor("drop_newest", rss=over)
    assert await newest.admit([1, 2, 3]) == []
    assert newest.dropped == 3 and newest.buffers[0].stats.dropped == 3

    oldest = _governor("drop_oldest", rss=over)
    oldest.buffers[0].put_nowait_batch([7, 8])
    assert await oldest.admit([9]) == [9]
    assert oldest.dropped == 2 and len(oldest.buffers[0]) == 0
    assert oldest.pressure_events == 1

    calm = _governor("drop_newest", rss=60_000_000)
    assert await calm.admit([1]) == [1] and calm.pressure_events == 0


# Encodes 200 batches of 500 small dicts with orjson, keeping each batch alive until the
# next (as a pipeline does), and prints the page faults it took.
FAULTS_SCRIPT = r"""
import os, resource, sys
import orjson
from haive.dataflow.runtime.memory import keep_freed_heap
applied = keep_freed_heap() if sys.argv[1] == "keep" else False
items = [{"key": f"k{i % 100}", "seq": i, "v": i * 0.5} for i in range(500)]
batch = [orjson.dumps(item) for item in items]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    batch = [orjson.dumps(item) for item in items]
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_heap_stops_page_faults_per_batch() -> None:
    applied, kept = _faults("keep")
    if not applied:
        pytest.skip("not glibc: mallopt is not available")
    _, default = _faults("default")
    # glibc's default trims the heap top every batch (about one fault per encoded item);
    # kept, the batches reuse the same pages.
    assert kept < 1_000 < default, (kept, default)


def test_keep_freed_heap_leaves_an_operator_setting_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from haive.dataflow.runtime.memory import keep_freed_heap

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_heap() is False
