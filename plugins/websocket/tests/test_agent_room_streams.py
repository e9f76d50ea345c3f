"""Agent streams into a room with a fast and a slow member, over real sockets.

The slow member is a trio-websocket client with a one-message queue: while it does not
read, trio-websocket stops reading its socket, the kernel buffers fill and the server's
writes to it wait, exactly as for a browser on a bad link. The server's outbound queue is
8 messages with ``drop_oldest``: a frame per token to that member would lose text.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
import trio
from haive_plugin_websocket import WebSocketManager
from haive_plugin_websocket.agent_streams import AgentStreams
from trio_websocket import WebSocketConnection, open_websocket_url

TOKENS = [f"<{i:05d}>" + os.urandom(500).hex() for i in range(3000)]  # ~3 MB, incompressible
TEXT = "".join(TOKENS)


async def receive(ws: WebSocketConnection, message_type: str) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == message_type:
            return message


async def read_stream(ws: WebSocketConnection, pause: float = 0.0) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await receive(ws, "agent_response")
        frames.append(frame)
        if frame["done"]:
            return frames
        if pause:
            await trio.sleep(pause)


def text_of(frames: list[dict[str, Any]]) -> str:
    """The frames' text, checking that seq and offset leave no gap."""
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    offset = frames[0]["offset"]
    for frame in frames:
        assert frame["offset"] == offset and frame["room"] == "desk"
        offset += len(frame["content"])
    assert frames[-1]["chars"] == offset
    return "".join(f["content"] for f in frames)


def manager_for() -> WebSocketManager:
    return WebSocketManager(
        port=0, rate_limit=None, outbound_queue=8, compression=None, max_message_size=None
    )


async def join(ws: WebSocketConnection) -> str:
    """Join the room; the member's client id."""
    client_id: str = json.loads(await ws.get_message())["client_id"]  # the welcome
    await ws.send_message(json.dumps({"type": "join", "room": "desk"}))
    await receive(ws, "joined")
    return client_id


async def paced_agent(request: dict[str, Any], push: Any) -> None:
    for token in TOKENS:
        await push(token)
        await trio.sleep(0.001)


async def test_a_slow_member_gets_the_whole_text_in_fewer_larger_frames() -> None:
    manager = manager_for()
    max_pending = 2_500_000  # what piles up while it does not read (~1.3 MB), with room
    streams = AgentStreams(manager, paced_agent, max_pending=max_pending, frame_interval="1ms")
    fast_frames: list[dict[str, Any]] = []
    halfway = trio.Event()

    async def read_fast(ws: WebSocketConnection) -> None:
        received = 0
        while True:
            frame = await receive(ws, "agent_response")
            fast_frames.append(frame)
            received += len(frame["content"])
            if received >= len(TEXT) // 2:
                halfway.set()
            if frame["done"]:
                return

    with trio.fail_after(120):  # a hang guard only
        async with (
            manager.serving(),
            streams.running(),
            open_websocket_url(manager.url, message_queue_size=1) as fast,
            open_websocket_url(manager.url, message_queue_size=1, max_message_size=2**24) as slow,
            trio.open_nursery() as nursery,
        ):
            await join(fast)
            await join(slow)
            await fast.send_message(json.dumps({"type": "start_stream", "agent_id": "a1", "room": "desk"}))
            nursery.start_soon(read_fast, fast)
            # The slow member reads nothing until the fast one has half the text: its
            # socket buffers fill and what follows waits on the server, then it catches up.
            await halfway.wait()
            slow_frames = await read_stream(slow)
    assert text_of(fast_frames) == TEXT
    assert text_of(slow_frames) == TEXT
    assert fast_frames[-1]["reason"] == slow_frames[-1]["reason"] == "complete"
    # Fewer frames, one of them carrying what piled up while it did not read.
    assert len(slow_frames) < len(fast_frames)
    assert max(len(f["content"]) for f in slow_frames) > 100 * len(TOKENS[0])
    assert streams.stats.frames == len(slow_frames) + len(fast_frames)
    assert streams.stats.lagging == 0 and streams.stats.held_back == 0
    assert 0 < streams.stats.most_pending_chars <= max_pending
    assert manager.stats.dropped_outbound == 0


async def test_a_member_max_pending_behind_is_cut_off_with_its_text_and_a_reason() -> None:
    manager = manager_for()
    streams = AgentStreams(manager, paced_agent, max_pending=65_536, frame_interval="1ms")
    with trio.fail_after(120):  # a hang guard only
        async with (
            manager.serving(),
            streams.running(),
            open_websocket_url(manager.url, message_queue_size=1) as fast,
            open_websocket_url(manager.url, message_queue_size=1) as slow,
        ):
            await join(fast)
            slow_id = await join(slow)
            await fast.send_message(json.dumps({"type": "start_stream", "agent_id": "a1", "room": "desk"}))
            # The slow member reads nothing until the fast one has the whole text.
            fast_frames = await read_stream(fast)
            assert slow_id in manager.clients  # cut off the stream, still connected
            slow_frames = await read_stream(slow)
    assert text_of(fast_frames) == TEXT and fast_frames[-1]["reason"] == "complete"
    assert slow_frames[-1]["reason"] == "lagging"
    cut_at = slow_frames[-1]["chars"]
    assert text_of(slow_frames) == TEXT[:cut_at] and 0 < cut_at < len(TEXT)
    assert streams.stats.lagging == 1
    assert streams.stats.most_pending_chars <= 65_536
    assert manager.stats.dropped_outbound == 0


async def test_a_room_whose_members_are_all_slow_holds_the_agent_back() -> None:
    manager = manager_for()

    async def agent(request: dict[str, Any], push: Any) -> None:
        for token in TOKENS:
            await push(token)

    streams = AgentStreams(manager, agent, max_pending=65_536, frame_interval="1ms")
    with trio.fail_after(120):  # a hang guard only
        async with (
            manager.serving(),
            streams.running(),
            open_websocket_url(manager.url, message_queue_size=1) as ws,
        ):
            await join(ws)
            await ws.send_message(json.dumps({"type": "start_stream", "agent_id": "a1", "room": "desk"}))
            while not streams.stats.held_back:  # noqa: ASYNC110 - observing a counter
                await trio.sleep(0.01)
            frames = await read_stream(ws)
    assert text_of(frames) == TEXT and frames[-1]["reason"] == "complete"
    assert streams.stats.lagging == 0 and streams.stats.most_pending_chars <= 65_536


@pytest.mark.redis
async def test_with_a_backplane_members_on_other_nodes_get_the_stream() -> None:
    from haive_plugin_websocket import RedisBackplane

    prefix = f"test:haive-ws:{uuid.uuid4().hex}"

    async def agent(request: dict[str, Any], push: Any) -> None:
        for token in TOKENS[:50]:
            await push(token)

    a = WebSocketManager(port=0, rate_limit=None, backplane=RedisBackplane(prefix=prefix))
    b = WebSocketManager(port=0, rate_limit=None, backplane=RedisBackplane(prefix=prefix))
    streams = AgentStreams(a, agent)
    try:
        with trio.fail_after(30):
            async with (
                a.serving(),
                b.serving(),
                streams.running(),
                open_websocket_url(a.url) as on_a,
                open_websocket_url(b.url) as on_b,
            ):
                await join(on_a)
                await join(on_b)
                await on_a.send_message(
                    json.dumps({"type": "start_stream", "agent_id": "a1", "room": "desk"})
                )
                for ws in (on_a, on_b):
                    frames = await read_stream(ws)
                    assert "".join(f["content"] for f in frames) == "".join(TOKENS[:50])
                    assert frames[-1]["reason"] == "complete"
    finally:
        await RedisBackplane(prefix=prefix).purge()


async def endless_agent(request: dict[str, Any], push: Any) -> None:
    while True:
        await push("more ")
        await trio.sleep(0.005)


async def test_stopping_or_leaving_ends_a_room_stream_for_every_member() -> None:
    manager = manager_for()
    streams = AgentStreams(manager, endless_agent, frame_interval="1ms")
    start = json.dumps({"type": "start_stream", "agent_id": "a1", "room": "desk"})
    with trio.fail_after(30):  # a hang guard only
        async with (
            manager.serving(),
            streams.running(),
            open_websocket_url(manager.url) as member,
        ):
            await join(member)
            async with open_websocket_url(manager.url) as starter:
                await join(starter)
                await starter.send_message(start)
                stream_id = (await receive(starter, "stream_started"))["stream_id"]
                await receive(member, "agent_response")
                await starter.send_message(json.dumps({"type": "stop_stream", "stream_id": stream_id}))
                for ws in (starter, member):
                    frames = await read_stream(ws)
                    assert frames[-1]["reason"] == "stopped"
                await starter.send_message(start)
                await receive(member, "agent_response")
            # The starting client left: the agent is cancelled, the room is told.
            frames = await read_stream(member)
            assert frames[-1]["reason"] == "abandoned"
    assert streams.stats.stopped == 1 and streams.stats.abandoned == 1
