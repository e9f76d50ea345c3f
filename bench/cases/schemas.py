"""Schemas at the source: a pipeline validating 200,000 dict records with each library.

* ``schemas.none.events_per_s``: the same pipeline without a schema (one processor);
* ``schemas.<library>.events_per_s``: ``set_schema`` with a ``msgspec.Struct``, a pydantic v2
  ``BaseModel`` and an attrs class (cattrs), 5 fields each, every 50th record invalid
  (dead-lettered);
* ``schemas.<library>.us_per_record``: the validation cost per record, over the run without
  a schema;
* ``schemas.msgspec.vs_pydantic``: why msgspec is the recommended schema class.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import msgspec
import pydantic
import trio

from bench.cases._shared import CountSink
from bench.recorder import Recorder, best_of
from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource

DESCRIPTION = "schemas: set_schema with msgspec, pydantic, attrs vs none, events/s"


class OrderStruct(msgspec.Struct):
    id: int
    customer: str
    total: float
    currency: str
    express: bool = False


class OrderModel(pydantic.BaseModel):
    id: int
    customer: str
    total: float
    currency: str
    express: bool = False


@attrs.frozen
class OrderAttrs:
    id: int
    customer: str
    total: float
    currency: str
    express: bool = False


def records(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "customer": f"c{i % 1000}", "total": i * 0.5, "currency": "EUR"}
        if i % 50
        else {"id": i, "customer": None, "total": "?", "currency": "EUR"}
        for i in range(n)
    ]


def rate(model: type[Any] | None, data: list[dict[str, Any]]) -> float:
    pipeline = StreamingPipeline("schemas")
    pipeline.set_source(IterableSource(data))
    if model is not None:
        pipeline.set_schema(model)
    pipeline.add_processor(lambda order: order)
    sink, dead = CountSink(), MemorySink()
    pipeline.set_sink(sink)
    pipeline.set_dead_letter_sink(dead)
    started = time.perf_counter()
    trio.run(pipeline.execute)
    elapsed = time.perf_counter() - started
    invalid = len(data) // 50 if model is not None else 0
    assert sink.count == len(data) - invalid and len(dead.items) == invalid
    return len(data) / elapsed


def run(rec: Recorder) -> None:
    n = 40_000 if rec.quick else 200_000
    runs = 1 if rec.quick else 3
    data = records(n)
    rate(OrderStruct, data[:2000])  # warm-up
    none = rec.figure("schemas.none.events_per_s", best_of(runs, lambda: rate(None, data)),
                      "events/s", f"{n:,} records, no schema")
    rates = {}
    for name, model in (("msgspec", OrderStruct), ("pydantic", OrderModel),
                        ("attrs", OrderAttrs)):
        rates[name] = rec.figure(
            f"schemas.{name}.events_per_s", best_of(runs, lambda m=model: rate(m, data)),
            "events/s", "every 50th record invalid, dead-lettered",
        )
        rec.figure(f"schemas.{name}.us_per_record", (1 / rates[name] - 1 / none) * 1e6, "us")
    rec.ratio("schemas.msgspec.vs_pydantic", rates["msgspec"], rates["pydantic"])
