"""The server with real sockets on 127.0.0.1: rooms, routing, limits, auth, slow clients."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
from haive_plugin_websocket import (
    ConnectionConfig,
    ConnectionFailedError,
    InvalidRoomError,
    RoomAccessError,
    StreamingClient,
    UnknownClientError,
    WebSocketManager,
)
from haive_plugin_websocket.protocol import JSON
from trio_websocket import ConnectionClosed as TWConnectionClosed
from trio_websocket import ConnectionRejected as TWConnectionRejected
from trio_websocket import open_websocket_url

from haive.dataflow.plugins import get_registry


def client_for(manager: WebSocketManager, **options: Any) -> StreamingClient:
    options.setdefault("heartbeat_interval", None)
    options.setdefault("reconnect_interval", 0.01)
    return StreamingClient(ConnectionConfig(url=manager.url, **options))


async def recv_json(ws: Any) -> dict[str, Any]:
    return JSON.loads(await ws.get_message())


async def recv_until(ws: Any, message_type: str) -> dict[str, Any]:
    while True:
        message = await recv_json(ws)
        if message.get("type") == message_type:
            return message


async def test_room_fan_out_membership_and_cleanup_on_drop(inbox):
    with trio.fail_after(10):
        manager = WebSocketManager(port=0)
        async with manager.serving():
            clients = [client_for(manager, client_id=f"c{n}") for n in range(3)]
            boxes = [inbox(c) for c in clients]
            async with clients[0].connect(), clients[1].connect():
                async with clients[2].connect():
                    for c in clients:
                        await c.join("lobby")
                    await c.join("other")  # a client may be in several rooms
                    assert manager.rooms == {"lobby": {"c0", "c1", "c2"}, "other": {"c2"}}
                    assert manager.client_rooms["c2"] == {"lobby", "other"}
                    assert await clients[0].members("lobby") == ["c0", "c1", "c2"]
                    for n in range(20):
                        await manager.broadcast_to_room("lobby", {"type": "tick", "n": n})
                    for box in boxes:
                        ticks = await box.wait_count("tick", 20)
                        assert [t["n"] for t in ticks] == list(range(20))
                        assert all(t["room"] == "lobby" for t in ticks)
                        seqs = [t["seq"] for t in ticks]
                        assert seqs == list(range(seqs[0], seqs[0] + 20))
                    joined = await boxes[0].wait_count("user_joined", 3)
                    assert [j["user_id"] for j in joined] == ["c0", "c1", "c2"]
                # c2 dropped: it leaves both rooms, members are told
                left = await boxes[0].wait_count("user_left", 1)
                assert left[0]["user_id"] == "c2"
                assert manager.rooms == {"lobby": {"c0", "c1"}}
                assert "c2" not in manager.client_rooms
                await clients[1].leave("lobby")
                await boxes[0].wait_count("user_left", 2)
                assert manager.rooms == {"lobby": {"c0"}}


async def test_typed_routing_direct_send_and_handler_errors(inbox):
    with trio.fail_after(10):
        manager = WebSocketManager(port=0)
        seen: list[tuple[str, Any]] = []

        @manager.on_message("echo")
        async def echo(client, message):
            seen.append((client.client_id, message["text"]))
            return {"type": "echo", "text": message["text"].upper()}

        @manager.on_message("explode")
        def explode(client, message):
            raise RuntimeError("handler bug")

        with pytest.raises(ValueError, match="control message"):
            manager.on_message("join")

        async with manager.serving():
            a, b = client_for(manager, client_id="a"), client_for(manager, client_id="b")
            box_a, box_b = inbox(a), inbox(b)
            async with a.connect(), b.connect():
                await a.send_message({"type": "echo", "text": "hi"})
                await a.send_message({"type": "explode"})
                await a.send_message({"type": "nobody-handles-this", "id": 7})
                await a.send_message({"type": "echo", "text": "still alive"})
                echoes = await box_a.wait_count("echo", 2)
                assert [e["text"] for e in echoes] == ["HI", "STILL ALIVE"]
                errors = box_a.of_type("error")
                assert [(e["code"], e.get("ref_type")) for e in errors] == [
                    ("handler_error", "explode"),
                    ("unknown_type", "nobody-handles-this"),
                ]
                assert "handler bug" in errors[0]["message"] and errors[1]["id"] == 7
                assert manager.stats.errors == {"handler_error": 1, "unknown_type": 1}
                assert seen == [("a", "hi"), ("a", "still alive")]
                # direct send: from the server, and from one client to another
                assert await manager.send_to_client("b", {"type": "note", "text": "from server"})
                await a.direct("b", {"type": "note", "text": "from a"})
                notes = await box_b.wait_count("note", 2)
                assert [(n["text"], n.get("from")) for n in notes] == [
                    ("from server", None),
                    ("from a", "a"),
                ]
                await a.direct("nobody", {"type": "note"})
                assert (await box_a.wait_count("error", 3))[-1]["code"] == "unknown_client"
                assert not await manager.send_to_client("nobody", {"type": "note"})
                with pytest.raises(UnknownClientError, match="nobody"):
                    await manager.join_room("nobody", "lobby")


async def test_publish_and_stream_to_room(inbox):
    async def market_data():
        for price in (101.5, 102.0, 99.75):
            yield {"symbol": "AAPL", "price": price}
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        manager = WebSocketManager(port=0)
        async with manager.serving():
            a, b = client_for(manager), client_for(manager)
            box_a, box_b = inbox(a), inbox(b)
            async with a.connect(), b.connect():
                await a.join("market")
                await b.join("market")
                assert await manager.stream_to_room("market", market_data()) == 3
                chunks = await box_b.wait_count("stream_chunk", 3)
                assert [c["data"]["price"] for c in chunks] == [101.5, 102.0, 99.75]
                assert all("timestamp" in c for c in chunks)
                await a.publish("market", {"type": "chat", "text": "buy"})
                chat = (await box_b.wait_count("chat", 1))[0]
                assert chat["from"] == a.client_id and chat["room"] == "market"
                await a.publish("elsewhere", {"type": "chat", "text": "x"})
                error = (await box_a.wait_count("error", 1))[0]
                assert error["code"] == "forbidden" and "join room" in error["message"]
                assert box_a.of_type("chat") == []  # no echo to the publisher by default


async def test_bad_input_gets_error_frames_and_never_hurts_other_clients(inbox):
    with trio.fail_after(10):
        manager = WebSocketManager(port=0, max_message_size=1024, close_timeout=0.2)

        @manager.on_message("echo")
        def echo(client, message):
            return message

        async with manager.serving():
            good = client_for(manager)
            good_box = inbox(good)
            async with good.connect(), open_websocket_url(manager.url) as raw:
                await recv_until(raw, "welcome")
                cases = [
                    ("{not json", "malformed"),
                    ("[1, 2, 3]", "invalid_message"),
                    ('{"no_type": 1}', "invalid_message"),
                    ('{"type": "join", "room": "bad room!"}', "invalid_room"),
                    ('{"type": "join", "room": ""}', "invalid_room"),
                    ('{"type": "mystery"}', "unknown_type"),
                    ('{"type": "publish", "room": "r", "message": 5}', "invalid_message"),
                ]
                for frame, code in cases:
                    await raw.send_message(frame)
                    reply = await recv_until(raw, "error")
                    assert reply["code"] == code, frame
                await raw.send_message('{"type": "echo", "ok": true}')
                assert (await recv_until(raw, "echo"))["ok"] is True
                # a message over max_message_size closes that connection with 1009
                await raw.send_message("x" * 5000)
                with pytest.raises(TWConnectionClosed) as closed:
                    while True:
                        await raw.get_message()
                assert closed.value.reason.code == 1009
                await good.send_message({"type": "echo", "n": 1})
                assert (await good_box.wait_count("echo", 1))[0]["n"] == 1
        errors = manager.stats.errors
        assert errors["malformed"] == 1 and errors["invalid_room"] == 2 and errors["too_big"] == 1
        assert errors["invalid_message"] == 3 and errors["unknown_type"] == 1
        with pytest.raises(InvalidRoomError):
            await manager.broadcast_to_room("no spaces", {"type": "x"})


async def test_flooding_client_is_rate_limited_then_closed(inbox):
    with trio.fail_after(10):
        manager = WebSocketManager(
            port=0, rate_limit=50, rate_burst=20, flood_close_after=200, close_timeout=0.2
        )

        @manager.on_message("echo")
        def echo(client, message):
            return message

        async with manager.serving():
            good = client_for(manager)
            good_box = inbox(good)
            async with good.connect(), open_websocket_url(manager.url) as flooder:
                started = trio.current_time()
                for n in range(500):
                    try:
                        await flooder.send_message(f'{{"type": "echo", "n": {n}}}')
                    except TWConnectionClosed:
                        break
                replies: list[dict[str, Any]] = []
                with pytest.raises(TWConnectionClosed) as closed:
                    while True:
                        replies.append(await recv_json(flooder))
                assert closed.value.reason.code == 1008
                assert any(r["type"] == "error" and r["code"] == "rate_limited" for r in replies)
                # the burst, plus what the rate refilled meanwhile (however slow this machine is)
                allowed = 20 + 50 * (trio.current_time() - started) + 1
                assert 20 <= len([r for r in replies if r["type"] == "echo"]) <= allowed
                await good.send_message({"type": "echo", "n": "fine"})
                assert (await good_box.wait_count("echo", 1))[0]["n"] == "fine"
        assert manager.stats.flood_disconnects == 1
        assert manager.stats.errors["rate_limited"] >= 200


async def test_slow_consumer_never_stalls_a_broadcast(inbox):
    payload = os.urandom(48 * 1024).hex()  # incompressible, ~96 KB per message
    for policy in ("drop_oldest", "drop_newest", "disconnect"):
        with trio.fail_after(120):  # a hang guard only: nothing here depends on speed
            manager = WebSocketManager(
                port=0, outbound_queue=8, slow_consumer=policy, compression=None
            )
            gone = trio.Event()
            manager.on_disconnect(lambda session, gone=gone: gone.set())
            async with manager.serving():
                fast = client_for(
                    manager, client_id="fast", compression=None, max_message_size="1MiB"
                )
                fast_box = inbox(fast)
                async with (
                    fast.connect(),
                    open_websocket_url(manager.url, message_queue_size=1) as slow,
                ):
                    await slow.send_message('{"type": "join", "room": "feed"}')
                    await fast.join("feed")
                    for n in range(300):
                        await manager.broadcast_to_room(
                            "feed", {"type": "blob", "n": n, "data": payload}
                        )
                        # Paced by the fast client's receipt, not by a sleep: its queue never
                        # holds more than one message, so it cannot drop however loaded the
                        # machine is. The slow client reads nothing at all, so 300 broadcasts
                        # completing at all (within fail_after) shows none waited for it.
                        await fast_box.wait_count("blob", n + 1)
                    got = fast_box.of_type("blob")
                    assert [m["n"] for m in got] == list(range(300))
                    assert manager.clients["fast"].dropped == 0
                    if policy == "disconnect":
                        await gone.wait()
                        assert manager.stats.slow_consumer_disconnects == 1
                        assert list(manager.clients) == ["fast"]
                    else:
                        slow_session = next(
                            s for s in manager.clients.values() if s.client_id != "fast"
                        )
                        assert 0 < slow_session.dropped < 300
                        assert slow_session.queued <= 8
                        # Now the slow client reads: it gets exactly what was not dropped,
                        # and which messages those are tells the two policies apart.
                        kept = 300 - slow_session.dropped
                        received: list[int] = []
                        while len(received) < kept:
                            message = await recv_json(slow)
                            if message.get("type") == "blob":
                                received.append(message["n"])
                        assert received == sorted(received)
                        if policy == "drop_oldest":  # the newest messages survive
                            assert received[-8:] == list(range(292, 300))
                        else:  # drop_newest: what was queued first survives, no later one
                            assert received == list(range(kept))


async def test_token_authentication_and_room_authorization(inbox):
    tokens = {"s3cret": {"user": "ada", "admin": True}, "guest": {"user": "bob", "admin": False}}

    async def authenticate(token):
        await trio.lowlevel.checkpoint()
        return tokens.get(token)

    def authorize_room(info, room, action):
        return not room.startswith("admin-") or info.identity["admin"]

    class DenyVault:
        """A plugin answering the haive_websocket_authorize_room hook."""

        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        from haive.dataflow import hookimpl

        @hookimpl
        def haive_websocket_authorize_room(self, client, room, action):
            self.calls.append((room, action))
            return False if room == "vault" else None

    pm = get_registry().plugin_manager
    vault = DenyVault()
    pm.register(vault, name="test-deny-vault")
    try:
        with trio.fail_after(10):
            manager = WebSocketManager(
                port=0, authenticate=authenticate, authorize_room=authorize_room
            )
            async with manager.serving():
                anonymous = client_for(manager, max_reconnect_attempts=5)
                with pytest.raises(ConnectionFailedError, match="HTTP 401"):
                    async with anonymous.connect():
                        pass
                assert [e.kind for e in anonymous.events] == ["gave_up"]  # no retry on 401
                admin = client_for(manager, token="s3cret", client_id="ada")
                guest = client_for(manager, token="guest")
                async with admin.connect(), guest.connect():
                    assert manager.clients["ada"].info.identity == {"user": "ada", "admin": True}
                    await admin.join("admin-room")
                    with pytest.raises(RoomAccessError, match="forbidden"):
                        await guest.join("admin-room")
                    with pytest.raises(RoomAccessError, match="forbidden"):
                        await admin.join("vault")
                    await guest.join("lobby")
                    assert guest.rooms == ["lobby"]
                    assert manager.rooms == {"admin-room": {"ada"}, "lobby": {guest.client_id}}
            assert (
                manager.stats.errors["unauthorized"] == 1 and manager.stats.errors["forbidden"] == 2
            )
            assert ("vault", "join") in vault.calls
    finally:
        pm.unregister(vault)


async def test_token_in_the_query_string_authenticates_like_the_header():
    """Browsers cannot set headers on a WebSocket: ``?token=`` is the other way in."""
    seen: list[str] = []

    def authenticate(token):
        seen.append(token)
        return {"user": "ada"} if token == "s3cret" else None

    with trio.fail_after(30):
        manager = WebSocketManager(port=0, authenticate=authenticate)
        async with manager.serving():
            async with open_websocket_url(manager.url + "?token=s3cret") as ws:
                await ws.send_message('{"type": "join", "room": "r"}')
                await recv_until(ws, "joined")
                (session,) = manager.clients.values()
                assert session.info.identity == {"user": "ada"}
            with pytest.raises(TWConnectionRejected) as rejected:
                async with open_websocket_url(manager.url + "?token=wrong"):
                    pass
            assert rejected.value.status_code == 401
    assert seen == ["s3cret", "wrong"]
    assert manager.stats.errors["unauthorized"] == 1


async def test_limits_on_rooms_per_client_and_client_ids():
    with trio.fail_after(10):
        manager = WebSocketManager(port=0, max_rooms_per_client=2)
        async with manager.serving():
            client = client_for(manager)
            async with client.connect():
                await client.join("a")
                await client.join("b")
                with pytest.raises(RoomAccessError, match="too_many_rooms"):
                    await client.join("c")
            bad_id = client_for(manager, client_id="../etc")
            with pytest.raises(ConnectionFailedError, match="HTTP 400"):
                async with bad_id.connect():
                    pass


async def test_same_client_id_takes_over_the_old_connection(inbox):
    with trio.fail_after(10):
        manager = WebSocketManager(port=0)
        async with manager.serving():
            first = client_for(manager, client_id="dup")
            second = client_for(manager, client_id="dup")
            gave_up = trio.Event()
            first.on_event("gave_up")(lambda event: gave_up.set())
            async with first.connect():
                await first.join("room")
                async with second.connect():
                    await second.join("room")
                    await gave_up.wait()
                    assert "replaced" in str(first.failed)
                    assert [e.kind for e in first.events][-2:] == ["replaced", "gave_up"]
                    assert manager.rooms == {"room": {"dup"}}  # the new connection stays a member
                    assert manager.clients["dup"].ws is not None
