"""The seed's "Intelligent Event Processing" snippet, on trio.

Relevance filter -> sentiment analysis (5 in flight) -> trend aggregation over windows of 100,
wired by name; every event is sent and its result inspected, as in the product description.
"""

from __future__ import annotations

import os
import random

import trio

from haive.dataflow.streaming import AggregateNode, EventPipeline, FilterNode, TransformNode

POSITIVE = {"beats", "record", "upgrade", "growth"}
NEGATIVE = {"misses", "lawsuit", "recall", "layoffs"}


async def analyze_sentiment(event: dict) -> dict:
    await trio.sleep(0.0005)  # stands in for a model call
    words = set(event["text"].split())
    score = len(words & POSITIVE) - len(words & NEGATIVE)
    return {**event, "sentiment": score}


def calculate_trend(window: list[dict]) -> dict:
    total = sum(e["sentiment"] for e in window)
    return {"events": len(window), "trend_direction": "positive" if total > 0 else "negative"}


opportunities: list[dict] = []


async def notify_opportunity(result: dict) -> None:
    opportunities.append(result)


async def event_source(count: int):
    rng = random.Random(1)
    words = sorted(POSITIVE | NEGATIVE | {"steady", "flat", "quarter"})
    for n in range(count):
        yield {
            "id": n,
            "relevance_score": rng.random(),
            "text": " ".join(rng.choices(words, k=4)),
        }


async def process_events(pipeline: EventPipeline, event_source) -> int:
    """Process events through pipeline."""
    results = 0
    async with pipeline.process() as processor:
        async for event in event_source:
            result = await processor.send(event)
            for out in result.outputs:
                results += 1
                if out["trend_direction"] == "positive":
                    await notify_opportunity(out)
    return results


async def main() -> None:
    pipeline = EventPipeline("ai-event-processor")
    pipeline.add_node(
        FilterNode(name="relevance_filter", filter_fn=lambda e: e["relevance_score"] > 0.7)
    )
    pipeline.add_node(
        TransformNode(name="sentiment_analyzer", transform_fn=analyze_sentiment, concurrency=5)
    )
    pipeline.add_node(
        AggregateNode(name="trend_aggregator", window_size=100, aggregate_fn=calculate_trend)
    )
    pipeline.connect("input", "relevance_filter")
    pipeline.connect("relevance_filter", "sentiment_analyzer")
    pipeline.connect("sentiment_analyzer", "trend_aggregator")
    pipeline.connect("trend_aggregator", "output")

    count = 2_000 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 20_000
    windows = await process_events(pipeline, event_source(count))
    print(f"{count} events -> {windows} trend windows, {len(opportunities)} positive opportunities")
    assert windows >= 1


if __name__ == "__main__":
    trio.run(main)
