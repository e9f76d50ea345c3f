"""permessage-deflate on a real socket: a broadcast compressed once, per-client fallback,
and a closed connection's compressor freed at once."""

from __future__ import annotations

import gc
import uuid
from typing import Any

import orjson
import trio
from haive_plugin_websocket import ConnectionConfig, StreamingClient, WebSocketManager
from haive_plugin_websocket._connections import DEFLATE_CACHE
from websockets.extensions.permessage_deflate import PerMessageDeflate


def client_for(manager: WebSocketManager, **options: Any) -> StreamingClient:
    return StreamingClient(ConnectionConfig(url=manager.url, heartbeat_interval=None, **options))


def deflate_of(ws: Any) -> PerMessageDeflate:
    (ext,) = ws.protocol.extensions
    assert isinstance(ext, PerMessageDeflate)
    return ext


async def broadcast_and_receive(
    manager: WebSocketManager, clients: list[StreamingClient], text: str
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    done = trio.Event()

    def on_note(message: dict[str, Any]) -> None:
        got.append(message)
        if len(got) == len(clients):
            done.set()

    for client in clients:
        if "note" in client.handlers:
            client.handlers.remove("note")
        client.on_message("note")(on_note)
    await manager.broadcast_to_room("r", {"type": "note", "text": text})
    await done.wait()
    return got


async def test_a_broadcast_is_compressed_once_for_every_member_and_sent_raw_to_the_others():
    with trio.fail_after(30):
        manager = WebSocketManager(port=0)
        async with manager.serving(), trio.open_nursery() as nursery:
            deflating = [client_for(manager) for _ in range(3)]
            plain = client_for(manager, compression=None)
            for client in [*deflating, plain]:
                await nursery.start(client.run)
                await client.join("r")
            for client in deflating:
                assert client.extensions == ["permessage-deflate"]
                session = manager.clients[client.client_id]
                assert deflate_of(session.ws).local_no_context_takeover  # imposed by the server
            assert plain.extensions == []

            text = f"compressible {uuid.uuid4()} " * 20
            before = DEFLATE_CACHE.size
            got = await broadcast_and_receive(manager, [*deflating, plain], text)
            assert [m["text"] for m in got] == [text] * 4
            # One compression for the three deflating members: the frame they all got, and
            # its compressed form, are in the cache once.
            grown = DEFLATE_CACHE.size - before
            frame = orjson.dumps(got[0])
            deflated = DEFLATE_CACHE.deflate(frame, 12, (("memLevel", 5),))
            assert DEFLATE_CACHE.size - before == grown  # it was cached already
            assert grown == len(frame) + len(deflated)
            assert len(deflated) < len(frame) // 4
            for client in [*deflating, plain]:
                await client.close()


async def test_with_context_takeover_each_member_gets_its_own_compressed_stream():
    with trio.fail_after(30):
        manager = WebSocketManager(port=0, deflate_context_takeover=True)
        async with manager.serving(), trio.open_nursery() as nursery:
            clients = [client_for(manager) for _ in range(2)]
            for client in clients:
                await nursery.start(client.run)
                await client.join("r")
                session = manager.clients[client.client_id]
                assert not deflate_of(session.ws).local_no_context_takeover
            before = DEFLATE_CACHE.size
            for n in range(3):  # several messages through each member's own context
                text = f"again and again {n} " * 20
                got = await broadcast_and_receive(manager, clients, text)
                assert [m["text"] for m in got] == [text, text]
            assert DEFLATE_CACHE.size == before  # websockets compressed per member
            for client in clients:
                await client.close()


async def test_a_closed_connection_frees_its_compressor_and_decompressor_without_the_gc():
    with trio.fail_after(30):
        manager = WebSocketManager(port=0, deflate_context_takeover=True)
        gone = trio.Event()
        manager.on_disconnect(lambda session: gone.set())
        async with manager.serving():
            client = client_for(manager)
            gc.disable()  # only reference counting frees anything from here
            try:
                async with client.connect():
                    await client.send_message({"type": "ping"})
                    await client.flush()
                    session = manager.clients[client.client_id]
                    server_side = deflate_of(session.ws)
                    client_side = deflate_of(client._state.ws)
                    # Context takeover both ways: each side holds both zlib objects.
                    for ext in (server_side, client_side):
                        assert {"encoder", "decoder"} <= set(vars(ext))
                    del session
                await gone.wait()  # the server saw the close
                for ext in (server_side, client_side):
                    assert not {"encoder", "decoder"} & set(vars(ext))
            finally:
                gc.enable()


async def test_frames_the_socket_did_not_take_at_once_follow_in_order():
    # 200 frames of 64 KB queued at once: the server's writer writes what the socket takes
    # without waiting, and the rest (a partial write) through websockets, in order.
    received: list[int] = []
    done = trio.Event()
    with trio.fail_after(60):
        manager = WebSocketManager(port=0, compression=None, outbound_queue=1000)
        async with manager.serving():
            client = client_for(manager, compression=None, max_message_size="1MiB")

            @client.on_message("big")
            def on_big(message: dict[str, Any]) -> None:
                assert message["pad"] == str(message["n"]) * 65536
                received.append(message["n"])
                if len(received) == 200:
                    done.set()

            async with client.connect():
                session = manager.clients[client.client_id]
                for n in range(200):
                    session.send({"type": "big", "n": n % 10, "pad": str(n % 10) * 65536})
                await done.wait()
    assert received == [n % 10 for n in range(200)]
