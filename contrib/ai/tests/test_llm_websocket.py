"""The seed's quick start end to end: WebSocket clients, AgentStreams, the LLM node, and
transformers serve generating; stop_stream and a client leaving stop the generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from haive_contrib_ai.llm_node import LLMChunk, LLMNode, LLMResponse
from haive_contrib_ai.llm_providers import GenerationOptions
from haive_contrib_ai.llm_records import ChatMessage
from haive_contrib_ai.llm_tiny import TransformersServer

websocket = pytest.importorskip("haive_plugin_websocket")
from haive_plugin_websocket import AgentStreams, WebSocketManager  # noqa: E402
from trio_websocket import WebSocketConnection, open_websocket_url  # noqa: E402


async def receive(ws: WebSocketConnection, message_type: str) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == message_type:
            return message


async def read_stream(ws: WebSocketConnection) -> list[dict[str, Any]]:
    frames = []
    while True:
        frames.append(await receive(ws, "agent_response"))
        if frames[-1]["done"]:
            return frames


def agent_for(node: LLMNode, answers: list[LLMResponse]) -> Any:
    async def agent(request: dict[str, Any], push: Any) -> None:
        async def relay(batch: list[Any]) -> None:
            for item in batch:
                if isinstance(item, LLMChunk):
                    await push(item.text)

        answers.append(await node.answer(request, relay))

    return agent


async def test_start_stream_streams_the_models_answer_to_the_client(
    chat_server: TransformersServer, tiny_chat_model: Path
) -> None:
    node = LLMNode(
        prompt="Analyze {data_source} for {agent_id}.",
        url=chat_server.url,
        model=str(tiny_chat_model),
        max_tokens=40,
    )
    answers: list[LLMResponse] = []
    manager = WebSocketManager(port=0, rate_limit=None)
    streams = AgentStreams(manager, agent_for(node, answers))
    with trio.fail_after(60):
        async with manager.serving(), streams.running(), open_websocket_url(manager.url) as ws:
            await ws.send_message(
                json.dumps(
                    {
                        "type": "start_stream",
                        "agent_id": "analyzer-001",
                        "data_source": "market_feed",
                        "stream_config": {"chunk_size": 100, "frequency": "real-time"},
                    }
                )
            )
            frames = await read_stream(ws)
    await node.aclose()
    [answer] = answers
    assert frames[-1]["reason"] == "complete"
    assert "".join(f["content"] for f in frames) == answer.text
    assert answer.usage.completion_tokens == 40 and len(frames) >= 2


@pytest.mark.parametrize("how", ["stop_stream", "leave"])
async def test_stopping_or_leaving_stops_the_generation_on_the_server(
    chat_server: TransformersServer, tiny_chat_model: Path, how: str
) -> None:
    """The server generates one request at a time: once the UI stops a 1500-token answer,
    a new request is answered long before those 1500 tokens would have been generated."""
    node = LLMNode(
        prompt="{agent_id}", url=chat_server.url, model=str(tiny_chat_model), max_tokens=1500
    )
    answers: list[LLMResponse] = []
    manager = WebSocketManager(port=0, rate_limit=None)
    streams = AgentStreams(manager, agent_for(node, answers))
    probe = [ChatMessage("user", "ping")]
    with trio.fail_after(60):
        started = trio.current_time()
        await node.provider.generate(probe, GenerationOptions(max_tokens=1500))
        full = trio.current_time() - started
        async with manager.serving(), streams.running():
            async with open_websocket_url(manager.url) as ws:
                await ws.send_message(json.dumps({"type": "start_stream", "agent_id": "a-1"}))
                stream_id = (await receive(ws, "stream_started"))["stream_id"]
                await receive(ws, "agent_response")
                if how == "stop_stream":
                    await ws.send_message(
                        json.dumps({"type": "stop_stream", "stream_id": stream_id})
                    )
                    frames = await read_stream(ws)
                    assert frames[-1]["reason"] == "stopped"
            while streams.streams:  # noqa: ASYNC110 - the stream ends once cancelled
                await trio.sleep(0.01)
        started = trio.current_time()
        await node.provider.generate(probe, GenerationOptions(max_tokens=5))
        after = trio.current_time() - started
    await node.aclose()
    assert answers == []  # never finished
    assert after < full / 2, (after, full)
    assert (streams.stats.stopped, streams.stats.abandoned) == (
        (1, 0) if how == "stop_stream" else (0, 1)
    )
