"""Agent token streams over real WebSocket connections (trio-websocket as the peer)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from haive_plugin_websocket import WebSocketManager
from haive_plugin_websocket.agent_streams import AgentStreams
from trio_websocket import WebSocketConnection, open_websocket_url

from haive.dataflow.errors import ConfigError


async def receive(ws: WebSocketConnection, message_type: str) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == message_type:
            return message


async def read_stream(ws: WebSocketConnection) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await receive(ws, "agent_response")
        frames.append(frame)
        if frame["done"]:
            return frames


def start(agent_id: str = "analyzer-001", **extra: Any) -> str:
    return json.dumps({"type": "start_stream", "agent_id": agent_id, **extra})


def manager_for() -> WebSocketManager:
    return WebSocketManager(port=0, rate_limit=None)


async def test_a_reading_client_gets_every_token_in_order() -> None:
    tokens = [f"tok{i} " for i in range(300)]

    async def agent(request: dict[str, Any], push: Any) -> None:
        assert request["data_source"] == "market_feed"
        for token in tokens:
            await push(token)
            await trio.sleep(0.001)

    manager = manager_for()
    streams = AgentStreams(manager, agent)
    with trio.fail_after(30):
        async with manager.serving(), streams.running(), open_websocket_url(manager.url) as ws:
            await ws.send_message(start(data_source="market_feed"))
            started = await receive(ws, "stream_started")
            frames = await read_stream(ws)
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert all(f["stream_id"] == started["stream_id"] for f in frames)
    assert all(f["agent_id"] == "analyzer-001" for f in frames)
    assert "".join(f["content"] for f in frames) == "".join(tokens)
    assert frames[-1]["reason"] == "complete" and frames[-1]["chars"] == len("".join(tokens))
    # Tokens arrive a millisecond apart and the client keeps up: mostly a frame per token.
    assert len(frames) > len(tokens) / 3
    assert streams.stats.completed == 1 and not streams.streams


async def test_a_slow_client_gets_coalesced_frames_and_holds_the_agent_back() -> None:
    tokens = [f"{i:06d}" + "x" * 994 for i in range(4000)]  # 4 MB in 1 KB tokens
    manager = manager_for()

    async def agent(request: dict[str, Any], push: Any) -> None:
        for token in tokens:
            await push(token)

    streams = AgentStreams(manager, agent, max_pending=16_384)
    with trio.fail_after(60):
        # trio-websocket buffers one message: not reading stops reading the socket.
        async with (
            manager.serving(),
            streams.running(),
            open_websocket_url(manager.url, message_queue_size=1) as ws,
        ):
            await ws.send_message(start())
            await trio.sleep(1.0)  # the client does not read; the socket buffers fill
            assert streams.stats.held_back >= 1  # the agent waits, nothing piles up
            frames = await read_stream(ws)
    text = "".join(f["content"] for f in frames)
    assert text == "".join(tokens)
    assert len(frames) < len(tokens) / 2  # coalesced
    assert streams.stats.most_pending_chars < 16_384 + 1000


async def test_stop_stream_cancels_the_agent() -> None:
    cancelled = trio.Event()

    async def agent(request: dict[str, Any], push: Any) -> None:
        try:
            while True:
                await push("more ")
                await trio.sleep(0.005)
        except trio.Cancelled:
            cancelled.set()
            raise

    manager = manager_for()
    streams = AgentStreams(manager, agent)
    with trio.fail_after(30):
        async with manager.serving(), streams.running(), open_websocket_url(manager.url) as ws:
            await ws.send_message(start())
            stream_id = (await receive(ws, "stream_started"))["stream_id"]
            await receive(ws, "agent_response")
            await ws.send_message(json.dumps({"type": "stop_stream", "stream_id": stream_id}))
            frames = await read_stream(ws)
            await cancelled.wait()
    assert frames[-1]["reason"] == "stopped"
    assert streams.stats.stopped == 1 and not streams.streams


async def test_a_client_that_leaves_has_its_streams_cancelled() -> None:
    cancelled = trio.Event()

    async def agent(request: dict[str, Any], push: Any) -> None:
        try:
            while True:
                await push("more ")
                await trio.sleep(0.005)
        finally:
            cancelled.set()

    manager = manager_for()
    streams = AgentStreams(manager, agent)
    with trio.fail_after(30):
        async with manager.serving(), streams.running():
            async with open_websocket_url(manager.url) as ws:
                await ws.send_message(start())
                await receive(ws, "agent_response")
            await cancelled.wait()
            while streams.streams:  # noqa: ASYNC110 - the stream's task ends right after
                await trio.sleep(0.01)
    assert streams.stats.abandoned == 1


async def test_a_stream_to_a_room_reaches_every_member() -> None:
    async def agent(request: dict[str, Any], push: Any) -> None:
        for word in ["market ", "is ", "up"]:
            await push(word)

    manager = manager_for()
    streams = AgentStreams(manager, agent, frame_interval="1ms")
    with trio.fail_after(30):
        async with (
            manager.serving(),
            streams.running(),
            open_websocket_url(manager.url) as a,
            open_websocket_url(manager.url) as b,
        ):
            for ws in (a, b):
                await ws.send_message(json.dumps({"type": "join", "room": "desk"}))
                await receive(ws, "joined")
            await a.send_message(start(room="desk"))
            got_a, got_b = await read_stream(a), await read_stream(b)
    for frames in (got_a, got_b):
        assert "".join(f["content"] for f in frames) == "market is up"


async def test_bad_requests_get_error_frames_and_agent_errors_end_the_stream() -> None:
    async def agent(request: dict[str, Any], push: Any) -> None:
        await push("partial ")
        raise RuntimeError("model crashed")

    manager = manager_for()
    streams = AgentStreams(manager, agent, max_streams_per_client=1)
    with trio.fail_after(30):
        async with manager.serving(), streams.running(), open_websocket_url(manager.url) as ws:
            await ws.send_message(json.dumps({"type": "start_stream"}))
            assert (await receive(ws, "error"))["code"] == "invalid_message"
            await ws.send_message(start(room="not-joined"))
            assert (await receive(ws, "error"))["code"] == "forbidden"
            await ws.send_message(json.dumps({"type": "stop_stream", "stream_id": "nope"}))
            assert (await receive(ws, "error"))["code"] == "unknown_stream"
            await ws.send_message(start())
            frames = await read_stream(ws)
    assert frames[-1]["reason"] == "error" and "model crashed" in frames[-1]["error"]
    assert streams.stats.failed == 1


def test_settings_are_checked() -> None:
    async def agent(request: dict[str, Any], push: Any) -> None:
        pass

    with pytest.raises(ConfigError, match=r"AgentStreams\(max_pending=0\)"):
        AgentStreams(manager_for(), agent, max_pending=0)
    with pytest.raises(ConfigError, match="manager must be a WebSocketManager"):
        AgentStreams(None, agent)  # type: ignore[arg-type]
