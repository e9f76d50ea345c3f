"""TransformationChain: named steps, input selection, batching, and use as a pipeline node."""

from __future__ import annotations

import pytest
import trio

from haive.dataflow import ConfigError, EventPipeline, StreamingPipeline, TransformNode
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.pipelines.chain import ChainResult, ChainStepError, TransformationChain


class Doubler:
    """A transform object with a batch method that records how it was called."""

    output_name = "doubled"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.single_calls = 0

    async def transform(self, value):
        self.single_calls += 1
        await trio.lowlevel.checkpoint()
        if value == "boom":
            raise ValueError("cannot double boom")
        return value * 2

    async def transform_batch(self, values):
        self.batch_sizes.append(len(values))
        if "boom" in values:
            raise ValueError("a bad value in the batch")
        return [v * 2 for v in values]


class Summary:
    """Reads the state: everything computed so far."""

    chain_input = "state"

    def transform(self, state: ChainResult):
        return {"steps": state.steps, "input": state.input, "doubled": state.doubled}


async def test_steps_pipe_and_every_output_is_kept():
    chain = TransformationChain("text")
    chain.add_transformation("strip", str.strip)
    chain.add_transformation("upper", str.upper)
    chain.add_transformation("words", str.split)
    result = await chain.transform("  a b  ")
    assert result.steps == ("strip", "upper", "words")
    assert result.strip == "a b"
    assert result["upper"] == "A B"
    assert result.output == ["A", "B"]
    assert result.input == "  a b  "
    assert result.to_dict() == {
        "input": "  a b  ",
        "strip": "a b",
        "upper": "A B",
        "words": ["A", "B"],
    }
    assert "upper" in result and "nope" not in result
    with pytest.raises(AttributeError, match=r"no step 'nope'.*strip, upper, words"):
        result.nope


async def test_input_selection_state_and_aliases():
    async def length(text):
        await trio.lowlevel.checkpoint()
        return len(text)

    doubler = Doubler()
    chain = (
        TransformationChain()
        .add_transformation("length", length)
        .add_transformation("double", doubler)  # reads the previous output: the length
        .add_transformation("shout", str.upper, input="input")
        .add_transformation("again", lambda n: n + 1, input="length")
        .add_transformation("summary", Summary())
    )
    result = await chain("hey")
    assert result.length == 3
    assert result.double == 6
    assert result.doubled == 6  # the transform's output_name
    assert result.shout == "HEY"
    assert result.again == 4
    assert result.summary == {
        "steps": ("length", "double", "shout", "again"),
        "input": "hey",
        "doubled": 6,
    }


def test_building_errors_are_clear():
    chain = TransformationChain("c").add_transformation("a", str.lower)
    with pytest.raises(ConfigError, match="duplicate step name 'a'"):
        chain.add_transformation("a", str.upper)
    with pytest.raises(ConfigError, match="'state' cannot name a step"):
        chain.add_transformation("state", str.upper)
    with pytest.raises(ConfigError, match=r"reads from 'later'.*earlier step \(a\)"):
        chain.add_transformation("b", str.upper, input="later")
    with pytest.raises(ConfigError, match="must be a callable or have a transform"):
        chain.add_transformation("c", 42)
    with pytest.raises(ConfigError, match="emit must be"):
        TransformationChain(emit="everything")
    assert [s.name for s in chain] == ["a"] and len(chain) == 1


async def test_failing_step_is_named_and_partial_result_kept():
    chain = TransformationChain("nums").add_transformation("parse", int)
    chain.add_transformation("invert", lambda n: 1 / n)
    with pytest.raises(
        ChainStepError, match="chain 'nums': step 'invert' failed: ZeroDivisionError"
    ) as info:
        await chain.transform("0")
    assert info.value.step == "invert"
    assert info.value.partial.parse == 0
    assert isinstance(info.value.__cause__, ZeroDivisionError)


async def test_transform_batch_uses_batch_method_and_isolates_failures():
    doubler = Doubler()
    chain = TransformationChain().add_transformation("d", doubler).add_transformation("n", len)
    results = await chain.transform_batch(["ab", "c", "xyz"])
    assert [r.n for r in results] == [4, 2, 6]
    assert doubler.batch_sizes == [3] and doubler.single_calls == 0

    results = await chain.transform_batch(["ab", "boom", "c"], return_exceptions=True)
    assert results[0].output == 4 and results[2].output == 2
    assert isinstance(results[1], ChainStepError) and results[1].step == "d"
    with pytest.raises(ChainStepError, match="cannot double boom"):
        await chain.transform_batch(["ab", "boom"])


async def test_chain_as_streaming_pipeline_node():
    doubler = Doubler()
    chain = TransformationChain("nlp").add_transformation("double", doubler)
    chain.add_transformation("length", len)
    pipeline = StreamingPipeline("chain-node")
    pipeline.set_source(IterableSource(["a", "bb", "boom", "ccc"]))
    pipeline.add_node(chain)
    sink = MemorySink()
    pipeline.set_sink(sink)
    async with pipeline.run() as stream:
        results = [r async for r in stream]
    ok = [r.data for r in results if r.success]
    bad = [r for r in results if not r.success]
    assert [r.length for r in ok] == [2, 4, 6]
    assert [r.output for r in sink.items] == [2, 4, 6]
    assert len(bad) == 1 and bad[0].node == "nlp" and bad[0].data == "boom"
    assert isinstance(bad[0].error, ChainStepError) and bad[0].error.step == "double"
    assert sum(doubler.batch_sizes) >= 4  # batched calls, then the isolating per-item retry


async def test_emit_output_and_chain_inside_transform_node():
    chain = TransformationChain("c", emit="output").add_transformation("sq", lambda x: x * x)
    pipeline = StreamingPipeline("out")
    pipeline.set_source(IterableSource(range(5)))
    pipeline.add_node(chain)
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.items == [0, 1, 4, 9, 16]

    # An async callable: a TransformNode (with concurrency) and an EventPipeline accept it.
    events = EventPipeline("ev")
    events.add_node(TransformNode(name="chain", transform_fn=chain, concurrency=3))
    events.connect("input", "chain")
    events.connect("chain", "output")
    async with events.process() as handle:
        sent = await handle.send(7)
    assert isinstance(sent.output, ChainResult) and sent.output.sq == 49


def test_exported_from_streaming():
    from haive.dataflow import streaming

    assert streaming.TransformationChain is TransformationChain
    assert "TransformationChain" in streaming.__all__


async def test_chain_as_a_reactive_operator():
    from haive.dataflow import reactive  # the core's own layer: never skipped
    chain = (
        TransformationChain("r").add_transformation("up", str.upper).add_transformation("n", len)
    )
    mapped = await reactive.Observable.of("a", "bb").map(chain.transform).to_list()
    assert [r.up for r in mapped] == ["A", "BB"]
    outputs = await reactive.Observable.of("ccc").map(chain).map(lambda r: r.output).to_list()
    assert outputs == [3]


async def test_pipeline_opens_and_closes_the_steps():
    events: list[str] = []

    class Model:
        async def open(self):
            events.append("open")

        async def aclose(self):
            events.append("close")

        def transform(self, value):
            events.append(f"item {value}")
            return value

    chain = TransformationChain("lifecycle").add_transformation("model", Model())
    chain.add_transformation("plain", str)  # no open/aclose: left alone
    pipeline = StreamingPipeline("lifecycle")
    pipeline.set_source(IterableSource([1]))
    pipeline.add_node(chain)
    await pipeline.execute()
    assert events == ["open", "item 1", "close"]
