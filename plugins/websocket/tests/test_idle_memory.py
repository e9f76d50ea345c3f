"""What an idle server connection keeps, and that the leaner pieces behave like websockets'.

``InboundFrames`` replaces websockets' trio ``Assembler`` on server connections: every
scripted sequence below runs against both and must give the same messages, errors and
pause/resume calls. ``LeanReceive`` replaces trio's ``SocketStream.receive_some`` on plain
sockets: the same data, end of stream and errors, on real socket pairs.
"""

from __future__ import annotations

import random
import socket
import struct
from typing import Any

import pytest
import trio
import trio.testing
from haive_plugin_websocket import ConnectionConfig, StreamingClient, WebSocketManager
from haive_plugin_websocket._inbound import InboundFrames
from haive_plugin_websocket._receive import LeanReceive
from websockets.exceptions import ConcurrencyError, TooManyFragments
from websockets.frames import BINARY, CONT, TEXT, Frame
from websockets.trio.messages import Assembler

# -- InboundFrames against websockets' Assembler ------------------------------------------


def _pair(high: int | None = 4) -> list[tuple[Any, list[str]]]:
    made = []
    for cls in (Assembler, InboundFrames):
        log: list[str] = []
        made.append(
            (
                cls(
                    high,
                    None,
                    lambda log=log: log.append("pause"),
                    lambda log=log: log.append("resume"),
                ),
                log,
            )
        )
    return made


def _frames(rng: random.Random) -> list[Frame]:
    kind = rng.choice([TEXT, BINARY])
    parts = rng.randint(1, 3)
    out = []
    for i in range(parts):
        data = (
            "é✓x".encode()[: rng.randint(0, 6)] if kind is TEXT else bytes([i] * rng.randint(0, 3))
        )
        out.append(Frame(kind if i == 0 else CONT, data, fin=i == parts - 1))
    return out


async def _run_script(assembler: Any, log: list[str], seed: int) -> list[Any]:
    rng = random.Random(seed)
    seen: list[Any] = []
    queued = 0
    for _ in range(40):
        action = rng.random()
        if action < 0.5:
            for frame in _frames(rng):
                assembler.put(frame)
            queued += 1
        elif queued:
            decode = rng.choice([None, True, False])
            try:
                if rng.random() < 0.7:
                    seen.append(await assembler.get(decode))
                else:
                    seen.append([part async for part in assembler.get_iter(decode)])
            except UnicodeDecodeError as exc:
                seen.append(("UnicodeDecodeError", exc.reason))
            except ConcurrencyError:
                # After a decoding error in get_iter, websockets' stream is stuck: so is ours.
                seen.append("ConcurrencyError")
            queued -= 1
        seen.append(list(log))
    assembler.close()
    while True:
        try:
            seen.append(await assembler.get())
        except EOFError as exc:
            seen.append(("EOFError", str(exc)))
            break
        except UnicodeDecodeError as exc:
            seen.append(("UnicodeDecodeError", exc.reason))
        except ConcurrencyError:
            seen.append("ConcurrencyError")
            break
    with pytest.raises(EOFError):
        assembler.put(Frame(TEXT, b"late"))
    return seen


@pytest.mark.parametrize("seed", range(30))
async def test_inbound_frames_give_what_websockets_assembler_gives(seed: int) -> None:
    (ref, ref_log), (ours, our_log) = _pair(high=rng_high(seed))
    assert await _run_script(ours, our_log, seed) == await _run_script(ref, ref_log, seed)


def rng_high(seed: int) -> int | None:
    return [None, 0, 1, 4, 16][seed % 5]


async def test_a_cancelled_get_puts_the_fragments_back() -> None:
    for cls in (Assembler, InboundFrames):
        frames = cls(16)
        frames.put(Frame(TEXT, b"hel", fin=False))
        with trio.move_on_after(0.01):
            await frames.get()  # waits for the rest: cancelled
        frames.put(Frame(CONT, b"lo"))
        assert await frames.get() == "hello", cls


async def test_a_waiting_get_is_woken_by_put_and_by_close() -> None:
    frames = InboundFrames(16)
    got: list[Any] = []

    async def getter() -> None:
        got.append(await frames.get())
        try:
            await frames.get()
        except EOFError:
            got.append("eof")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(getter)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ConcurrencyError):
            await frames.get()
        frames.put(Frame(BINARY, b"\x01"))
        await trio.testing.wait_all_tasks_blocked()
        frames.close()
    assert got == [b"\x01", "eof"]


async def test_wait_returns_once_a_frame_is_queued_and_takes_nothing() -> None:
    frames = InboundFrames(16)
    woke = trio.Event()

    async def waiter() -> None:
        await frames.wait()
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set() and frames._frames is None  # idle: no deque
        frames.put(Frame(TEXT, b"hi"))
    assert woke.is_set()
    await frames.wait()  # at once: still queued
    assert await frames.get() == "hi"
    assert frames._frames is None  # drained: the deque is gone again
    with trio.move_on_after(0.01) as scope:
        await frames.wait()
    assert scope.cancelled_caught


async def test_too_many_fragments_is_refused_like_websockets(monkeypatch: Any) -> None:
    import haive_plugin_websocket._inbound as inbound

    monkeypatch.setattr(inbound, "MAX_FRAGMENTS", 3)
    frames = InboundFrames(None)
    for i in range(5):
        frames.put(Frame(TEXT if i == 0 else CONT, b"x", fin=i == 4))
    with pytest.raises(TooManyFragments):
        await frames.get()


def test_water_marks_are_checked_like_websockets() -> None:
    with pytest.raises(ValueError, match="low must be positive"):
        InboundFrames(None, -1)
    with pytest.raises(ValueError, match="high must be greater"):
        InboundFrames(1, 2)
    assert (InboundFrames(None, 3).high, InboundFrames(16).low) == (12, 4)


# -- LeanReceive against trio's SocketStream.receive_some -----------------------------------


async def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    left, right = trio.socket.socketpair()
    return trio.SocketStream(left), trio.SocketStream(right)


async def test_lean_receive_reads_data_waits_and_sees_the_end() -> None:
    a, b = await _socket_pair()
    receive = LeanReceive(b.socket)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await receive())  # waits: nothing sent yet
        got.append(await receive(2))
        got.append(await receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await a.send_all(b"hello")
        await trio.testing.wait_all_tasks_blocked()
        await a.send_all(b"xyz")
        await a.aclose()
    assert got[0] == b"hello" and b"".join(got[1:]) == b"xyz"
    assert await receive() == b""
    with pytest.raises(ValueError, match="max_bytes must be >= 1"):
        await receive(0)
    await b.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await receive()


async def test_lean_receive_reports_a_reset_like_trio() -> None:
    results = []
    for lean in (False, True):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
        # SO_LINGER 0: closing sends a reset, the reader sees ECONNRESET.
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await client.aclose()
        await trio.sleep(0.05)
        receive = LeanReceive(server.socket) if lean else server.receive_some
        with pytest.raises(trio.BrokenResourceError) as info:
            await receive()
        results.append(str(info.value))
        await server.aclose()
        await listener.aclose()
    assert results[0] == results[1]


async def test_lean_receive_waiting_is_cancellable() -> None:
    a, b = await _socket_pair()
    receive = LeanReceive(b.socket)
    with trio.move_on_after(0.01) as scope:
        await receive()
    assert scope.cancelled_caught
    await a.send_all(b"after")
    assert await receive() == b"after"
    await a.aclose()
    await b.aclose()


# -- the server's idle connection ----------------------------------------------------------


async def test_an_idle_server_connection_keeps_no_queue_and_forgets_its_headers() -> None:
    seen: dict[str, Any] = {}
    manager = WebSocketManager(port=0)
    registered = trio.Event()

    @manager.on_connect
    def connected(session: Any) -> None:
        seen["agent"] = session.ws.request.headers.get("User-Agent")
        registered.set()

    async with manager.serving():
        client = StreamingClient(ConnectionConfig(url=manager.url, client_id="ada"))
        async with client.connect():
            await registered.wait()  # the server registers it after the handshake
            ws = manager.clients["ada"].ws
            assert isinstance(ws.recv_messages, InboundFrames)
            assert ws.inbound._frames is None
            assert isinstance(ws.stream.receive_some, LeanReceive)
            assert isinstance(ws.stream, trio.SocketStream)
            assert ws.request_rcvd.is_set()
            assert len(ws.request.headers) == 0 and ws.request.headers.get("User-Agent") is None
            with pytest.raises(TypeError, match="keep_handshake_headers=True"):
                ws.request.headers["X-Late"] = "1"
            copy = ws.response.headers.copy()
            copy["X-Mine"] = "ok"  # a copy is writable
            assert ws.remote_address[0] == "127.0.0.1"
    assert seen["agent"]  # readable in on_connect


async def test_keep_handshake_headers_keeps_them() -> None:
    manager = WebSocketManager(port=0, keep_handshake_headers=True)
    registered = trio.Event()
    manager.on_connect(lambda session: registered.set())
    async with manager.serving():
        client = StreamingClient(ConnectionConfig(url=manager.url, client_id="ada"))
        async with client.connect():
            await registered.wait()  # the server registers it after the handshake
            ws = manager.clients["ada"].ws
            assert ws.request.headers.get("User-Agent")
            ws.request.headers["X-Late"] = "1"
