"""The local transformers provider on the tiny model, through the core's ThreadBridge."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from haive_contrib_ai.llm_local import TransformersChatProvider
from haive_contrib_ai.llm_node import LLMChunk, LLMNode, LLMResponse
from haive_contrib_ai.llm_openai import OpenAIChatProvider
from haive_contrib_ai.llm_providers import GenerationOptions, resolve_llm_provider
from haive_contrib_ai.llm_records import ChatMessage
from haive_contrib_ai.llm_tiny import TransformersServer

from haive.dataflow.errors import ConfigError

PROMPT = [ChatMessage("user", "how is the market?")]


@pytest.fixture
async def local(tiny_chat_model: Path):  # type: ignore[no-untyped-def]
    provider = TransformersChatProvider(tiny_chat_model, buffer_size=8)
    try:
        yield provider
    finally:
        await provider.aclose()


async def test_streams_token_by_token_with_usage(local: TransformersChatProvider) -> None:
    async with local.stream(PROMPT, GenerationOptions(max_tokens=30)) as tokens:
        deltas = [delta.text async for delta in tokens]
    generation = tokens.generation
    assert generation is not None
    assert len(deltas) >= 20 and "".join(deltas) == generation.text
    assert generation.usage.completion_tokens == 30 and generation.usage.prompt_tokens > 5
    assert not generation.usage.estimated and generation.finish_reason == "length"


async def test_same_greedy_answer_as_transformers_serve(
    local: TransformersChatProvider, chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    remote = OpenAIChatProvider(url=chat_server.url, model=str(tiny_chat_model))
    try:
        served = await remote.generate(PROMPT, GenerationOptions(max_tokens=16))
    finally:
        await remote.aclose()
    here = await local.generate(PROMPT, GenerationOptions(max_tokens=16))
    assert here.text == served.text
    assert here.usage == served.usage


async def test_a_consumer_that_does_not_read_holds_the_model_back(
    local: TransformersChatProvider,
) -> None:
    async with local.stream(PROMPT, GenerationOptions(max_tokens=1500)) as tokens:
        first = await tokens.__anext__()
        await trio.sleep(0.5)  # generating 1500 tokens takes seconds; we read nothing
        waiting = local.waiting.statistics().current_buffer_used
        assert waiting == 8  # the bound: the model thread waits for room
        assert first.text
    # Leaving stopped the generation: the bridge's one thread is free for the next at once.
    with trio.fail_after(5):
        again = await local.generate(PROMPT, GenerationOptions(max_tokens=3))
    assert again.usage.completion_tokens == 3


async def test_leaving_early_stops_the_model(local: TransformersChatProvider) -> None:
    started = trio.current_time()
    await local.generate(PROMPT, GenerationOptions(max_tokens=1500))
    full = trio.current_time() - started
    started = trio.current_time()
    async with local.stream(PROMPT, GenerationOptions(max_tokens=1500)) as tokens:
        async for _delta in tokens:
            break
    await local.generate(PROMPT, GenerationOptions(max_tokens=3))
    assert trio.current_time() - started < full / 2


async def test_in_an_llm_node(tiny_chat_model: Path) -> None:
    node = LLMNode(prompt="{q}", provider="transformers", model=str(tiny_chat_model), max_tokens=8)
    try:
        from haive.dataflow.runtime.nodes import NodeContext

        out = await node.process_batch([{"q": "hi"}], NodeContext("llm"))
    finally:
        await node.aclose()
    assert isinstance(out[-1], LLMResponse) and all(isinstance(c, LLMChunk) for c in out[:-1])
    assert "".join(c.text for c in out[:-1]) == out[-1].text


def test_model_must_be_a_folder() -> None:
    with pytest.raises(ConfigError, match="model must be a local model folder"):
        resolve_llm_provider("transformers", model="gpt-17")
