"""Reconnects, queued messages, heartbeat and connection-state recovery, on real sockets."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
from haive_plugin_websocket import (
    ConnectionConfig,
    ConnectionFailedError,
    StreamingClient,
    WebSocketManager,
)


def config(url: str, **options: Any) -> ConnectionConfig:
    options.setdefault("heartbeat_interval", None)
    options.setdefault("reconnect_interval", 0.02)
    options.setdefault("max_reconnect_interval", 0.1)
    return ConnectionConfig(url=url, **options)


def recording_server(received: list[int], port: int = 0) -> WebSocketManager:
    manager = WebSocketManager(port=port)

    @manager.on_message("msg")
    def msg(client, message):
        received.append(message["n"])

    return manager


async def test_server_restart_queued_messages_arrive_once_in_order_and_rooms_rejoin():
    received: list[int] = []
    first = recording_server(received)
    kinds: list[str] = []
    all_in = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with first.serving():
                port = first.port
                client = StreamingClient(config(first.url, client_id="c1"))
                client.on_event("*")(lambda event: kinds.append(event.kind))
                await nursery.start(client.run)
                await client.join("room")
                for n in range(10):
                    await client.send_message({"type": "msg", "n": n})
                await client.flush()
            # The server is gone; messages sent meanwhile wait in the client's queue.
            assert not client.connected
            for n in range(10, 60):
                await client.send_message({"type": "msg", "n": n})
            assert client.queued == 50
            second = recording_server(received, port=port)
            second.on_message("done")(lambda c, m: all_in.set())
            async with second.serving():
                await client.send_message({"type": "done"})
                await all_in.wait()
                assert received == list(range(60))
                assert second.rooms == {"room": {"c1"}}
                assert client.queued == 0
                await client.close()
    assert kinds[0] == "connected" and "disconnected" in kinds and "reconnecting" in kinds
    assert kinds[kinds.index("reconnected") - 1] == "reconnecting"
    assert "gap" in kinds  # another server epoch: the client is told its room history is gone
    assert client.stats.reconnects == 1


async def _ticks(box: list[dict[str, Any]]) -> list[int]:
    await trio.lowlevel.checkpoint()
    return [m["n"] for m in box if m.get("type") == "tick"]


async def test_recovery_replays_missed_room_messages_exactly_once(inbox):
    with trio.fail_after(10):
        manager = WebSocketManager(port=0, history_size=100)
        gone = trio.Event()
        manager.on_disconnect(lambda session: gone.set())
        async with manager.serving():
            client = StreamingClient(config(manager.url, client_id="a"))
            box = inbox(client)
            rejoined = trio.Event()
            client.on_event("reconnected")(lambda event: rejoined.set())
            async with client.connect():
                await client.join("r")
                for n in range(1, 6):
                    await manager.broadcast_to_room("r", {"type": "tick", "n": n})
                await box.wait_count("tick", 5)
                await manager.disconnect("a", 1012, "maintenance")
                await gone.wait()
                for n in range(6, 16):  # while the client is away
                    await manager.broadcast_to_room("r", {"type": "tick", "n": n})
                await rejoined.wait()
                await box.wait_count("tick", 15)
                for n in range(16, 21):
                    await manager.broadcast_to_room("r", {"type": "tick", "n": n})
                await box.wait_count("tick", 20)
                assert await _ticks(box.messages) == list(range(1, 21))
                seqs = [m["seq"] for m in box.messages if "seq" in m]
                assert seqs == sorted(set(seqs))  # every room message once, in order
                assert box.of_type("gap") == []


async def test_a_gap_older_than_the_history_is_reported(inbox):
    with trio.fail_after(10):
        manager = WebSocketManager(port=0, history_size=5)
        gone = trio.Event()
        manager.on_disconnect(lambda session: gone.set())
        async with manager.serving():
            client = StreamingClient(config(manager.url, client_id="a"))
            box = inbox(client)
            gaps: list[Any] = []
            client.on_event("gap")(gaps.append)
            async with client.connect():
                await client.join("r")
                await manager.broadcast_to_room("r", {"type": "tick", "n": 0})
                await box.wait_count("tick", 1)
                await manager.disconnect("a", 1012)
                await gone.wait()
                for n in range(1, 21):
                    await manager.broadcast_to_room("r", {"type": "tick", "n": n})
                await box.wait_count("tick", 6)
                assert await _ticks(box.messages) == [0, 16, 17, 18, 19, 20]
                (gap,) = box.of_type("gap")
                assert gap["reason"] == "too_old" and gap["room"] == "r"
                assert gaps[0].detail["oldest"] == gap["oldest"] > gap["since"] + 1


async def test_heartbeat_detects_a_silent_peer_on_a_real_socket(peers):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, peers.silent, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            cfg = config(
                f"ws://127.0.0.1:{port}/",
                heartbeat_interval=0.05,
                heartbeat_timeout=0.1,
                compression=None,
            )
            client = StreamingClient(cfg)
            timed_out = trio.Event()
            client.on_event("reconnected")(lambda event: timed_out.set())
            async with client.connect():
                await timed_out.wait()
            kinds = [e.kind for e in client.events]
            assert kinds[:5] == [
                "connected",
                "heartbeat_timeout",
                "disconnected",
                "reconnecting",
                "reconnected",
            ]
            assert client.stats.heartbeat_timeouts >= 1
            nursery.cancel_scope.cancel()


async def test_waiters_raise_once_the_client_gives_up_and_a_manager_can_serve_again():
    with trio.fail_after(10):
        manager = WebSocketManager(port=0)
        async with trio.open_nursery() as nursery:
            async with manager.serving():
                client = StreamingClient(
                    config(manager.url, max_reconnect_attempts=2, reconnect_interval=0.01)
                )
                await nursery.start(client.run)
                await client.join("before")
            with pytest.raises(ConnectionFailedError, match="after 2 reconnect attempts"):
                await client.join("after")  # waits for the reconnect that never comes
        with pytest.raises(ConnectionFailedError):
            await client.send_message({"type": "late"})
        assert [e.kind for e in client.events][-1] == "gave_up"
        async with manager.serving():  # stopped managers can serve again
            again = StreamingClient(config(manager.url))
            async with again.connect():
                await again.join("room")
                assert manager.rooms == {"room": {again.client_id}}


async def test_server_keepalive_drops_a_client_that_went_silent(inbox):
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request, TextMessage

    with trio.fail_after(10):
        manager = WebSocketManager(port=0, ping_interval=0.05, ping_timeout=0.1, close_timeout=0.1)
        async with manager.serving():
            watcher = StreamingClient(config(manager.url, client_id="watcher"))
            box = inbox(watcher)
            async with watcher.connect():
                await watcher.join("r")
                # A peer that joins, then never reads again (so it never answers a ping).
                stream = await trio.open_tcp_stream("127.0.0.1", manager.port)
                peer = WSConnection(ConnectionType.CLIENT)
                await stream.send_all(
                    peer.send(Request(host="127.0.0.1", target="/?client_id=ghost"))
                )
                accepted = False
                while not accepted:
                    peer.receive_data(await stream.receive_some(65536))
                    accepted = any(isinstance(e, AcceptConnection) for e in peer.events())
                await stream.send_all(peer.send(TextMessage(data='{"type": "join", "room": "r"}')))
                joined = await box.wait_count("user_joined", 2)
                assert joined[-1]["user_id"] == "ghost"
                left = await box.wait_count("user_left", 1)
                assert left[0]["user_id"] == "ghost" and manager.rooms == {"r": {"watcher"}}
                await stream.aclose()


async def test_a_room_message_whose_room_is_not_a_string_does_not_end_the_client():
    # Replay detection looked the room up as given: a list ("room": [1]) raised TypeError
    # out of the reader and ended the whole client. Another server implementation may send
    # anything; such a message is not a replay of one of our rooms and is dispatched.
    from trio_websocket import ConnectionClosed as TWConnectionClosed
    from trio_websocket import serve_websocket

    async def odd_server(request: Any) -> None:
        ws = await request.accept()
        await ws.send_message('{"type": "joined", "room": "lobby", "latest": 3}')
        await ws.send_message('{"type": "odd", "room": [1], "seq": 1}')
        await ws.send_message('{"type": "odd", "room": {"a": 1}, "seq": 2}')
        await ws.send_message('{"type": "news", "room": "lobby", "seq": 3}')  # a replay
        await ws.send_message('{"type": "news", "room": "lobby", "seq": 4}')
        try:
            while True:
                await ws.get_message()
        except TWConnectionClosed:
            pass

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve_websocket, odd_server, "127.0.0.1", 0, None)
            )
            client = StreamingClient(config(f"ws://127.0.0.1:{server.port}/"))
            odd: list[Any] = []
            news = trio.Event()
            client.on_message("odd")(lambda message: odd.append(message["room"]))
            client.on_message("news")(lambda message: news.set())
            async with client.connect():
                await news.wait()
                assert odd == [[1], {"a": 1}]
                assert client.stats.duplicates_dropped == 1
                assert client.connected and client.rooms == ["lobby"]
            nursery.cancel_scope.cancel()
