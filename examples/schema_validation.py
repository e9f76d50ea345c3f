"""Typed events from untrusted input: sensor readings validated at the source.

Readings arrive as JSON bytes (as from a broker or a webhook). ``set_schema`` validates each
against a ``msgspec.Struct`` before any processor sees it: processors get ``Reading``
objects, malformed or mistyped records go to the dead-letter sink with the reason, and the
pipeline goes on. The schema evolved once: ``unit`` was added with a default, so readings
from old firmware (no unit) still validate.
"""

from __future__ import annotations

import random

import msgspec
import orjson
import trio

from haive.dataflow.streaming import IterableSource, MemorySink, StreamingPipeline


class Reading(msgspec.Struct):
    sensor: str
    value: float
    unit: str = "celsius"  # added in firmware 2; older readings get the default


def incoming(n: int) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        reading = {"sensor": f"s{i % 5}", "value": round(rng.uniform(15, 30), 1)}
        if i % 2:
            reading["unit"] = "celsius"  # newer firmware sends it
        if i % 97 == 0:
            reading["value"] = "n/a"  # a broken sensor
        out.append(orjson.dumps(reading))
    out.append(b'{"sensor": "s9", "value": ')  # cut off on the wire
    return out


def to_fahrenheit(reading: Reading) -> dict[str, object]:
    return {"sensor": reading.sensor, "fahrenheit": round(reading.value * 9 / 5 + 32, 1)}


async def main() -> None:
    pipeline = StreamingPipeline("sensors")
    pipeline.set_source(IterableSource(incoming(1000)))
    pipeline.set_schema(Reading)
    pipeline.add_processor(to_fahrenheit)
    out, dead = MemorySink(), MemorySink()
    pipeline.set_sink(out)
    pipeline.set_dead_letter_sink(dead)
    report = await pipeline.execute()
    print(f"{report.processed} readings converted, {len(dead.items)} refused:")
    for record in dead.items[:3]:
        print(f"  {record['error']['message']}")
    assert len(out.items) == 989 and len(dead.items) == 12
    assert all(isinstance(item["fahrenheit"], float) for item in out.items)


if __name__ == "__main__":
    trio.run(main)
