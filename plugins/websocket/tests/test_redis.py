"""Scale-out: two servers in one process share rooms over the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio
from haive_plugin_websocket import (
    ConnectionConfig,
    RedisBackplane,
    StreamingClient,
    WebSocketManager,
)

pytestmark = pytest.mark.redis


@pytest.fixture
async def prefix():
    name = f"test:haive-ws:{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        await RedisBackplane(prefix=name).purge()


def client(url: str, **options: Any) -> StreamingClient:
    options.setdefault("heartbeat_interval", None)
    options.setdefault("reconnect_interval", 0.02)
    return StreamingClient(ConnectionConfig(url=url, **options))


async def test_two_servers_share_rooms_members_and_direct_messages(prefix, inbox):
    with trio.fail_after(15):
        a = WebSocketManager(port=0, backplane=RedisBackplane(prefix=prefix))
        b = WebSocketManager(port=0, backplane=RedisBackplane(prefix=prefix))
        left: list[str] = []
        both_left = trio.Event()

        def on_disconnect(session):
            left.append(session.client_id)
            if len(left) == 2:
                both_left.set()

        a.on_disconnect(on_disconnect)
        b.on_disconnect(on_disconnect)
        async with a.serving(), b.serving():
            assert a.epoch == b.epoch  # one sequence space for the whole cluster
            ca, cb = client(a.url, client_id="ca"), client(b.url, client_id="cb")
            box_a, box_b = inbox(ca), inbox(cb)
            async with ca.connect(), cb.connect():
                await ca.join("r")
                await cb.join("r")
                assert await a.members("r") == ["ca", "cb"] == await cb.members("r")
                assert a.rooms == {"r": {"ca"}} and b.rooms == {"r": {"cb"}}
                for n in range(50):
                    await a.broadcast_to_room("r", {"type": "tick", "n": n})
                ticks_a = await box_a.wait_count("tick", 50)
                ticks_b = await box_b.wait_count("tick", 50)
                assert [t["n"] for t in ticks_b] == list(range(50))
                assert [t["seq"] for t in ticks_a] == [
                    t["seq"] for t in ticks_b
                ]  # same order, same numbers
                await cb.publish("r", {"type": "chat", "text": "from b"})
                assert (await box_a.wait_count("chat", 1))[0]["from"] == "cb"
                await ca.direct("cb", {"type": "note", "text": "a->b"})
                assert (await box_b.wait_count("note", 1))[0]["from"] == "ca"
                assert await a.send_to_client("cb", {"type": "note", "text": "server a"})
                assert not await a.send_to_client("nobody", {"type": "note"})
                await box_b.wait_count("note", 2)
                await a.broadcast_to_room("r", b"\x00binary")
                assert (await box_b.wait_count("binary", 1))[0]["data"] == b"\x00binary"
            await both_left.wait()  # both clients left: membership is gone from Redis too
            assert await a.members("r") == []


async def test_a_client_failing_over_to_another_node_resumes_its_rooms(prefix, inbox):
    with trio.fail_after(15):
        a = WebSocketManager(port=0, backplane=RedisBackplane(prefix=prefix))
        b = WebSocketManager(port=0, backplane=RedisBackplane(prefix=prefix))
        gone = trio.Event()
        b.on_disconnect(lambda session: gone.set())
        async with a.serving(), b.serving():
            ports = [b.port, a.port, a.port]  # what a load balancer would hand out

            async def open_stream() -> trio.abc.Stream:
                return await trio.open_tcp_stream("127.0.0.1", ports.pop(0))

            roaming = StreamingClient(
                ConnectionConfig(
                    url=b.url, client_id="roamer", heartbeat_interval=None, reconnect_interval=0.02
                ),
                open_stream=open_stream,
            )
            box = inbox(roaming)
            back = trio.Event()
            roaming.on_event("reconnected")(lambda event: back.set())
            async with roaming.connect():
                await roaming.join("r")
                await a.broadcast_to_room("r", {"type": "tick", "n": 0})
                await box.wait_count("tick", 1)
                await b.disconnect("roamer", 1012, "node draining")
                await gone.wait()
                for n in range(1, 11):  # published while the client moves from b to a
                    await a.broadcast_to_room("r", {"type": "tick", "n": n})
                await back.wait()
                ticks = await box.wait_count("tick", 11)
                assert [t["n"] for t in ticks] == list(range(11))
                assert box.of_type("gap") == []
                assert a.rooms == {"r": {"roamer"}} and b.rooms == {}


async def test_a_client_id_is_bound_to_its_identity_on_every_node(prefix, inbox):
    from trio_websocket import ConnectionClosed as TWConnectionClosed
    from trio_websocket import open_websocket_url

    tokens = {"t-ada": "ada", "t-bob": "bob"}

    def authenticate(token):
        return tokens.get(token)

    async def impostor_close_code(url: str) -> int:
        headers = [(b"Authorization", b"Bearer t-bob"), (b"X-Haive-Client-Id", b"ada-phone")]
        async with open_websocket_url(url, extra_headers=headers) as ws:
            with pytest.raises(TWConnectionClosed) as closed:
                while True:
                    await ws.get_message()
        return closed.value.reason.code

    with trio.fail_after(30):
        a = WebSocketManager(
            port=0, authenticate=authenticate, backplane=RedisBackplane(prefix=prefix)
        )
        b = WebSocketManager(
            port=0, authenticate=authenticate, backplane=RedisBackplane(prefix=prefix)
        )
        async with a.serving(), b.serving():
            owner = client(a.url, token="t-ada", client_id="ada-phone")
            friend = client(b.url, token="t-bob", client_id="bob-laptop")
            owner_box = inbox(owner)
            async with owner.connect(), friend.connect():
                await owner.join("r")
                await friend.join("r")
                # bob asks node b for ada's id while she is connected to node a
                assert await impostor_close_code(b.url) == 4003
                assert "ada-phone" not in b.clients
                assert await b.members("r") == ["ada-phone", "bob-laptop"]
                # messages for ada still reach ada, from either node and from bob
                assert await b.send_to_client("ada-phone", {"type": "note", "n": 1})
                await friend.direct("ada-phone", {"type": "note", "n": 2})
                await b.broadcast_to_room("r", {"type": "news"})
                notes = await owner_box.wait_count("note", 2)
                assert sorted(n["n"] for n in notes) == [1, 2]
                await owner_box.wait_count("news", 1)
                assert [e.kind for e in owner.events] == ["connected"]
            # ada left: her id stays hers on every node for client_id_ttl
            assert await impostor_close_code(a.url) == 4003
            assert await impostor_close_code(b.url) == 4003
            # and she gets it back on the other node
            again = client(b.url, token="t-ada", client_id="ada-phone")
            async with again.connect():
                await again.join("r")
                assert await a.members("r") == ["ada-phone"]
        assert a.stats.errors["client_id_forbidden"] == 1
        assert b.stats.errors["client_id_forbidden"] == 2
