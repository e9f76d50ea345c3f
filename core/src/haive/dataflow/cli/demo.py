"""``haive demo``: a simulated market feed through filter, sentiment and trend windows.

Runs on the embedded defaults only (no server). The same pipeline is what the README shows.
With the core alone it simulates 20,000 events as fast as it can, prints the trend windows and
the figures, and exits. When a plugin serves a dashboard for it (the observability plugin),
the feed is paced (2,000 events/s by default) and endless, so the page shows a live stream,
and the dashboard is served until Ctrl-C.
"""

from __future__ import annotations

import itertools
import random
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

import attrs
import trio

from ..builtins.sinks import CallbackSink
from ..builtins.sources import AsyncIterableSource
from ..pipelines.streaming_pipeline import StreamingPipeline
from ..runtime.nodes import AggregateNode, FilterNode, TransformNode
from .services import run_services

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


async def market_feed(
    count: int | None, rate: float, seed: int = 7
) -> AsyncIterator[dict[str, Any]]:
    """Ticks with a price random walk and a headline word: ``count`` of them (``None``: no
    end), paced at ``rate`` events/s (0: as fast as possible).

    Pacing follows trio's clock from the first tick and sleeps only once the feed is 10 ms
    ahead, so a high rate costs a sleep per burst rather than one per event.

    Example::

        >>> async def first_two():
        ...     return [tick["symbol"] async for tick in market_feed(2, 0)]
        >>> trio.run(first_two)
        ['AAPL', 'MSFT']
    """
    rng = random.Random(seed)
    prices = dict.fromkeys(SYMBOLS, 100.0)
    words = list(HEADLINES)
    start = trio.current_time()
    for n in itertools.count() if count is None else range(count):
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
            ahead = start + (n + 1) / rate - trio.current_time()
            if ahead > 0.01:
                await trio.sleep(ahead)


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


def build_pipeline(events: int | None, rate: float, on_trend: Any) -> StreamingPipeline:
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


#: Events per second of the feed while a dashboard is served (readable on the page).
LIVE_RATE = 2000.0
#: Events the demo simulates without a dashboard.
DEFAULT_EVENTS = 20_000


@attrs.define
class _Feed:
    """The demo feed's length (``None``: endless) and pace (events/s, 0: unpaced)."""

    events: int | None
    rate: float


async def run_demo(events: int | None = None, rate: float | None = None) -> int:
    """``haive demo``. Without a dashboard (the core alone): ``events`` (default 20,000) as
    fast as possible (or at ``rate``), then the figures, then exit. With a dashboard (the
    observability plugin installed): an endless feed (or ``events``) at ``rate`` (default
    2,000 events/s) so the page shows a live stream, served until Ctrl-C."""
    out = sys.stdout
    trends = 0
    sent = 0

    def on_trend(trend: dict[str, Any]) -> None:
        nonlocal trends
        trends += 1
        if trends <= 10 or (trend["trend_direction"] == "positive" and trends % 10 == 0):
            print(
                f"window {trends:>4}: {trend['events']:>3} relevant events up to "
                f"#{trend['last_seq']:<6} sentiment {trend['sentiment']:+.3f} "
                f"-> {trend['trend_direction']}",
                file=out,
                flush=True,
            )

    # The feed's length and pace are read when the source starts, after the services are up:
    # only then is it known whether a dashboard is served.
    feed = _Feed(events, rate or 0.0)

    async def counted_feed() -> AsyncIterator[dict[str, Any]]:
        nonlocal sent
        async for event in market_feed(feed.events, feed.rate):
            sent += 1
            yield event

    pipeline = build_pipeline(0, 0.0, on_trend)
    pipeline.set_source(AsyncIterableSource(counted_feed()))
    async with run_services(pipeline) as addresses:
        if not addresses:
            feed.events = DEFAULT_EVENTS if events is None else events
            report = await pipeline.execute()
            print(
                f"\n{sent:,} events in {report.elapsed:.2f} s "
                f"({sent / max(report.elapsed, 1e-9):,.0f} events/s): {trends} trend windows",
                file=out,
            )
            return 0
        feed.rate = rate or LIVE_RATE
        for address in addresses:
            print(f"dashboard: {address}", file=out)
        length = "an endless" if events is None else f"a {events:,}-event"
        print(
            f"streaming {length} market feed at {feed.rate:,.0f} events/s; "
            "the dashboard stays live until Ctrl-C",
            file=out,
            flush=True,
        )
        started = trio.current_time()
        await _serve_until_interrupted(pipeline, addresses, out)
        elapsed = trio.current_time() - started
    print(
        f"\nstopped: {sent:,} events in {elapsed:.1f} s "
        f"({sent / max(elapsed, 1e-9):,.0f} events/s): {trends} trend windows",
        file=out,
    )
    return 0


async def _serve_until_interrupted(
    pipeline: StreamingPipeline, addresses: list[str], out: TextIO
) -> None:
    """Run ``pipeline``, then keep the services up, until SIGINT (Ctrl-C).

    The signal is received here rather than raised as KeyboardInterrupt, so the demo stops
    cleanly; installing the handler also works when the process was started with SIGINT
    ignored (``nohup``, ``&``).
    """

    async def feed_then_wait() -> None:
        await pipeline.execute()
        print(
            f"the feed has ended; the dashboard stays at {', '.join(addresses)} until Ctrl-C",
            file=out,
            flush=True,
        )
        await trio.sleep_forever()

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed_then_wait)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
