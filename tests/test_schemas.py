"""Schemas at the source: msgspec, pydantic and attrs classes validate records, bad ones go
to the dead-letter sink with the error, and the pipeline goes on with typed events."""

from __future__ import annotations

import attrs
import msgspec
import pydantic
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import JsonSerializer
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.schemas import Schema, SchemaError


class TickStruct(msgspec.Struct):
    symbol: str
    price: float
    venue: str = "XNAS"


class TickModel(pydantic.BaseModel):
    symbol: str
    price: float
    venue: str = "XNAS"


@attrs.frozen
class TickAttrs:
    symbol: str
    price: float
    venue: str = "XNAS"


MODELS = [TickStruct, TickModel, TickAttrs]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_library_validates_dicts_json_and_instances(model):
    schema = Schema(model)
    tick = schema.validate({"symbol": "AAPL", "price": 1.5})
    assert (tick.symbol, tick.price, tick.venue) == ("AAPL", 1.5, "XNAS")
    assert schema.validate(b'{"symbol": "MSFT", "price": 2, "venue": "XLON"}').venue == "XLON"
    assert schema.validate(tick) is tick
    # Unknown fields (a newer producer's) are ignored: an older worker reads newer records.
    assert schema.validate({"symbol": "A", "price": 1.0, "added_later": True}).symbol == "A"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize(
    "record",
    [{"symbol": "AAPL", "price": "ten"}, {"price": 1.0}, b"{not json", [1, 2]],
    ids=["wrong type", "missing field", "malformed JSON", "not an object"],
)
def test_each_library_names_the_problem(model, record):
    with pytest.raises(SchemaError, match=f"does not match {model.__name__}: ") as caught:
        Schema(model).validate(record)
    assert caught.value.schema == model.__name__ and caught.value.problems


def test_the_error_names_the_field():
    with pytest.raises(SchemaError, match="price"):
        Schema(TickModel).validate({"symbol": "A", "price": "ten"})
    with pytest.raises(SchemaError, match=r"\$\.price"):
        Schema(TickStruct).validate({"symbol": "A", "price": "ten"})
    with pytest.raises(SchemaError, match="price"):
        Schema(TickAttrs).validate({"symbol": "A", "price": "ten"})


@pytest.mark.parametrize("model", [dict, "TickStruct", 42, type("Plain", (), {})])
def test_a_class_no_library_knows_is_refused_by_name(model):
    with pytest.raises(ConfigError, match=r"model must be a msgspec\.Struct, pydantic BaseModel"):
        Schema(model)


def run_with_schema(model, records):
    pipeline = StreamingPipeline("ticks")
    pipeline.set_source(IterableSource(records))
    pipeline.add_processor(lambda tick: (type(tick).__name__, tick.symbol, tick.venue))
    pipeline.set_schema(model)  # after the processor: it still goes first
    dead, out = MemorySink(), MemorySink()
    pipeline.set_dead_letter_sink(dead)
    pipeline.set_sink(out)
    report = trio.run(pipeline.execute)
    return report, out.items, dead.items


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_bad_records_go_to_the_dead_letter_sink_and_the_pipeline_goes_on(model):
    records = [{"symbol": f"S{i}", "price": i} if i % 3 else {"symbol": f"S{i}", "price": "x"}
               for i in range(30)]
    report, out, dead = run_with_schema(model, records)
    assert [symbol for _, symbol, _ in out] == [f"S{i}" for i in range(30) if i % 3]
    assert {kind for kind, _, _ in out} == {model.__name__}  # typed events downstream
    assert [d["data"]["symbol"] for d in dead] == [f"S{i}" for i in range(0, 30, 3)]
    assert {d["error"]["type"] for d in dead} == {"SchemaError"}
    assert {d["error"]["node"] for d in dead} == {"schema"}
    assert all(d["error"]["attempts"] == 1 for d in dead)  # a bad record is not retried
    assert (report.processed, report.failed) == (20, 10)


def test_set_schema_again_replaces_it_and_a_processor_named_schema_is_refused():
    pipeline = StreamingPipeline("p")
    pipeline.set_schema(TickStruct)
    pipeline.set_schema(TickModel)
    assert [n.name for n in pipeline.nodes] == ["schema"]
    other = StreamingPipeline("q")
    other.add_processor(_named_schema())
    with pytest.raises(ConfigError, match="a processor already has that name"):
        other.set_schema(TickStruct)


def _named_schema():
    from haive.dataflow.runtime.nodes import TransformNode

    return TransformNode(name="schema", transform_fn=lambda x: x)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_typed_events_encode_as_their_fields(model):
    tick = Schema(model).validate({"symbol": "AAPL", "price": 1.5})
    assert JsonSerializer().loads(JsonSerializer().dumps([tick])) == [
        {"symbol": "AAPL", "price": 1.5, "venue": "XNAS"}
    ]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["symbol", "price", "venue", "x"]),
                       st.one_of(st.text(max_size=3), st.floats(allow_nan=False), st.integers(),
                                 st.none(), st.booleans())))
def test_the_three_libraries_agree_on_what_is_valid(record):
    verdicts = []
    for model in MODELS:
        try:
            Schema(model).validate(record)
            verdicts.append(True)
        except SchemaError:
            verdicts.append(False)
    # msgspec is the strictest: what it accepts, the others accept. pydantic's lax mode also
    # takes a bool as a float (False -> 0.0); cattrs calls the field's type (str(1) works).
    assert not verdicts[0] or verdicts[1], (record, verdicts)
    assert not verdicts[0] or verdicts[2], (record, verdicts)
