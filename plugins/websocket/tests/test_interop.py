"""Interoperability with independent implementations (trio-websocket, wsproto) and the
negotiated extensions: a plain peer never sees batch frames or sequence numbers."""

from __future__ import annotations

import functools
from typing import Any

import trio
from haive_plugin_websocket import ConnectionConfig, StreamingClient, WebSocketManager
from haive_plugin_websocket.protocol import FEATURES_HEADER, JSON
from trio_websocket import ConnectionClosed as TWConnectionClosed
from trio_websocket import open_websocket_url, serve_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate


def our_client(url: str, **options: Any) -> StreamingClient:
    options.setdefault("heartbeat_interval", None)
    return StreamingClient(ConnectionConfig(url=url, **options))


async def test_trio_websocket_client_against_our_server_sees_plain_frames():
    with trio.fail_after(10):
        manager = WebSocketManager(port=0)
        received: list[int] = []
        done = trio.Event()

        @manager.on_message("count")
        def count(client, message):
            received.append(message["n"])
            if len(received) == 150:
                done.set()

        async with manager.serving(), open_websocket_url(manager.url) as peer:
            welcome = JSON.loads(await peer.get_message())
            assert welcome["type"] == "welcome" and welcome["features"] == []
            await peer.send_message('{"type": "join", "room": "r"}')
            frames = [JSON.loads(await peer.get_message()) for _ in range(2)]
            assert [f["type"] for f in frames] == ["joined", "user_joined"]
            assert "seq" not in frames[1]  # sequence numbers were not negotiated
            for n in range(100):  # queued together: our clients would get one batch frame
                await manager.broadcast_to_room("r", {"type": "tick", "n": n})
            ticks = [JSON.loads(await peer.get_message()) for _ in range(100)]
            assert [t["n"] for t in ticks] == list(range(100))
            assert all(set(t) == {"type", "n", "room"} for t in ticks)
            session = next(iter(manager.clients.values()))
            assert manager.stats.frames_sent >= 102 and session.extensions == []
            # 150: within the default rate limit's burst (200 messages) with the join
            for n in range(150):
                await peer.send_message(f'{{"type": "count", "n": {n}}}')
            await done.wait()
            assert received == list(range(150))
            await peer.send_message(b"\x00raw")
            binary = trio.Event()
            manager.on_message("binary")(lambda client, message: binary.set())
            await binary.wait()


async def test_our_client_against_a_trio_websocket_server_uses_no_extensions():
    with trio.fail_after(10):
        frames: list[str | bytes] = []
        headers: list[dict[str, str]] = []

        async def echo(request):
            headers.append({k.decode().lower(): v.decode() for k, v in request.headers})
            ws = await request.accept()
            try:
                while True:
                    message = await ws.get_message()
                    frames.append(message)
                    await ws.send_message(message)
            except TWConnectionClosed:
                pass

        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve_websocket, echo, "127.0.0.1", 0, None)
            )
            client = our_client(f"ws://127.0.0.1:{server.port}/", compression="deflate")
            echoed: list[dict[str, Any]] = []
            got_all = trio.Event()

            @client.on_message("m")
            def on_m(message):
                echoed.append(message)
                if len(echoed) == 100:
                    got_all.set()

            async with client.connect():
                assert client.features == frozenset() and client.extensions == []
                for n in range(100):
                    await client.send_message({"type": "m", "n": n})
                await client.send_binary(b"\x01\x02")
                await got_all.wait()
            assert [m["n"] for m in echoed] == list(range(100))
            # The plain server got one ordinary JSON object per frame, never a batch frame.
            texts = [f for f in frames if isinstance(f, str)]
            assert len(texts) == 100 and all(JSON.loads(t)["type"] == "m" for t in texts)
            assert b"\x01\x02" in frames
            assert FEATURES_HEADER.lower() in headers[0]  # offered, but not accepted
            nursery.cancel_scope.cancel()


async def test_compression_is_negotiated_with_an_independent_peer():
    payload = "abcdefgh" * 1000
    with trio.fail_after(10):
        manager = WebSocketManager(port=0)

        @manager.on_message("echo")
        def echo(client, message):
            return message

        async with manager.serving():
            stream = await trio.open_tcp_stream("127.0.0.1", manager.port)
            conn = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(
                conn.send(
                    Request(
                        host=f"127.0.0.1:{manager.port}",
                        target="/",
                        extensions=[PerMessageDeflate()],
                    )
                )
            )
            accepted: list[Any] = []
            texts: list[str] = []
            partial = ""

            async def pump(until):
                nonlocal partial
                while not until():
                    conn.receive_data(await stream.receive_some(65536))
                    for event in conn.events():
                        if isinstance(event, AcceptConnection):
                            accepted.append(event)
                        elif isinstance(event, TextMessage):
                            partial += event.data
                            if event.message_finished:
                                texts.append(partial)
                                partial = ""

            await pump(lambda: accepted and texts)  # accepted, then the welcome
            assert [type(e).__name__ for e in accepted[0].extensions] == ["PerMessageDeflate"]
            wire = conn.send(TextMessage(data=f'{{"type": "echo", "text": "{payload}"}}'))
            assert len(wire) < len(payload) / 10  # compressed on the wire
            await stream.send_all(wire)
            await pump(lambda: len(texts) == 2)
            assert JSON.loads(texts[1])["text"] == payload
            assert next(iter(manager.clients.values())).extensions == ["permessage-deflate"]
            await stream.send_all(conn.send(CloseConnection(code=1000)))
            await stream.aclose()

            compressed, plain = our_client(manager.url), our_client(manager.url, compression=None)
            async with compressed.connect(), plain.connect():
                assert compressed.extensions == ["permessage-deflate"]
                assert plain.extensions == []


async def test_batching_msgpack_and_binary_between_our_peers(inbox):
    with trio.fail_after(10):
        manager = WebSocketManager(port=0)
        blobs: list[Any] = []
        done = trio.Event()

        @manager.on_message("blob")
        def blob(client, message):
            blobs.append(message["data"])
            return {"type": "blob", "data": message["data"][::-1]}

        @manager.on_message("binary")
        def binary(client, message):
            blobs.append(message["data"])
            client.send_binary(message["data"] + b"!")
            done.set()

        async with manager.serving():
            client = our_client(manager.url, serializer="msgpack")
            box = inbox(client)
            async with client.connect():
                assert client.features == {"batch", "recovery", "msgpack"}
                await client.send_message({"type": "blob", "data": b"\x00\xff"})
                await client.send_binary(b"raw")
                await done.wait()
                replies = await box.wait_count("blob", 1)
                assert replies[0]["data"] == b"\xff\x00"
                assert (await box.wait_count("binary", 1))[0]["data"] == b"raw!"
                assert blobs == [b"\x00\xff", b"raw"]
                await client.join("r")
                for n in range(500):
                    await manager.broadcast_to_room("r", {"type": "tick", "n": n})
                ticks = await box.wait_count("tick", 500)
                assert [t["n"] for t in ticks] == list(range(500))
            # Coalescing: far fewer frames than messages went to our client.
            assert manager.stats.frames_sent * 5 < manager.stats.messages_sent

            json_client = our_client(manager.url)
            json_box = inbox(json_client)
            done = trio.Event()
            async with json_client.connect():
                await json_client.send_binary(b"abc")
                await done.wait()
                assert (await json_box.wait_count("binary", 1))[0]["data"] == b"abc!"
