"""StreamingPipeline: per-item results, dead letters, sources/sinks, shutdown."""

from __future__ import annotations

import pytest
import trio

from haive.dataflow import (
    ConfigError,
    NodeError,
    RetryPolicy,
    StreamConfig,
    StreamingPipeline,
    StreamProcessor,
)
from haive.dataflow.builtins.sinks import JsonLinesSink, MemorySink
from haive.dataflow.builtins.sources import (
    AsyncIterableSource,
    IterableSource,
    JsonLinesSource,
    MemorySource,
)
from haive.dataflow.errors import SerializationError


def make(items, *steps, **kwargs) -> tuple[StreamingPipeline, MemorySink]:
    pipeline = StreamingPipeline("t", **kwargs)
    pipeline.set_source(IterableSource(items))
    for step in steps:
        pipeline.add_processor(step)
    sink = MemorySink()
    pipeline.set_sink(sink)
    return pipeline, sink


async def test_one_bad_item_never_kills_the_stream():
    pipeline, sink = make(range(-5, 6), lambda x: 10 // x, lambda x: x + 1)
    async with pipeline.run() as stream:
        results = [r async for r in stream]
    failures = [r for r in results if not r.success]
    assert len(results) == 11
    assert [(r.data, r.node) for r in failures] == [(0, "<lambda>_0")]
    assert sink.items == [10 // x + 1 for x in range(-5, 6) if x]
    assert stream.report().failed == 1


async def test_dead_letter_sink_receives_failures():
    dead = MemorySink()
    pipeline, sink = make(["1", "two", "3"], int)
    pipeline.set_dead_letter_sink(dead)
    report = await pipeline.execute()
    assert sink.items == [1, 3]
    assert report.processed == 2 and report.failed == 1
    (record,) = dead.items
    assert record["data"] == "two"
    assert record["error"]["type"] == "ValueError"
    assert record["error"]["node"] == "int_0"


async def test_pipeline_retry_policy(autojump_clock):
    seen: dict[int, int] = {}

    def flaky(x):
        seen[x] = seen.get(x, 0) + 1
        if seen[x] == 1:
            raise TimeoutError("first try fails")
        return x

    pipeline, sink = make(range(10), flaky, retry=RetryPolicy(attempts=2, backoff=0.5))
    report = await pipeline.execute()
    assert sink.items == list(range(10))
    assert report.failed == 0


async def test_raise_policy_surfaces_node_name():
    class Boom(StreamProcessor):
        def process(self, item):
            if item == 3:
                raise RuntimeError("boom")
            return item

    pipeline, _ = make(range(10), Boom("boom-node"), on_error="raise")
    with pytest.raises(NodeError, match="node 'boom-node' failed: RuntimeError: boom"):
        await pipeline.execute()


async def test_sink_failure_names_the_sink():
    class BrokenSink(MemorySink):
        async def write_batch(self, items):
            raise OSError("disk full")

    pipeline = StreamingPipeline("t")
    pipeline.set_source(IterableSource(range(3)))
    pipeline.set_sink(BrokenSink())
    with pytest.raises(NodeError, match=r"sink:BrokenSink.*disk full"):
        await pipeline.execute()


async def test_cancel_stops_every_task(autojump_clock):
    """Cancelling a run of an endless source leaves no task behind."""

    async def forever():
        n = 0
        while True:
            yield n
            n += 1
            await trio.sleep(0.001)

    closed = []

    class Tracking(MemorySink):
        async def aclose(self):
            closed.append(True)

    pipeline = StreamingPipeline("endless")
    pipeline.set_source(AsyncIterableSource(forever()))
    pipeline.add_processor(lambda x: x)
    pipeline.set_sink(Tracking())
    root = trio.lowlevel.current_task()
    with trio.move_on_after(1):
        await pipeline.execute()
    assert closed == [True]
    # only this test's own task remains below us
    assert all(not nursery.child_tasks for nursery in root.child_nurseries)


async def test_leaving_run_block_early_cancels():
    pipeline, _ = make(range(10**9), lambda x: x)
    first = []
    async with pipeline.run() as stream:
        async for result in stream:
            first.append(result.data)
            if len(first) == 5:
                break
    assert first == [0, 1, 2, 3, 4]


async def test_memory_source_push_and_async_processor():
    source = MemorySource(buffer_size=4)

    class Double(StreamProcessor):
        async def process(self, item):
            await trio.lowlevel.checkpoint()
            return item * 2

    pipeline = StreamingPipeline("push")
    pipeline.set_source(source)
    pipeline.add_processor(Double())
    sink = MemorySink()
    pipeline.set_sink(sink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.execute)
        for n in range(20):
            await source.push(n)
        source.close()
    assert sink.items == [n * 2 for n in range(20)]


async def test_jsonl_round_trip(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"n": {n}}}\n' for n in range(5000)))
    out = tmp_path / "out.jsonl"
    pipeline = StreamingPipeline("files", config=StreamConfig(chunk_size=333))
    pipeline.set_source(JsonLinesSource(src))
    pipeline.add_processor(lambda e: {"n": e["n"], "sq": e["n"] ** 2})
    pipeline.set_sink(JsonLinesSink(out, mode="wb"))
    report = await pipeline.execute()
    assert report.processed == 5000
    lines = out.read_text().splitlines()
    assert lines[0] == '{"n":0,"sq":0}' and lines[-1] == '{"n":4999,"sq":24990001}'


async def test_malformed_jsonl_line_names_file_and_line_and_keeps_earlier_items(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"n": 1}\n{"n": 2}\n{"n": oops}\n{"n": 4}\n')
    pipeline = StreamingPipeline("files")
    pipeline.set_source(JsonLinesSource(src))
    sink = MemorySink()
    pipeline.set_sink(sink)
    with pytest.raises(NodeError, match=r"bad.jsonl:3: invalid JSON line") as info:
        await pipeline.execute()
    assert isinstance(info.value.__cause__, SerializationError)
    assert sink.items == [{"n": 1}, {"n": 2}]


async def test_malformed_jsonl_skip_mode(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"n": 1}\nnot json\n\n{"n": 4}')  # no trailing newline either
    source = JsonLinesSource(src, on_invalid="skip")
    pipeline = StreamingPipeline("files")
    pipeline.set_source(source)
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.items == [{"n": 1}, {"n": 4}]
    assert source.invalid_lines == 1


async def test_monitor_task_sees_stats_and_is_stopped():
    samples = []

    class Sampler:
        async def monitor(self, run):
            while True:
                samples.append(sum(s.items_in for s in run.node_stats().values()))
                await trio.lowlevel.checkpoint()

    pipeline, _ = make(range(10_000), lambda x: x)
    pipeline.add_monitor(Sampler())
    await pipeline.execute()
    assert samples and samples[-1] <= 10_000


def test_build_errors():
    pipeline = StreamingPipeline("t")
    with pytest.raises(ConfigError, match="set_source expects a DataSource"):
        pipeline.set_source([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="set_sink expects a StreamSink"):
        pipeline.set_sink(print)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be a Node or a callable"):
        pipeline.add_processor(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="async monitor"):
        pipeline.add_monitor(object())  # type: ignore[arg-type]


async def test_no_source_is_a_clear_error():
    with pytest.raises(ConfigError, match="no source set"):
        await StreamingPipeline("t").execute()


async def test_pause_holds_the_source_between_batches_and_resume_reads_on(autojump_clock):
    source = MemorySource(buffer_size=100)
    pipeline = StreamingPipeline("paused")
    pipeline.set_source(source)
    pipeline.add_processor(lambda x: x * 2)
    sink = MemorySink()
    pipeline.set_sink(sink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.execute)
        await source.push_batch([1, 2, 3])
        await trio.sleep(1)
        assert sink.items == [2, 4, 6]
        pipeline.pause()
        await source.push_batch([4, 5])
        await trio.sleep(10)
        assert pipeline.paused and sink.items == [2, 4, 6]  # read, held, not fed
        run = pipeline.current_run
        assert run is not None and run.read == 3
        pipeline.resume()
        await trio.sleep(1)
        assert sink.items == [2, 4, 6, 8, 10] and not pipeline.paused
        source.close()
    assert pipeline.current_run is None


async def test_inject_feeds_the_running_input_and_refuses_once_it_closed(autojump_clock):
    source = MemorySource(buffer_size=10)
    pipeline = StreamingPipeline("inject")
    pipeline.set_source(source)
    pipeline.add_processor(lambda x: x + 1)
    sink = MemorySink()
    pipeline.set_sink(sink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.execute)
        await trio.sleep(1)
        run = pipeline.current_run
        assert run is not None
        await run.inject([10, 20])
        await trio.sleep(1)
        assert sink.items == [11, 21] and run.read == 2
        source.close()
        await trio.sleep(1)
        with pytest.raises(ConfigError, match="input of 'inject' is closed"):
            await run.inject([30])
        with pytest.raises(ConfigError, match="items must be a list"):
            await run.inject((1,))  # type: ignore[arg-type]


async def test_failure_observers_see_what_the_dead_letter_sink_took():
    pipeline, sink = make([1, 0, 2, 0], lambda x: 10 // x)
    dead = MemorySink()
    pipeline.set_dead_letter_sink(dead)
    seen = []
    pipeline.observe_failures(lambda failed: seen.extend((r.data, len(dead.items)) for r in failed))
    report = await pipeline.execute()
    # Each failure is observed after the dead-letter sink took it.
    assert [data for data, _ in seen] == [0, 0] and all(n >= 1 for _, n in seen)
    assert report.failed == 2 and len(dead.items) == 2 and sink.items == [10, 5]


async def test_a_failing_failure_observer_stops_the_run_with_its_error():
    pipeline, _sink = make([1, 0], lambda x: 10 // x)

    def broken(failed):
        raise RuntimeError("observer bug")

    pipeline.observe_failures(broken)
    with pytest.raises(NodeError, match="observer bug"):
        await pipeline.execute()
    with pytest.raises(ConfigError, match="expects a callable"):
        pipeline.observe_failures("nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "iterable",
    [list(range(7)), tuple(range(7)), range(7), iter(range(7)), (x for x in range(7))],
    ids=["list", "tuple", "range", "iterator", "generator"],
)
async def test_iterable_source_batches_and_seek_whatever_the_iterable(iterable):
    source = IterableSource(iterable)
    batches = [b async for b in source.batches(3)]
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(type(b) is list for b in batches)
    assert source.position() == 7
    if isinstance(iterable, list | tuple | range):  # iterated again from its start
        source.seek(4)
        assert [b async for b in source.batches(2)] == [[4, 5], [6]]
        assert source.position() == 7


async def test_iterable_source_batches_are_copies_of_a_list():
    items = [1, 2, 3]
    (batch,) = [b async for b in IterableSource(items).batches(10)]
    batch.append(4)  # a batch is the pipeline's own: the caller's list is not it
    assert items == [1, 2, 3]
