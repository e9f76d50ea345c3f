"""The OpenAI-compatible chat provider against ``transformers serve`` on a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from haive_contrib_ai.llm_openai import OpenAIChatProvider, retry_after_seconds
from haive_contrib_ai.llm_providers import GenerationOptions, resolve_llm_provider
from haive_contrib_ai.llm_records import ChatMessage, LLMError
from haive_contrib_ai.llm_tiny import TransformersServer, free_port

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.retry import RetryPolicy

PROMPT = [ChatMessage("system", "be brief"), ChatMessage("user", "how is the market?")]


def provider_for(url: str, model: Path, **options: object) -> OpenAIChatProvider:
    return OpenAIChatProvider(url=url, model=str(model), **options)  # type: ignore[arg-type]


async def test_stream_delivers_deltas_in_order_then_the_whole_text_and_usage(
    chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    provider = provider_for(chat_server.url, tiny_chat_model)
    try:
        async with provider.stream(PROMPT, GenerationOptions(max_tokens=24)) as tokens:
            deltas = [delta async for delta in tokens]
        whole = await provider.generate(PROMPT, GenerationOptions(max_tokens=24))
    finally:
        await provider.aclose()
    generation = tokens.generation
    assert generation is not None
    texts = [d.text for d in deltas if d.text]
    # Streamed, not one lump: transformers serve sends a token per event when idle and
    # several per event when the machine is loaded, so only "more than one" is certain.
    assert len(texts) >= 2
    assert generation.text == "".join(texts)
    # Greedy decoding: the streamed and the whole answer are the same text.
    assert whole.text == generation.text
    assert generation.usage.completion_tokens == 24 and not generation.usage.estimated
    assert generation.usage.prompt_tokens > 5
    assert generation.finish_reason == "length"
    assert tokens.time_to_first_token is not None and tokens.time_to_first_token > 0
    assert provider.requests == 2 and provider.retries == 0


async def test_leaving_the_stream_stops_the_generation_on_the_server(
    chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    """The server generates one request at a time: after we leave a 1500-token generation
    early, the next request is answered long before those 1500 tokens would be done."""
    provider = provider_for(chat_server.url, tiny_chat_model)
    long = GenerationOptions(max_tokens=1500)
    try:
        started = trio.current_time()
        await provider.generate(PROMPT, long)
        full = trio.current_time() - started
        async with provider.stream(PROMPT, long) as tokens:
            seen = 0
            async for delta in tokens:
                seen += bool(delta.text)
                if seen == 3:
                    break
        assert tokens.generation is None  # never finished
        started = trio.current_time()
        short = await provider.generate(PROMPT, GenerationOptions(max_tokens=5))
        after_cancel = trio.current_time() - started
    finally:
        await provider.aclose()
    assert short.usage.completion_tokens == 5
    assert after_cancel < full / 2, (after_cancel, full)


async def test_a_cancelled_scope_closes_the_stream(
    chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    provider = provider_for(chat_server.url, tiny_chat_model)
    received = 0
    try:
        with trio.move_on_after(30) as scope:
            async with provider.stream(PROMPT, GenerationOptions(max_tokens=1500)) as tokens:
                async for _delta in tokens:
                    received += 1
                    if received == 5:
                        scope.cancel()
        assert scope.cancelled_caught and received == 5
        # The connection is usable again at once: a new generation goes through.
        again = await provider.generate(PROMPT, GenerationOptions(max_tokens=3))
    finally:
        await provider.aclose()
    assert again.usage.completion_tokens == 3


@pytest.mark.slow
async def test_retries_until_a_stopped_server_is_back(
    chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    """The session's server is stopped and started again on its port (it stays up after)."""
    provider = provider_for(
        chat_server.url,
        tiny_chat_model,
        retry=RetryPolicy(attempts=1000, backoff=0.05, max_backoff=0.25),
        connect_timeout=1,
    )
    results: list[str] = []
    try:
        first = await provider.generate(PROMPT, GenerationOptions(max_tokens=4))
        await trio.to_thread.run_sync(chat_server.stop)
        try:
            async with trio.open_nursery() as nursery:

                async def ask() -> None:
                    generation = await provider.generate(PROMPT, GenerationOptions(max_tokens=4))
                    results.append(generation.text)

                nursery.start_soon(ask)
                # Start it again once the client has been refused a few times.
                while provider.retries < 3:  # noqa: ASYNC110 - a counter, not an event
                    await trio.sleep(0.05)
                refused_before_restart = provider.retries
                await trio.to_thread.run_sync(chat_server.start)
        finally:
            await trio.to_thread.run_sync(chat_server.start)  # no-op unless the test failed
    finally:
        await provider.aclose()
    assert results == [first.text]
    assert refused_before_restart >= 3 and provider.retries >= refused_before_restart


async def test_gives_up_after_the_policys_attempts_with_the_reason() -> None:
    provider = OpenAIChatProvider(
        url=f"http://127.0.0.1:{free_port()}/v1",
        model="m",
        retry=RetryPolicy(attempts=3, backoff=0.01),
    )
    try:
        with pytest.raises(LLMError, match="failed: ConnectError"):
            await provider.generate(PROMPT)
    finally:
        await provider.aclose()
    assert provider.requests == 3 and provider.retries == 2


async def test_429_is_retried_after_the_servers_retry_after(
    chat_server: TransformersServer, tiny_chat_model: Path, chat_gateway: Any
) -> None:
    async with chat_gateway(chat_server.url, refuse=2, status=429, retry_after="1") as proxy:
        provider = provider_for(
            f"http://127.0.0.1:{proxy.port}/v1",
            tiny_chat_model,
            retry=RetryPolicy(attempts=5, backoff=0.01),
        )
        try:
            generation = await provider.generate(PROMPT, GenerationOptions(max_tokens=6))
        finally:
            await provider.aclose()
    assert generation.usage.completion_tokens == 6
    assert len(proxy.arrivals) == 3 and provider.retries == 2
    gaps = [b - a for a, b in zip(proxy.arrivals, proxy.arrivals[1:], strict=False)]
    assert all(gap >= 0.95 for gap in gaps), gaps  # the policy alone would wait 10-20 ms


async def test_503_retried_with_backoff_and_400_not_retried(
    chat_server: TransformersServer, tiny_chat_model: Path, chat_gateway: Any
) -> None:
    async with chat_gateway(chat_server.url, refuse=1, status=503) as proxy:
        provider = provider_for(
            f"http://127.0.0.1:{proxy.port}/v1", tiny_chat_model, retry=RetryPolicy(attempts=2)
        )
        try:
            generation = await provider.generate(PROMPT, GenerationOptions(max_tokens=2))
        finally:
            await provider.aclose()
    assert generation.usage.completion_tokens == 2 and provider.retries == 1
    async with chat_gateway(chat_server.url, refuse=5, status=400) as proxy:
        provider = provider_for(
            f"http://127.0.0.1:{proxy.port}/v1", tiny_chat_model, retry=RetryPolicy(attempts=5)
        )
        try:
            with pytest.raises(LLMError, match=r"answered 400: .*slow down") as caught:
                await provider.generate(PROMPT)
        finally:
            await provider.aclose()
    assert caught.value.status == 400 and len(proxy.arrivals) == 1


async def test_timeout_bounds_the_whole_generation(
    chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    provider = provider_for(chat_server.url, tiny_chat_model, timeout="200ms")
    try:
        with pytest.raises(LLMError, match=r"took longer than timeout=0.2s"):
            await provider.generate(PROMPT, GenerationOptions(max_tokens=1500))
    finally:
        await provider.aclose()


def test_settings_are_checked_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"OpenAIChatProvider\(timeout=-1\): timeout must be"):
        OpenAIChatProvider(url="http://x/v1", model="m", timeout=-1)
    with pytest.raises(ConfigError, match="model must be a non-empty string"):
        OpenAIChatProvider(url="http://x/v1", model="")
    with pytest.raises(ConfigError, match="retry must be a RetryPolicy"):
        OpenAIChatProvider(url="http://x/v1", model="m", retry=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="url= of an OpenAI-compatible server"):
        resolve_llm_provider()
    assert retry_after_seconds("1.5") == 1.5


def test_the_registry_knows_the_openai_provider() -> None:
    from haive.dataflow.plugins import get_registry

    assert get_registry().get("llm_provider", "openai") is OpenAIChatProvider
