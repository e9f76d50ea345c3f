"""The LLM node: against transformers serve in pipelines, and on a mock clock for limits."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from haive_contrib_ai.llm_limits import RateLimit
from haive_contrib_ai.llm_node import LLMChunk, LLMNode, LLMResponse
from haive_contrib_ai.llm_providers import GenerationOptions, LLMProvider, TokenStream
from haive_contrib_ai.llm_records import ChatMessage, LLMError, TokenDelta, Usage
from haive_contrib_ai.llm_tiny import TransformersServer

from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.caching import ResultCache
from haive.dataflow.runtime.nodes import NodeContext
from haive.dataflow.runtime.schemas import SchemaError

EVENTS = [{"symbol": s, "move": m} for s, m in [("AAPL", "+2%"), ("MSFT", "-1%"), ("NVDA", "+5%")]]


def node_for(server: TransformersServer, model: Path, **options: Any) -> LLMNode:
    options.setdefault("max_tokens", 12)
    return LLMNode(
        prompt="Explain why {symbol} moved {move} today.",
        system="You are a market analyst.",
        url=server.url,
        model=str(model),
        **options,
    )


async def run_pipeline(node: LLMNode, events: list[Any]) -> list[Any]:
    pipeline = StreamingPipeline("llm")
    pipeline.set_source(IterableSource(events))
    pipeline.add_node(node)
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    return sink.items


async def test_stream_mode_emits_ordered_chunks_then_the_whole_answer(
    chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    node = node_for(chat_server, tiny_chat_model, concurrency=2)
    items = await run_pipeline(node, EVENTS)
    chunks: dict[str, list[LLMChunk]] = defaultdict(list)
    responses: dict[str, LLMResponse] = {}
    for item in items:
        if isinstance(item, LLMChunk):
            assert item.request_id not in responses  # no chunk after its final event
            chunks[item.request_id].append(item)
        else:
            assert isinstance(item, LLMResponse)
            responses[item.request_id] = item
    assert len(responses) == 3
    assert sorted(r.event["symbol"] for r in responses.values()) == ["AAPL", "MSFT", "NVDA"]
    for request_id, response in responses.items():
        pieces = chunks[request_id]
        # transformers serve sends a token per event when idle, several when loaded.
        assert [c.index for c in pieces] == list(range(len(pieces))) and len(pieces) >= 2
        assert "".join(c.text for c in pieces) == response.text
        assert all(c.event is response.event for c in pieces)
        assert response.usage.completion_tokens == 12 and not response.usage.estimated
        assert response.chunks == len(pieces) and response.finish_reason == "length"
        assert response.time_to_first_token is not None and response.tokens_per_second > 0
    metrics = node.metrics.snapshot()
    assert metrics["requests"] == 3 and metrics["errors"] == 0
    assert metrics["completion_tokens"] == 36 and metrics["tokens_used"] > 36
    assert 0 < metrics["time_to_first_token_p50"] <= metrics["time_to_first_token_p99"]
    assert metrics["tokens_per_second"] > 0


async def test_whole_mode_emits_only_answers_and_the_cache_answers_repeats(
    chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    cache = ResultCache("1MB", ttl=60)
    node = node_for(chat_server, tiny_chat_model, mode="whole", cache=cache, concurrency=3)
    items = await run_pipeline(node, [EVENTS[0], EVENTS[1], EVENTS[0], EVENTS[0]])
    assert all(isinstance(item, LLMResponse) for item in items) and len(items) == 4
    by_symbol = defaultdict(set)
    for item in items:
        by_symbol[item.event["symbol"]].add(item.text)
    assert all(len(texts) == 1 for texts in by_symbol.values())
    # Identical prompts, even in flight at the same time, are generated once.
    assert node.metrics.requests == 2 and node.metrics.cache_hits == 2
    assert sum(item.cached for item in items) == 2
    assert cache.stats_for("llm").hits == 2


async def test_a_refused_request_goes_to_the_error_policy(
    chat_server: TransformersServer, tiny_chat_model: Path, chat_gateway: Any
) -> None:
    async with chat_gateway(chat_server.url, refuse=1, status=400) as proxy:
        node = LLMNode(
            prompt="{symbol}",
            url=f"http://127.0.0.1:{proxy.port}/v1",
            model=str(tiny_chat_model),
            max_tokens=3,
            on_error="result",
            concurrency=1,
        )
        pipeline = StreamingPipeline("llm")
        pipeline.set_source(IterableSource(EVENTS[:2]))
        pipeline.add_node(node)
        async with pipeline.run() as results:
            outcomes = [result async for result in results]
    failed = [r for r in outcomes if not r.success]
    assert len(failed) == 1 and isinstance(failed[0].error, LLMError)
    assert failed[0].data == EVENTS[0] and "answered 400" in str(failed[0].error)
    answers = [r.data for r in outcomes if r.success and isinstance(r.data, LLMResponse)]
    assert [a.event for a in answers] == [EVENTS[1]]
    assert node.metrics.errors == 1


async def test_gibberish_does_not_match_the_schema(
    chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    class Verdict(msgspec.Struct):
        action: str
        confidence: float

    node = node_for(chat_server, tiny_chat_model, schema=Verdict, mode="whole", on_error="result")
    pipeline = StreamingPipeline("llm")
    pipeline.set_source(IterableSource(EVENTS[:1]))
    pipeline.add_node(node)
    async with pipeline.run() as results:
        outcomes = [result async for result in results]
    assert len(outcomes) == 1 and not outcomes[0].success
    assert isinstance(outcomes[0].error, SchemaError)


# -- a provider of known answers, for what a random model cannot show -------------------------


class Scripted(LLMProvider):
    """Answers every prompt with ``answer`` split in words, ``pause`` seconds per word, and
    reports ``tokens`` as usage; records how many generations run at once."""

    PLUGIN_NAME = "scripted"

    def __init__(self, answer: str, *, pause: float = 0.0, tokens: int = 10) -> None:
        self.model = "scripted"
        self.answer = answer
        self.pause = pause
        self.tokens = tokens
        self.running = 0
        self.most_running = 0
        self.started: list[float] = []

    @asynccontextmanager
    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[TokenStream]:
        self.started.append(trio.current_time())
        self.running += 1
        self.most_running = max(self.most_running, self.running)

        async def deltas(tokens: TokenStream) -> AsyncIterator[TokenDelta]:
            for word in self.answer.split(" "):
                await trio.sleep(self.pause)
                yield TokenDelta(word + " ")
            tokens.reported_usage = Usage(0, self.tokens)

        try:
            yield TokenStream(deltas, started=trio.current_time(), model=self.model)
        finally:
            self.running -= 1


async def test_structured_output_is_validated_into_the_schema() -> None:
    class Verdict(msgspec.Struct):
        action: str
        confidence: float

    node = LLMNode(
        prompt="{symbol}", provider=Scripted('{"action": "buy", "confidence": 0.9}'), schema=Verdict
    )
    items = await node.process_batch([EVENTS[0]], NodeContext("llm"))
    assert items[-1].structured == Verdict("buy", 0.9)


async def test_concurrency_bounds_the_generations_in_flight() -> None:
    provider = Scripted("a b c", pause=0.01)
    node = LLMNode(prompt="{n}", provider=provider, concurrency=3)
    items = await run_pipeline(node, [{"n": i} for i in range(10)])
    assert sum(isinstance(i, LLMResponse) for i in items) == 10
    assert provider.most_running == 3


async def test_requests_per_minute_per_key(autojump_clock: trio.testing.MockClock) -> None:
    provider = Scripted("ok")
    node = LLMNode(
        prompt="{user}",
        provider=provider,
        concurrency=4,
        mode="whole",
        rate_limit=RateLimit(requests_per_minute=2, key=lambda event: event["user"]),
    )
    events = [{"user": "alice"}] * 4 + [{"user": "bob"}] * 2
    items = await run_pipeline(node, events)
    assert len(items) == 6
    # alice: two at once, then one every 30 s; bob is not held back by alice.
    assert sorted(provider.started) == [0.0, 0.0, 0.0, 0.0, 30.0, 60.0]


async def test_tokens_per_minute_waits_for_the_spent_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = Scripted("ok", tokens=60)
    node = LLMNode(
        prompt="{n}",
        provider=provider,
        concurrency=1,
        mode="whole",
        rate_limit=RateLimit(tokens_per_minute=100),
    )
    await run_pipeline(node, [{"n": i} for i in range(3)])
    # 100 -> 40 (goes on) -> -20: 21 tokens to refill at 100/min before the third request.
    assert provider.started[:2] == [0.0, 0.0]
    assert provider.started[2] == pytest.approx(12.6)


def test_settings_are_checked_at_construction() -> None:
    provider = Scripted("x")
    with pytest.raises(ConfigError, match=r"LLMNode\(mode='fast'\): mode must be one of"):
        LLMNode(prompt="x", provider=provider, mode="fast")
    with pytest.raises(ConfigError, match=r"LLMNode\(concurrency=0\)"):
        LLMNode(prompt="x", provider=provider, concurrency=0)
    with pytest.raises(ConfigError, match="rate_limit must be a RateLimit"):
        LLMNode(prompt="x", provider=provider, rate_limit=60)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="prompt must be a template string or a function"):
        LLMNode(prompt=3, provider=provider)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_tokens must be an integer >= 1"):
        LLMNode(prompt="x", provider=provider, max_tokens=0)
