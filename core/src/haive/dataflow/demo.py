"""``haive demo``: a simulated market feed through filter, sentiment and trend windows.

Runs on the embedded defaults only (no server). The same pipeline is what the README shows.
"""

from __future__ import annotations

import random
import sys
from collections.abc import AsyncIterator
from typing import Any

import trio

from .builtins.sinks import CallbackSink
from .builtins.sources import AsyncIterableSource
from .nodes import AggregateNode, FilterNode, TransformNode
from .streaming_pipeline import StreamingPipeline

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


def build_pipeline(events: int, rate: float, on_trend: Any) -> StreamingPipeline:
    """The seed's event pipeline as a streaming pipeline: relevance filter -> sentiment ->
    trend windows of 100, from a simulated market feed into ``on_trend``."""
    pipeline = StreamingPipeline("ai-event-processor")
    pipeline.set_source(AsyncIterableSource(market_feed(events, rate)))
    pipeline.add_node(
        FilterNode(name="relevance_filter", filter_fn=lambda e: e["relevance_score"] > 0.7)
    )
    pipeline.add_node(TransformNode(name="sentiment_analyzer", transform_fn=score_sentiment))
    pipeline.add_node(
        AggregateNode(name="trend_aggregator", window_size=100, aggregate_fn=calculate_trend)
    )
    pipeline.set_sink(CallbackSink(on_trend))
    return pipeline


async def run_demo(events: int = 20_000, rate: float | None = None) -> int:
    from .cli import run_services

    out = sys.stdout
    trends = 0

    def on_trend(trend: dict[str, Any]) -> None:
        nonlocal trends
        trends += 1
        if trends <= 10 or (trend["trend_direction"] == "positive" and trends % 10 == 0):
            print(
                f"window {trends:>4}: {trend['events']:>3} relevant events up to "
                f"#{trend['last_seq']:<6} sentiment {trend['sentiment']:+.3f} "
                f"-> {trend['trend_direction']}",
                file=out,
            )

    # The feed's pace is read when the source starts, after the services are up.
    pace = {"rate": rate or 0.0}

    async def paced_feed() -> AsyncIterator[dict[str, Any]]:
        async for event in market_feed(events, pace["rate"]):
            yield event

    pipeline = build_pipeline(events, 0.0, on_trend)
    pipeline.set_source(AsyncIterableSource(paced_feed()))
    async with run_services(pipeline) as addresses:
        for address in addresses:
            print(f"dashboard: {address}  (live while the demo runs)", file=out, flush=True)
        if addresses and rate is None:
            pace["rate"] = 2000.0
        report = await pipeline.execute()
    stats = report
    print(
        f"\n{events:,} events in {stats.elapsed:.2f} s ({events / stats.elapsed:,.0f} events/s): "
        f"{trends} trend windows",
        file=out,
    )
    return 0
