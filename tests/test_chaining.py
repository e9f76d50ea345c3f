"""Operator chaining: consecutive synchronous nodes share one task (GraphRun.chains) and
everything observable per node stays: counters, buffer accounting, errors naming the node,
dead letters, flushed tails, instrumented runs keeping a task per node."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from haive.dataflow import (
    EventPipeline,
    FilterNode,
    NodeError,
    StreamingPipeline,
    StreamProcessor,
    TransformNode,
)
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.runtime.graph import BatchTap, Graph, GraphRun, RunSettings
from haive.dataflow.runtime.nodes import Node, NodeContext


def streaming(items: Any, *nodes: Node, **kwargs: Any) -> tuple[StreamingPipeline, MemorySink]:
    pipeline = StreamingPipeline("chained", **kwargs)
    pipeline.set_source(IterableSource(items))
    for node in nodes:
        pipeline.add_node(node)
    sink = MemorySink()
    pipeline.set_sink(sink)
    return pipeline, sink


async def slow_double(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return x * 2


async def test_sync_neighbours_share_a_task_and_keep_every_counter() -> None:
    pipeline, sink = streaming(
        range(10),
        TransformNode(name="parse", transform_fn=int),
        FilterNode(name="even", filter_fn=lambda x: x % 2 == 0),
        TransformNode(name="tenfold", transform_fn=lambda x: x * 10),
        TransformNode(name="async", transform_fn=slow_double),
        TransformNode(name="inc", transform_fn=lambda x: x + 1),
    )
    async with pipeline.run() as stream:
        run = stream.run
        # An async function gives its node a task of its own (it may overlap its
        # neighbours), and so its successor too.
        assert run.graph.chains() == [["parse", "even", "tenfold"], ["async"], ["inc"]]
        results = [r async for r in stream]
    assert sink.items == [x * 20 + 1 for x in range(0, 10, 2)]
    assert len(results) == 5
    stats = run.node_stats()
    assert [(stats[n].items_in, stats[n].items_out) for n in stats] == [
        (10, 10),
        (10, 5),
        (5, 5),
        (5, 5),
        (5, 5),
    ]
    assert all(s.in_progress == 0 and s.batches >= 1 for s in stats.values())
    buffers = {b.name: b for b in run.buffers()}
    # A node handed its batches within the chain counts them in its input as put and taken.
    for name in ("parse", "even", "tenfold"):
        inbox = buffers[f"{name}.in"]
        assert inbox.stats.items_in == inbox.stats.items_out == stats[name].items_in
        assert len(inbox) == 0
    assert run.graph.is_idle()


async def test_a_failure_inside_a_chain_names_its_node_and_goes_to_the_dead_letters() -> None:
    dead = MemorySink()
    pipeline, sink = streaming(
        [1, 2, 0, 4],
        TransformNode(name="first", transform_fn=lambda x: x),
        TransformNode(name="invert", transform_fn=lambda x: 8 // x),
        TransformNode(name="last", transform_fn=lambda x: x + 1),
        on_error="result",
    )
    pipeline.set_dead_letter_sink(dead)
    report = await pipeline.execute()
    assert sink.items == [9, 5, 3]
    assert report.processed == 3 and report.failed == 1
    (record,) = dead.items
    assert (record["data"], record["error"]["node"]) == (0, "invert")
    assert pipeline.current_run is None


async def test_raise_policy_inside_a_chain_names_the_node() -> None:
    pipeline, _ = streaming(
        range(5),
        TransformNode(name="first", transform_fn=lambda x: x),
        TransformNode(name="invert", transform_fn=lambda x: 1 // (x - 3)),
        TransformNode(name="last", transform_fn=lambda x: x),
        on_error="raise",
    )
    with pytest.raises(NodeError, match="node 'invert' failed: ZeroDivisionError") as info:
        await pipeline.execute()
    assert info.value.node == "invert"


class Batcher(Node):
    """A chainable node whose errors escape process_batch itself and that holds a tail."""

    def __init__(self, name: str, *, fail_on: int | None = None) -> None:
        self.name = name
        self.fail_on = fail_on
        self.held: list[int] = []
        self.opened = self.closed = 0

    def chainable(self) -> bool:
        return True

    async def open(self) -> None:
        self.opened += 1

    async def aclose(self) -> None:
        self.closed += 1

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        if self.fail_on in batch:
            raise RuntimeError(f"{self.fail_on} in batch")
        self.held.extend(batch)
        return [x for x in batch if x % 2]

    async def flush(self, ctx: NodeContext) -> list[Any]:
        return [sum(self.held)]


async def test_a_flushed_tail_goes_through_the_rest_of_the_chain() -> None:
    batcher = Batcher("batcher")
    pipeline, sink = streaming(
        range(6), batcher, TransformNode(name="neg", transform_fn=lambda x: -x)
    )
    async with pipeline.run() as stream:
        assert stream.run.graph.chains() == [["batcher", "neg"]]
        async for _ in stream:
            pass
    assert sink.items == [-1, -3, -5, -15]
    stats = stream.run.node_stats()
    assert (stats["batcher"].items_in, stats["batcher"].items_out) == (6, 4)
    assert (stats["neg"].items_in, stats["neg"].items_out) == (4, 4)
    assert stats["neg"].in_progress == 0
    assert (batcher.opened, batcher.closed) == (1, 1)


async def test_an_error_from_a_chained_process_batch_names_the_node_and_closes_all() -> None:
    batcher = Batcher("batcher", fail_on=3)
    pipeline, _ = streaming(
        range(6), TransformNode(name="first", transform_fn=lambda x: x), batcher
    )
    with pytest.raises(NodeError, match=r"node 'batcher' failed: RuntimeError: 3 in batch"):
        await pipeline.execute()
    assert (batcher.opened, batcher.closed) == (1, 1)


async def test_event_pipeline_chains_and_fan_out_does_not() -> None:
    pipeline = EventPipeline()
    for name in ("a", "b", "left", "right"):
        pipeline.add_node(TransformNode(name=name, transform_fn=lambda x: x + 1))
    pipeline.connect("input", "a").connect("a", "b")
    pipeline.connect("b", "left").connect("b", "right")
    pipeline.connect("left", "output").connect("right", "output")
    async with pipeline.process() as p:
        result = await p.send_batch([0, 10])
        assert p.stats()["a"].items_in == 2
    assert sorted(result.outputs) == [3, 3, 13, 13]
    run = GraphRun(pipeline.graph, RunSettings())
    assert run.chains() == [["a", "b"], ["left"], ["right"]]


def test_a_wrapped_runner_keeps_a_task_per_node() -> None:
    graph = Graph()
    graph.add(TransformNode(name="a", transform_fn=abs))
    graph.add(TransformNode(name="b", transform_fn=abs))
    graph.connect("input", "a")
    graph.connect("a", "b")
    graph.connect("b", "output")
    run = GraphRun(graph, RunSettings())
    assert run.chains() == [["a", "b"]]

    def traced(node: Node) -> Any:
        async def run_node(ctx: NodeContext, inbox: Any, emit: Any) -> None:
            await node.run(ctx, inbox, emit)

        return run_node

    # An instrumentation replaces the runner to see every node's batches: no chaining.
    run.runner = traced
    assert run.chains() == [["a"], ["b"]]


def test_only_synchronous_inline_transforms_and_filters_are_chainable() -> None:
    assert TransformNode(name="t", transform_fn=abs).chainable()
    assert FilterNode(name="f", filter_fn=bool).chainable()
    assert not TransformNode(name="t", transform_fn=slow_double).chainable()
    assert not TransformNode(name="t", transform_fn=abs, executor="thread").chainable()

    class Custom(TransformNode):
        pass

    assert not Custom(name="c", transform_fn=abs).chainable()


class Upper(StreamProcessor):
    def process(self, item: str) -> str:
        return item.upper()


class AsyncUpper(StreamProcessor):
    async def process(self, item: str) -> str:
        await trio.lowlevel.checkpoint()
        return item.upper()


class BatchUpper(StreamProcessor):
    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        await trio.lowlevel.checkpoint()  # may wait on I/O: keeps a task of its own
        return [s.upper() for s in batch]


async def test_stream_processors_with_a_synchronous_process_chain() -> None:
    assert Upper().chainable()
    assert not AsyncUpper().chainable()
    assert not BatchUpper().chainable()
    pipeline, sink = streaming(
        ["a", "b"],
        Upper("one"),
        TransformNode(name="twice", transform_fn=lambda s: s * 2),
        AsyncUpper("three"),
    )
    async with pipeline.run() as stream:
        assert stream.run.graph.chains() == [["one", "twice"], ["three"]]
        assert [r.data async for r in stream] == ["AA", "BB"]
    assert sink.items == ["AA", "BB"]


class Recording(BatchTap):
    def __init__(self, log: list[tuple[str, str, int]], name: str) -> None:
        self.log = log
        self.name = name
        self.closed = 0

    def taken(self, batch: list[Any]) -> None:
        self.log.append((self.name, "taken", len(batch)))

    def emitting(self, batch: list[Any]) -> None:
        self.log.append((self.name, "emitting", len(batch)))

    def close(self) -> None:
        self.closed += 1


async def test_taps_see_every_batch_of_chained_and_unchained_nodes() -> None:
    graph = Graph()
    graph.add(TransformNode(name="a", transform_fn=lambda x: x + 1))
    graph.add(FilterNode(name="b", filter_fn=lambda x: x % 2))
    graph.add(TransformNode(name="c", transform_fn=slow_double))
    graph.connect("input", "a")
    graph.connect("a", "b")
    graph.connect("b", "c")
    graph.connect("c", "output")
    run = GraphRun(graph, RunSettings())
    log: list[tuple[str, str, int]] = []
    taps = {name: Recording(log, name) for name in "abc"}
    run.taps.update(taps)
    assert run.chains() == [["a", "b"], ["c"]]  # taps keep the chain
    async with trio.open_nursery() as nursery:
        run.start(nursery)
        await run.feed([0, 1, 2, 3])
        run.close_input()
        out = [x async for batch in run.output for x in batch]
    assert out == [2, 6]
    assert [entry for entry in log if entry[0] != "c"] == [
        ("a", "taken", 4),
        ("a", "emitting", 4),
        ("b", "taken", 4),
        ("b", "emitting", 2),
    ]
    assert [entry for entry in log if entry[0] == "c"] == [("c", "taken", 2), ("c", "emitting", 2)]
    assert [tap.closed for tap in taps.values()] == [1, 1, 1]
