"""The seed's "Observable Data Streams" snippet, on trio.

A producer emits analysis results into a hot ``ReactiveStream`` in bursts. The processed
stream keeps the analyses, enriches them (async), debounces each burst down to its last
result, batches ten of those, summarizes every batch (async, with a transient failure that
``retry`` absorbs) and catches anything else. A decorated subscriber updates a dashboard.

Durations are the seed's (1 s debounce) scaled down so the example runs in about a second;
``HAIVE_EXAMPLE_QUICK=1`` makes it shorter still.
"""

from __future__ import annotations

import os
import random

import trio

from haive.dataflow.streaming import Observable, Operators, ReactiveStream

QUICK = os.environ.get("HAIVE_EXAMPLE_QUICK") == "1"
BURSTS = 25 if QUICK else 60
DEBOUNCE = 0.02  # the seed's 1 s, scaled to the example's pace

stream = ReactiveStream[dict]()
dashboard: list[dict] = []
failures = {"left": 1}


async def enrich_data(event: dict) -> dict:
    await trio.lowlevel.checkpoint()  # e.g. a lookup
    return {**event, "label": "high" if event["score"] > 0.8 else "normal"}


async def process_batch(batch: list[dict]) -> dict:
    await trio.sleep(0.001)  # e.g. a model call
    if failures["left"]:
        failures["left"] -= 1
        raise ConnectionError("model endpoint hiccup")  # retried by .retry(3)
    return {
        "analyses": len(batch),
        "mean_score": round(sum(e["score"] for e in batch) / len(batch), 3),
        "high": sum(e["label"] == "high" for e in batch),
    }


def handle_error(error: BaseException) -> None:
    print(f"processing stopped: {type(error).__name__}: {error}")


processed_stream = (
    stream.filter(lambda x: x["type"] == "analysis")
    .map(enrich_data)
    .debounce(DEBOUNCE)  # the last analysis of each burst
    .buffer(10)  # 10 bursts per batch
    .flat_map(process_batch)  # an async function: one summary per batch
    .retry(3)  # retry failed operations
    .catch_error(handle_error)
)


@processed_stream.subscribe
async def on_processed_data(data: dict) -> None:
    """Handle processed streaming data."""
    dashboard.append(data)  # update_dashboard(data)
    print(f"dashboard: {data}")


async def emit_analysis_data() -> None:
    """Emit real-time analysis data: bursts of results, then a pause."""
    rng = random.Random(7)
    for burst in range(BURSTS):
        for _ in range(5):
            kind = "analysis" if rng.random() < 0.9 else "heartbeat"
            await stream.emit({"type": kind, "burst": burst, "score": round(rng.random(), 3)})
            await trio.sleep(0.002)
        await trio.sleep(DEBOUNCE * 2)


async def main() -> None:
    async with stream:  # starts the decorated subscriber; on exit completes and drains
        await emit_analysis_data()
    print(
        f"{on_processed_data.state}: {len(dashboard)} dashboard updates from {stream.emitted} events"
    )
    assert dashboard and on_processed_data.state == "completed"

    # The same operators, pipe style, on a cold observable:
    ops = Operators
    squares = Observable.from_iterable(range(10)).pipe(
        ops.filter(lambda n: n % 2), ops.map(lambda n: n * n)
    )
    print("odd squares:", [n async for n in squares])


if __name__ == "__main__":
    trio.run(main)
