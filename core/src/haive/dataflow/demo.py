"""``haive demo``: a simulated market feed through filter, sentiment and trend windows.

Runs on the embedded defaults only (no server). The same pipeline is what the README shows.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

from .event_pipeline import EventPipeline
from .nodes import AggregateNode, FilterNode, TransformNode

HEADLINES = {
    "beats": 0.8,
    "record": 0.6,
    "upgrade": 0.7,
    "steady": 0.1,
    "lawsuit": -0.7,
    "misses": -0.8,
    "recall": -0.6,
    "flat": 0.0,
}
SYMBOLS = ("AAPL", "MSFT", "NVDA", "TSLA")


async def market_feed(count: int, rate: float, seed: int = 7) -> AsyncIterator[dict[str, Any]]:
    """Ticks with a price random walk and a headline word, paced at ``rate`` events/s."""
    rng = random.Random(seed)
    prices = dict.fromkeys(SYMBOLS, 100.0)
    words = list(HEADLINES)
    for n in range(count):
        symbol = SYMBOLS[n % len(SYMBOLS)]
        prices[symbol] *= 1 + rng.gauss(0.0003, 0.01)
        yield {
            "seq": n,
            "symbol": symbol,
            "price": round(prices[symbol], 2),
            "headline": rng.choice(words),
            "relevance_score": rng.random(),
        }
        if rate:
            await trio.sleep(1 / rate)


def score_sentiment(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "sentiment": HEADLINES[event["headline"]]}


def calculate_trend(window: list[dict[str, Any]]) -> dict[str, Any]:
    mean = sum(e["sentiment"] for e in window) / len(window)
    first, last = window[0]["price"], window[-1]["price"]
    return {
        "events": len(window),
        "sentiment": round(mean, 3),
        "trend_direction": "positive" if mean > 0.05 else "negative" if mean < -0.05 else "flat",
        "last_seq": window[-1]["seq"],
        "price_move": round(last - first, 2),
    }


def build_pipeline() -> EventPipeline:
    """The seed's event pipeline: relevance filter -> sentiment (5 in flight) -> trend windows."""
    pipeline = EventPipeline("ai-event-processor")
    pipeline.add_node(
        FilterNode(name="relevance_filter", filter_fn=lambda e: e["relevance_score"] > 0.7)
    )
    pipeline.add_node(TransformNode(name="sentiment_analyzer", transform_fn=score_sentiment))
    pipeline.add_node(
        AggregateNode(name="trend_aggregator", window_size=100, aggregate_fn=calculate_trend)
    )
    pipeline.connect("input", "relevance_filter")
    pipeline.connect("relevance_filter", "sentiment_analyzer")
    pipeline.connect("sentiment_analyzer", "trend_aggregator")
    pipeline.connect("trend_aggregator", "output")
    return pipeline


async def run_demo(events: int = 20_000, rate: float = 0.0) -> int:
    pipeline = build_pipeline()
    out = sys.stdout
    started = time.perf_counter()
    trends = 0
    async with pipeline.process() as processor:

        async def feed() -> None:
            batch: list[dict[str, Any]] = []
            async for event in market_feed(events, rate):
                batch.append(event)
                if len(batch) >= 256 or rate:
                    await processor.feed_batch(batch)
                    batch = []
            if batch:
                await processor.feed_batch(batch)
            processor.close_input()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async for trend in processor.results():
                trends += 1
                if trends <= 10 or (trend["trend_direction"] == "positive" and trends % 10 == 0):
                    print(
                        f"window {trends:>4}: {trend['events']:>3} relevant events up to "
                        f"#{trend['last_seq']:<6} sentiment {trend['sentiment']:+.3f} "
                        f"-> {trend['trend_direction']}",
                        file=out,
                    )
        stats = processor.stats()
    elapsed = time.perf_counter() - started
    print(
        f"\n{events:,} events in {elapsed:.2f} s ({events / elapsed:,.0f} events/s): "
        f"{stats['relevance_filter'].items_out:,} relevant, {trends} trend windows",
        file=out,
    )
    return 0
