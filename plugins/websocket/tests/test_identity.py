"""Client ids bound to authenticated identities, with real peers over real sockets.

An impostor (another identity asking for someone's client id) is refused with close 4003
and the owner keeps its connection, its rooms and its direct messages; the owner itself
can always reclaim its id. The impostors are trio-websocket, our own client, and the
``websockets`` asyncio client in another process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from haive_plugin_websocket import ConnectionConfig, StreamingClient, WebSocketManager
from haive_plugin_websocket.protocol import CLOSE_CLIENT_ID_FORBIDDEN, JSON
from haive_plugin_websocket.server_identity import ClientIdReservations
from trio_websocket import ConnectionClosed as TWConnectionClosed
from trio_websocket import open_websocket_url

PEER = Path(__file__).with_name("asyncio_peer.py")

TOKENS = {
    "t-ada": {"user": "ada", "team": "red"},
    "t-ada-2": {"team": "red", "user": "ada"},  # the same identity, keys in another order
    "t-bob": {"user": "bob", "team": "red"},
}


def authenticate(token: str | None) -> Any:
    return TOKENS.get(token or "")


def client_for(manager: WebSocketManager, **options: Any) -> StreamingClient:
    options.setdefault("heartbeat_interval", None)
    options.setdefault("reconnect_interval", 0.01)
    return StreamingClient(ConnectionConfig(url=manager.url, **options))


async def close_code_of(ws: Any) -> tuple[int, str]:
    """Read until the server closes ``ws`` (trio-websocket); its close code and reason."""
    with pytest.raises(TWConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason.code, closed.value.reason.reason


async def run_asyncio_peer(url: str, *args: str) -> list[dict[str, Any]]:
    result = await trio.run_process(
        [sys.executable, str(PEER), url, *args], capture_stdout=True, capture_stderr=True
    )
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


async def test_another_identity_cannot_take_a_connected_client_id(inbox):
    with trio.fail_after(30):
        manager = WebSocketManager(port=0, authenticate=authenticate, close_timeout=0.5)
        async with manager.serving():
            owner = client_for(manager, token="t-ada", client_id="ada-phone")
            owner_box = inbox(owner)
            async with owner.connect():
                await owner.join("lobby")
                owner_session = manager.clients["ada-phone"]

                # trio-websocket, bob's token, ada's id: refused with 4003, a reason
                async with open_websocket_url(
                    manager.url,
                    extra_headers=[
                        (b"Authorization", b"Bearer t-bob"),
                        (b"X-Haive-Client-Id", b"ada-phone"),
                    ],
                ) as impostor:
                    code, reason = await close_code_of(impostor)
                assert code == CLOSE_CLIENT_ID_FORBIDDEN == 4003
                assert reason == "client id 'ada-phone' belongs to another identity"

                # our own client gives up at once, saying why, without retrying
                ours = client_for(manager, token="t-bob", client_id="ada-phone")
                gave_up = trio.Event()
                ours.on_event("gave_up")(lambda event: gave_up.set())
                async with ours.connect():
                    await gave_up.wait()
                assert "refused client id 'ada-phone' (close 4003)" in str(ours.failed)
                assert "belongs to another identity" in str(ours.failed)
                assert ours.stats.connects == 1

                # the websockets asyncio client in another process
                lines = await run_asyncio_peer(
                    manager.url, "--token", "t-bob", "--client-id", "ada-phone"
                )
                assert lines[-1] == {
                    "closed": 4003,
                    "reason": "client id 'ada-phone' belongs to another identity",
                }
                assert not any("recv" in line for line in lines)  # not even a welcome

                # the owner is untouched: same connection, same rooms, gets its messages
                assert manager.clients["ada-phone"] is owner_session
                assert not owner_session.closed and owner.failed is None
                assert [e.kind for e in owner.events] == ["connected"]
                assert manager.rooms == {"lobby": {"ada-phone"}}
                assert await manager.send_to_client("ada-phone", {"type": "note", "n": 1})
                await manager.broadcast_to_room("lobby", {"type": "news", "n": 2})
                assert (await owner_box.wait_count("note", 1))[0]["n"] == 1
                assert (await owner_box.wait_count("news", 1))[0]["n"] == 2
                assert owner_box.of_type("user_joined")[-1]["user_id"] == "ada-phone"
                assert len(owner_box.of_type("user_joined")) == 1  # no impostor ever joined
        assert manager.stats.errors["client_id_forbidden"] == 3


async def test_the_owner_reclaims_its_id_and_an_impostor_waits_out_the_ttl(inbox):
    with trio.fail_after(30):
        manager = WebSocketManager(port=0, authenticate=authenticate, close_timeout=0.5)
        async with manager.serving():
            first = client_for(manager, token="t-ada", client_id="ada-phone")
            async with first.connect():
                await first.join("lobby")
                # the owner again, from a new connection (its identity's keys in another
                # order): it takes over its own id, the old connection is "replaced"
                second = client_for(manager, token="t-ada-2", client_id="ada-phone")
                second_box = inbox(second)
                gave_up = trio.Event()
                first.on_event("gave_up")(lambda event: gave_up.set())
                async with second.connect():
                    await gave_up.wait()
                    assert "replaced" in str(first.failed)
                    await second.join("lobby")
                    assert manager.clients["ada-phone"].info.identity["user"] == "ada"
                    assert await manager.send_to_client("ada-phone", {"type": "note"})
                    await second_box.wait_count("note", 1)
            # ada is gone; her id stays bound to her for client_id_ttl: bob cannot pick up
            # messages addressed to her, nor resume her rooms
            assert "ada-phone" not in manager.clients
            async with open_websocket_url(
                manager.url,
                extra_headers=[
                    (b"Authorization", b"Bearer t-bob"),
                    (b"X-Haive-Client-Id", b"ada-phone"),
                ],
            ) as impostor:
                await impostor.send_message('{"type": "join", "room": "lobby", "since": 0}')
                code, _ = await close_code_of(impostor)
            assert code == 4003
            assert not await manager.send_to_client("ada-phone", {"type": "note"})
            assert manager.rooms == {}
            # and ada reconnecting later gets her id back
            third = client_for(manager, token="t-ada", client_id="ada-phone")
            async with third.connect():
                await third.join("lobby")
                assert manager.rooms == {"lobby": {"ada-phone"}}


async def test_without_authentication_ids_are_not_bound():
    # No identities to bind to: the documented takeover semantics stay as they were.
    with trio.fail_after(15):
        manager = WebSocketManager(port=0)
        async with manager.serving():
            first = client_for(manager, client_id="dup")
            async with first.connect():
                second = client_for(manager, client_id="dup")
                async with second.connect():
                    await second.join("room")
                    assert manager.rooms == {"room": {"dup"}}
        assert manager.stats.errors["client_id_forbidden"] == 0


async def test_server_assigned_ids_are_bound_too():
    with trio.fail_after(15):
        manager = WebSocketManager(port=0, authenticate=authenticate, close_timeout=0.5)
        async with manager.serving():
            owner = client_for(manager, token="t-ada")
            async with owner.connect():
                assigned = owner.client_id
                assert assigned is not None and assigned in manager.clients
                async with open_websocket_url(
                    manager.url,
                    extra_headers=[
                        (b"Authorization", b"Bearer t-bob"),
                        (b"X-Haive-Client-Id", assigned.encode()),
                    ],
                ) as impostor:
                    assert (await close_code_of(impostor))[0] == 4003
                assert manager.clients[assigned].info.identity["user"] == "ada"


async def test_an_identity_without_a_stable_key_is_refused_loudly():
    class User:  # no __eq__, no JSON: two connections could never be told apart
        pass

    with trio.fail_after(15):
        manager = WebSocketManager(port=0, authenticate=lambda token: User(), close_timeout=0.5)
        async with manager.serving():
            async with open_websocket_url(
                manager.url, extra_headers=[(b"Authorization", b"Bearer x")]
            ) as peer:
                code, reason = await close_code_of(peer)
            assert code == 1011 and "no key" in reason
            # with identity_key= the same identities work
            keyed = WebSocketManager(
                port=0, authenticate=lambda token: User(), identity_key=lambda user: "user"
            )
            async with (
                keyed.serving(),
                open_websocket_url(
                    keyed.url, extra_headers=[(b"Authorization", b"Bearer x")]
                ) as peer,
            ):
                assert JSON.loads(await peer.get_message())["type"] == "welcome"


def test_reservations_expire_after_the_ttl_and_stay_bounded():
    reservations = ClientIdReservations(ttl=10.0)
    for n in range(100):
        reservations.release(f"c{n}", owner="ada", now=float(n))
    assert reservations.owner("c95", now=100.0) == "ada"
    assert len(reservations) == 9  # c91..c99: released less than 10 s ago
    reservations.release("c95", owner="ada", now=104.0)  # released again: kept longer
    assert reservations.owner("c95", now=113.0) == "ada"
    assert reservations.owner("c99", now=113.0) is None
    reservations.discard("c95")
    assert reservations.owner("c95", now=113.0) is None


async def test_peers_cannot_forge_protocol_messages_through_publish_or_direct(inbox):
    # A relayed message that looked like the server's own (welcome, joined, a batch, a
    # sequence number) would rewrite the receiving client's id or room positions: it would
    # adopt another id, or drop every later room message as an already seen duplicate.
    with trio.fail_after(20):
        manager = WebSocketManager(port=0, authenticate=authenticate)
        async with manager.serving():
            ada = client_for(manager, token="t-ada", client_id="ada-phone")
            ada_box = inbox(ada)
            async with (
                ada.connect(),
                open_websocket_url(
                    manager.url,
                    extra_headers=[
                        (b"Authorization", b"Bearer t-bob"),
                        (b"X-Haive-Client-Id", b"bob"),
                    ],
                ) as bob,
            ):
                await ada.join("lobby")
                await bob.send_message('{"type": "join", "room": "lobby"}')
                forged = [
                    {"type": "welcome", "client_id": "bob"},
                    {"type": "joined", "room": "lobby", "latest": 10**9, "epoch": "forged"},
                    {"type": "left", "room": "lobby"},
                    {"type": "error", "code": "forbidden", "room": "lobby", "ref_type": "join"},
                    {"type": "batch", "messages": [{"type": "welcome", "client_id": "bob"}]},
                    {"type": "user_left", "user_id": "ada-phone"},
                ]
                for n, message in enumerate(forged):
                    for request in (
                        {"type": "direct", "to": "ada-phone", "message": message, "id": n},
                        {"type": "publish", "room": "lobby", "message": message, "id": n},
                    ):
                        await bob.send_message(JSON.dumps(request).decode())
                        while True:
                            reply = JSON.loads(await bob.get_message())
                            if reply["type"] == "error" and reply.get("id") == n:
                                break
                        assert reply["code"] == "reserved_type", request
                        assert repr(message["type"]) in reply["message"]
                # an ordinary message carrying a forged sequence number is relayed without it
                for kind in ("direct", "publish"):
                    request = {
                        "type": kind,
                        "to": "ada-phone",
                        "room": "lobby",
                        "message": {"type": "note", "room": "lobby", "seq": 10**9, "via": kind},
                    }
                    await bob.send_message(JSON.dumps(request).decode())
                notes = await ada_box.wait_count("note", 2)
                assert sorted(n["via"] for n in notes) == ["direct", "publish"]
                assert all(n.get("seq", 0) < 10**9 for n in notes)
                # ada kept her id and her place in the room: the next broadcast arrives
                await manager.broadcast_to_room("lobby", {"type": "news"})
                await ada_box.wait_count("news", 1)
                assert ada.client_id == "ada-phone" and ada.rooms == ["lobby"]
                assert ada.stats.duplicates_dropped == 0
                assert len(ada_box.of_type("welcome")) == 1
        assert manager.stats.errors["reserved_type"] == 12


async def test_our_client_ignores_relayed_protocol_messages_from_any_server():
    # Defence in depth, against a server that relays anything (another implementation):
    # a protocol message carrying "from" came from a peer and changes nothing.
    import functools

    from trio_websocket import serve_websocket

    async def relaying_server(request):
        ws = await request.accept()
        await ws.send_message('{"type": "welcome", "client_id": "mine"}')
        await ws.send_message('{"type": "welcome", "client_id": "stolen", "from": "bob"}')
        await ws.send_message('{"type": "left", "room": "lobby", "from": "bob"}')
        await ws.send_message('{"type": "done"}')
        try:
            while True:
                await ws.get_message()
        except TWConnectionClosed:
            pass

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve_websocket, relaying_server, "127.0.0.1", 0, None)
            )
            client = StreamingClient(
                ConnectionConfig(url=f"ws://127.0.0.1:{server.port}/", heartbeat_interval=None)
            )
            done = trio.Event()
            client.on_message("done")(lambda message: done.set())
            await client.join("lobby", wait=False)  # remembered, joined on connect
            async with client.connect():
                await done.wait()
                assert client.client_id == "mine"
                assert client.rooms == ["lobby"]
            nursery.cancel_scope.cancel()


async def test_an_id_or_room_with_a_trailing_newline_is_not_a_lookalike():
    # "ada\n" used to pass the "^...$" check: another client id that prints like "ada".
    from trio_websocket import HandshakeError

    with trio.fail_after(15):
        manager = WebSocketManager(port=0, close_timeout=0.5)
        async with manager.serving():
            with pytest.raises(HandshakeError) as refused:
                async with open_websocket_url(f"{manager.url}?client_id=ada%0A"):
                    pass
            assert refused.value.status_code == 400
            assert manager.clients == {}
            async with open_websocket_url(manager.url) as peer:
                await peer.get_message()  # welcome
                await peer.send_message('{"type": "join", "room": "lobby\\n"}')
                reply = JSON.loads(await peer.get_message())
                assert reply["type"] == "error" and reply["code"] == "invalid_room"
            assert manager.rooms == {}
