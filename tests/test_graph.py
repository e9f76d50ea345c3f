"""Graph validation and wiring of EventPipeline."""

from __future__ import annotations

import pytest

from haive.dataflow import AggregateNode, EventPipeline, FilterNode, GraphError, TransformNode


def inc(name: str) -> TransformNode:
    return TransformNode(name=name, transform_fn=lambda x: x + 1)


def test_duplicate_node_name():
    pipeline = EventPipeline().add_node(inc("a"))
    with pytest.raises(GraphError, match="duplicate node name 'a'"):
        pipeline.add_node(inc("a"))


def test_reserved_names():
    with pytest.raises(GraphError, match="reserved"):
        EventPipeline().add_node(inc("input"))


def test_unknown_name_lists_known_nodes():
    pipeline = EventPipeline().add_node(inc("a")).add_node(inc("b"))
    with pytest.raises(GraphError, match=r"unknown node 'c'; nodes are: a, b"):
        pipeline.connect("a", "c")


def test_not_a_node():
    with pytest.raises(GraphError, match="expects a Node"):
        EventPipeline().add_node(lambda x: x)  # type: ignore[arg-type]


def test_cycle_detected():
    pipeline = EventPipeline()
    for name in "abc":
        pipeline.add_node(inc(name))
    pipeline.connect("input", "a").connect("a", "b").connect("b", "c").connect("c", "a")
    pipeline.connect("c", "output")
    with pytest.raises(GraphError, match="cycle through: a, b, c"):
        pipeline.validate()


def test_self_loop_and_double_edge():
    pipeline = EventPipeline().add_node(inc("a"))
    with pytest.raises(GraphError, match="cycle"):
        pipeline.connect("a", "a")
    pipeline.connect("input", "a")
    with pytest.raises(GraphError, match="connected twice"):
        pipeline.connect("input", "a")


def test_dangling_nodes():
    pipeline = EventPipeline().add_node(inc("a")).add_node(inc("b")).add_node(inc("c"))
    pipeline.connect("input", "a").connect("a", "output").connect("input", "b")
    with pytest.raises(GraphError, match="'b' is dangling: its outputs never reach 'output'"):
        pipeline.validate()
    pipeline.connect("b", "output").connect("c", "output")
    with pytest.raises(GraphError, match="'c' is dangling: it is not reachable from 'input'"):
        pipeline.validate()


def test_ends_must_be_connected():
    with pytest.raises(GraphError, match="nothing is connected to 'input'"):
        EventPipeline().validate()
    pipeline = EventPipeline().add_node(inc("a")).connect("input", "a")
    with pytest.raises(GraphError, match="nothing is connected to 'output'"):
        pipeline.validate()


def test_wrong_direction_on_ends():
    pipeline = EventPipeline().add_node(inc("a"))
    with pytest.raises(GraphError, match="no successors"):
        pipeline.connect("output", "a")
    with pytest.raises(GraphError, match="no inputs"):
        pipeline.connect("a", "input")


async def test_fan_out_and_fan_in():
    # input -> double, triple (fan-out) -> merge (fan-in) -> output
    pipeline = EventPipeline("fan")
    pipeline.add_node(TransformNode(name="double", transform_fn=lambda x: x * 2))
    pipeline.add_node(TransformNode(name="triple", transform_fn=lambda x: x * 3))
    pipeline.add_node(TransformNode(name="merge", transform_fn=lambda x: x + 1000))
    for a, b in [
        ("input", "double"),
        ("input", "triple"),
        ("double", "merge"),
        ("triple", "merge"),
        ("merge", "output"),
    ]:
        pipeline.connect(a, b)
    async with pipeline.process() as p:
        result = await p.send(5)
        assert sorted(result.outputs) == [1010, 1015]
        many = await p.send_batch(range(100))
        assert sorted(many.outputs) == sorted(
            [1000 + 2 * n for n in range(100)] + [1000 + 3 * n for n in range(100)]
        )
        assert p.stats()["merge"].items_in == 202


async def test_send_returns_only_its_own_outputs_and_windows_flush_at_end():
    pipeline = EventPipeline()
    pipeline.add_node(FilterNode(name="pos", filter_fn=lambda x: x > 0))
    pipeline.add_node(AggregateNode(name="sum3", window_size=3, aggregate_fn=sum))
    pipeline.connect("input", "pos").connect("pos", "sum3").connect("sum3", "output")
    outputs = []
    async with pipeline.process() as p:
        for n in [1, -1, 2, 3, 4, 5]:
            r = await p.send(n)
            outputs.append(r.outputs)
            if n == -1:
                assert r.filtered
        p.close_input()
        tail = [out async for out in p.results()]
    assert outputs == [[], [], [], [6], [], []]
    assert tail == [9]  # the partial window [4, 5] flushed at the end of input


async def test_stream_mode_results_in_order():
    pipeline = EventPipeline(buffer_size=16)
    pipeline.add_node(TransformNode(name="sq", transform_fn=lambda x: x * x))
    pipeline.connect("input", "sq").connect("sq", "output")
    import trio

    got = []
    async with pipeline.process() as p:
        async with trio.open_nursery() as nursery:

            async def produce():
                for start in range(0, 1000, 37):
                    await p.feed_batch(range(start, min(start + 37, 1000)))
                p.close_input()

            nursery.start_soon(produce)
            async for out in p.results():
                got.append(out)
    assert got == [n * n for n in range(1000)]


async def test_stream_config_sizes_edges_and_batches():
    from haive.dataflow import StreamConfig

    seen = []
    pipeline = EventPipeline("sized", config=StreamConfig(buffer_size=64, chunk_size=8))
    pipeline.add_node(TransformNode(name="t", transform_fn=lambda x: x))
    pipeline.connect("input", "t").connect("t", "output")

    async with pipeline.process() as p:
        assert {buf.buffer_size for buf in p.run.buffers()} == {64}
        result = await p.send_batch(range(50))
        seen.append(p.stats()["t"].batches)
    assert result.outputs == list(range(50))
    assert seen[0] >= 7  # 50 items in batches of at most 8
