"""Process and thread executors: results, order, errors, crashes, cancellation, settings."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

from haive.dataflow import (
    ConfigError,
    EventPipeline,
    NodeError,
    RetryPolicy,
    StreamConfig,
    StreamingPipeline,
    TransformNode,
)
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.parallel import (
    NotPicklableError,
    ProcessPoolNode,
    WorkerError,
    open_process_pool,
)

# -- functions run in worker processes (module level, so they pickle by reference) --------


def digest(data: bytes) -> bytes:
    h = data
    for _ in range(20):
        h = hashlib.sha256(h).digest()
    return h


def with_pid(x: int) -> tuple[int, int]:
    time.sleep(0.002)
    return x, os.getpid()


def slow_first(x: int) -> int:
    if x < 4:
        time.sleep(0.05)
    return x * 10


def fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd input {x}")
    return x


def returns_lock(x: int) -> object:
    return threading.Lock() if x == 3 else x


def identity(x: object) -> object:
    return x


def crash_on_13(x: int) -> int:
    if x == 13:
        os._exit(3)
    return x


def sleep_long(x: int) -> int:
    time.sleep(60)
    return x


async def run_pipeline(pipeline: StreamingPipeline) -> list:
    async with pipeline.run() as stream:
        return [result async for result in stream]


# -- results and order --------------------------------------------------------------------


async def test_process_executor_matches_inline_and_keeps_order() -> None:
    data = [bytes([i % 256]) * 1024 for i in range(300)]
    pipeline = StreamingPipeline("p", config=StreamConfig(chunk_size=64))
    pipeline.set_source(IterableSource(data))
    pipeline.add_node(
        TransformNode(name="hash", transform_fn=digest, executor="process", concurrency=2)
    )
    sink = MemorySink()
    pipeline.set_sink(sink)
    report = await pipeline.execute()
    assert report.processed == 300 and report.failed == 0
    assert sink.items == [digest(d) for d in data]


async def test_work_is_spread_over_worker_processes() -> None:
    pipeline = StreamingPipeline("p", config=StreamConfig(chunk_size=32))
    pipeline.set_source(IterableSource(range(256)))
    pipeline.add_node(ProcessPoolNode(name="pid", transform_fn=with_pid, concurrency=2))
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert [x for x, _ in sink.items] == list(range(256))
    pids = {pid for _, pid in sink.items}
    assert len(pids) == 2 and os.getpid() not in pids


async def test_ordered_false_lets_fast_chunks_overtake() -> None:
    outputs = {}
    for ordered in (True, False):
        pipeline = StreamingPipeline("p", config=StreamConfig(chunk_size=8))
        pipeline.set_source(IterableSource(range(8)))
        pipeline.add_node(
            TransformNode(
                name="slow",
                transform_fn=slow_first,
                executor="process",
                concurrency=2,
                ordered=ordered,
            )
        )
        sink = MemorySink()
        pipeline.set_sink(sink)
        await pipeline.execute()
        outputs[ordered] = sink.items
    assert outputs[True] == [x * 10 for x in range(8)]
    # The batch of 8 is cut into two chunks; the first is slow, so unordered output starts
    # with the second chunk.
    assert sorted(outputs[False]) == outputs[True]
    assert outputs[False][:4] == [40, 50, 60, 70]


async def test_event_pipeline_runs_process_nodes() -> None:
    pipeline = EventPipeline("e")
    pipeline.add_node(
        TransformNode(name="h", transform_fn=digest, executor="process", concurrency=2)
    )
    pipeline.connect("input", "h").connect("h", "output")
    async with pipeline.process() as handle:
        result = await handle.send(b"abc")
    assert result.outputs == [digest(b"abc")]


# -- errors -------------------------------------------------------------------------------


def test_lambda_is_refused_with_the_node_name() -> None:
    with pytest.raises(NotPicklableError, match=r"TransformNode 'square'.*lambda"):
        TransformNode(name="square", transform_fn=lambda x: x * x, executor="process")


def test_bad_executor_settings_are_clear() -> None:
    with pytest.raises(ConfigError, match="executor must be one of"):
        TransformNode(name="t", transform_fn=abs, executor="gpu")

    async def fetch(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match="needs a sync function"):
        TransformNode(name="t", transform_fn=fetch, executor="process")


async def test_item_failures_become_results_and_retries_go_to_workers() -> None:
    pipeline = StreamingPipeline("p", retry=RetryPolicy(attempts=3, backoff=0.0, jitter=0.0))
    pipeline.set_source(IterableSource(range(10)))
    node = TransformNode(name="odd", transform_fn=fail_on_odd, executor="process", concurrency=2)
    pipeline.add_node(node)
    results = await run_pipeline(pipeline)
    ok = sorted(r.data for r in results if r.success)
    failed = sorted((r for r in results if not r.success), key=lambda r: r.data)
    assert ok == [0, 2, 4, 6, 8]
    assert [r.data for r in failed] == [1, 3, 5, 7, 9]
    assert all(isinstance(r.error, ValueError) and r.node == "odd" for r in failed)
    assert all(r.attempts == 3 for r in failed)


async def test_raise_policy_names_the_node() -> None:
    pipeline = StreamingPipeline("p", on_error="raise")
    pipeline.set_source(IterableSource(range(4)))
    pipeline.add_node(TransformNode(name="odd", transform_fn=fail_on_odd, executor="process"))
    with pytest.raises(NodeError, match="node 'odd' failed: ValueError: odd input 1"):
        await pipeline.execute()


async def test_unpicklable_items_and_results_fail_alone() -> None:
    lock = threading.Lock()
    pipeline = StreamingPipeline("p")
    pipeline.set_source(IterableSource([1, lock, 2]))
    pipeline.add_node(TransformNode(name="id", transform_fn=identity, executor="process"))
    pipeline.add_node(TransformNode(name="lock", transform_fn=returns_lock, executor="process"))
    results = await run_pipeline(pipeline)
    assert sorted(r.data for r in results if r.success) == [1, 2]
    [bad] = [r for r in results if not r.success]
    assert bad.node == "id" and "cannot be sent to a worker process" in str(bad.error)

    pipeline = StreamingPipeline("p")
    pipeline.set_source(IterableSource([1, 3, 5]))
    pipeline.add_node(TransformNode(name="lock", transform_fn=returns_lock, executor="process"))
    results = await run_pipeline(pipeline)
    [bad] = [r for r in results if not r.success]
    assert bad.data == 3 and "cannot be sent back from the worker" in str(bad.error)


async def test_a_crashed_worker_fails_its_batch_and_is_replaced() -> None:
    pipeline = StreamingPipeline("p", config=StreamConfig(chunk_size=10))
    pipeline.set_source(IterableSource(range(40)))
    pipeline.add_node(
        TransformNode(name="crashy", transform_fn=crash_on_13, executor="process", concurrency=2)
    )
    results = await run_pipeline(pipeline)
    failed = [r for r in results if not r.success]
    assert 13 in {r.data for r in failed}
    assert all(isinstance(r.error, WorkerError) for r in failed)
    assert "died (exit status 3)" in str(failed[0].error)
    # Only the crashed chunk is lost; the replacement worker processed the rest.
    assert len(failed) <= 5
    assert {r.data for r in results if r.success} == set(range(40)) - {r.data for r in failed}


async def test_cancelling_kills_busy_workers_promptly() -> None:
    started = time.monotonic()
    async with open_process_pool(sleep_long, 2, name="sleepy") as pool:
        pids = list(pool.pids)
        with trio.move_on_after(0.3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.map_batch, [1])
                nursery.start_soon(pool.map_batch, [2])
    assert time.monotonic() - started < 10
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_pipeline_cancel_leaves_no_worker_behind() -> None:
    pipeline = StreamingPipeline("p")
    pipeline.set_source(IterableSource(range(4)))
    pipeline.add_node(
        TransformNode(name="sleepy", transform_fn=sleep_long, executor="process", concurrency=2)
    )
    children_before = _children()
    with trio.move_on_after(1.0):
        await pipeline.execute()
    assert _children() == children_before


def _children() -> set[int]:
    path = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


async def test_a_function_the_worker_cannot_load_is_a_clear_error(tmp_path: Path) -> None:
    module_file = tmp_path / "vanishing_module.py"
    module_file.write_text("def f(x):\n    return x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import vanishing_module  # type: ignore[import-not-found]

        fn = vanishing_module.f
        module_file.unlink()
        sys.path.remove(str(tmp_path))
        with pytest.raises(WorkerError, match=r"could not load vanishing_module\.f"):
            async with open_process_pool(fn, 1, name="gone"):
                pass
    finally:
        sys.modules.pop("vanishing_module", None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))


# -- threads ------------------------------------------------------------------------------


async def test_thread_executor_runs_blocking_calls_n_way() -> None:
    lock = threading.Lock()
    active = [0, 0]

    def blocking(x: int) -> int:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return x + 1

    pipeline = StreamingPipeline("p", config=StreamConfig(chunk_size=16))
    pipeline.set_source(IterableSource(range(16)))
    pipeline.add_node(
        TransformNode(name="io", transform_fn=blocking, executor="thread", concurrency=4)
    )
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.items == list(range(1, 17))
    assert active[1] == 4


# -- enable_parallel_processing -----------------------------------------------------------


async def test_enable_parallel_processing_applies_at_run_start() -> None:
    async def fetch(x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x

    pipeline = StreamingPipeline("p", config=StreamConfig(worker_threads=2, io_threads=3))
    pipeline.enable_parallel_processing(ordered=True)
    pipeline.set_source(IterableSource(range(20)))
    cpu = TransformNode(name="cpu", transform_fn=digest_int, executor="process")
    io = TransformNode(name="io", transform_fn=fetch)
    plain = TransformNode(name="plain", transform_fn=abs)
    for node in (cpu, io, plain):
        pipeline.add_node(node)  # added after enable_parallel_processing: still applied
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert (cpu.concurrency, io.concurrency, plain.concurrency) == (2, 3, 1)
    assert sink.items == [digest_int(x) for x in range(20)]

    pipeline.enable_parallel_processing(parallelism=4, ordered=False)
    pipeline.set_source(IterableSource(range(5)))
    await pipeline.execute()
    assert (cpu.concurrency, io.concurrency, cpu.ordered) == (4, 4, False)
    with pytest.raises(ConfigError, match="parallelism must be an integer >= 1"):
        pipeline.enable_parallel_processing(parallelism=0)


def digest_int(x: int) -> int:
    return x * x


async def test_an_executor_node_runs_on_its_executor_only_through_the_parallel_layer():
    """TransformNode itself runs inline only: asked to run an executor node directly it says
    so instead of silently running inline; pipelines run it through executor_runner."""
    from haive.dataflow.parallel import executor_runner
    from haive.dataflow.runtime.backpressure import BoundedBuffer
    from haive.dataflow.runtime.nodes import NodeContext

    node = TransformNode(name="t", transform_fn=abs, executor="thread", concurrency=2)
    inbox: BoundedBuffer[int] = BoundedBuffer(8, "block", name="t.in")
    out: list[int] = []

    async def emit(batch: list[int]) -> None:
        out.extend(batch)

    with pytest.raises(ConfigError, match="executor='thread' runs on the executors"):
        await node.run(NodeContext("t"), inbox, emit)

    producer = inbox.open_producer()
    await producer.put_batch([-1, -2, 3])
    producer.close()
    await executor_runner(node)(NodeContext("t"), inbox, emit)
    assert sorted(out) == [1, 2, 3]
