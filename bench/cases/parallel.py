"""CPU-bound transform on 1 and 2 worker processes: does a 2-core machine really use 2 cores?

Each event is 1 KB; the transform feeds it 85 times through SHA-256 (about 50 us of pure
CPU per event on the reference machine; the measured figure is printed). It runs:

* inline (``TransformNode`` default executor: one core, no process boundary),
* with ``executor="process"`` and 1 worker process, then 2 worker processes
  (``ordered=True``; micro-batches of up to ``chunk_size`` cut into one chunk per worker,
  one pickle per chunk each way).

Figures are end to end, worker start-up included (``parallel.pool.startup_ms`` shows it);
the speed-up is 2 workers over 1 worker. Best of two runs each, to damp noise from a shared
machine.
"""

from __future__ import annotations

import hashlib
import time

import trio

from bench.recorder import Recorder, best_of
from haive.dataflow import StreamConfig, StreamingPipeline, TransformNode
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.parallel import open_process_pool

DESCRIPTION = (
    "CPU-heavy transform (SHA-256 x85 over 1 KB per event): inline vs 1 and 2 worker processes"
)

ROUNDS = 85


def cpu_heavy(payload: bytes) -> bytes:
    """About 50 us of CPU: 85 KB through SHA-256."""
    h = hashlib.sha256()
    for _ in range(ROUNDS):
        h.update(payload)
    return h.digest()


def _events(n: int) -> list[bytes]:
    return [i.to_bytes(4, "little") * 256 for i in range(n)]


def _rate(events: list[bytes], executor: str, workers: int) -> float:
    pipeline = StreamingPipeline("bench-parallel", config=StreamConfig(chunk_size=1024))
    pipeline.set_source(IterableSource(events))
    pipeline.add_node(
        TransformNode(
            name="hash",
            transform_fn=cpu_heavy,
            executor=executor,
            concurrency=workers,
            ordered=True,
        )
    )
    sink = MemorySink()
    pipeline.set_sink(sink)
    started = time.perf_counter()
    report = trio.run(pipeline.execute)
    elapsed = time.perf_counter() - started
    assert report.processed == len(events), report
    assert sink.items[-1] == cpu_heavy(events[-1])
    return len(events) / elapsed


def _startup_ms(workers: int) -> float:
    async def main() -> float:
        started = trio.current_time()
        async with open_process_pool(cpu_heavy, workers, name="startup"):
            return (trio.current_time() - started) * 1000

    return trio.run(main)


def run(rec: Recorder) -> None:
    n = 4_000 if rec.quick else 40_000
    events = _events(n)
    sample = events[:2000]
    started = time.perf_counter()
    for payload in sample:
        cpu_heavy(payload)
    rec.figure(
        "parallel.cpu.us_per_event", (time.perf_counter() - started) / len(sample) * 1e6, "us"
    )
    runs = 1 if rec.quick else 2
    inline = best_of(runs, lambda: _rate(events, "inline", 1))
    rec.figure("parallel.cpu.inline.events_per_s", inline, "events/s")
    one = best_of(runs, lambda: _rate(events, "process", 1))
    rec.figure("parallel.cpu.1worker.events_per_s", one, "events/s")
    two = best_of(runs, lambda: _rate(events, "process", 2))
    rec.figure("parallel.cpu.2workers.events_per_s", two, "events/s")
    # The headline is against running inline: one worker process is slower than inline (it
    # pays the crossings), so dividing by it would flatter the speed-up.
    rec.ratio("parallel.cpu.2workers.vs_inline", two, inline, "headline (target >= 1.8)")
    rec.ratio("parallel.cpu.speedup", two, one, "2 workers / 1 worker process (secondary)")
    rec.figure("parallel.pool.startup_ms", _startup_ms(2), "ms", "2 workers, started concurrently")
