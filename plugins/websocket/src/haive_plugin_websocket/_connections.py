"""websockets' trio connections, customised through its ``create_connection`` hatch.

Two changes: outgoing frames queued together are written with one ``send_all`` (one
syscall) instead of one per frame, and frames can be queued in bulk with
:func:`send_frames`. Everything else (handshake, ping/pong, close, compression) is
websockets' own.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import trio
from websockets.frames import BINARY, TEXT
from websockets.protocol import SERVER
from websockets.trio.client import ClientConnection
from websockets.trio.connection import Connection
from websockets.trio.server import ServerConnection

from ._inbound import InboundFrames
from ._receive import install as install_lean_receive


async def _send_data(conn: Connection) -> None:
    async with conn.send_lock:
        chunks = conn.protocol.data_to_send()
        pending: list[bytes] = []
        for data in chunks:
            if data:
                pending.append(data)
                continue
            if pending:
                await conn.stream.send_all(b"".join(pending) if len(pending) > 1 else pending[0])
                pending = []
            # An empty chunk asks for the end of the stream (after the closing handshake).
            _arm_close_deadline(conn)
            if isinstance(conn.stream, trio.abc.HalfCloseableStream):
                try:
                    await conn.stream.send_eof()
                except Exception:  # the peer may already be gone; closing is the goal
                    pass
            else:  # pragma: no cover - TLS streams cannot half-close
                await conn.stream.aclose()
        if pending:
            await conn.stream.send_all(b"".join(pending) if len(pending) > 1 else pending[0])


def _arm_close_deadline(conn: Connection) -> None:
    # websockets enforces close_timeout only while someone sends. After it half-closes the
    # TCP connection (e.g. having failed it for an oversize message), a peer that never
    # closes its side would hold the connection, and its handler, forever.
    if conn.close_timeout is not None and not getattr(conn, "_haive_close_armed", False):
        conn._haive_close_armed = True  # type: ignore[attr-defined]
        conn.nursery.start_soon(_close_after_timeout, conn, conn.close_timeout)


async def _close_after_timeout(conn: Connection, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await conn.stream_closed.wait()
        return
    conn.set_connection_exc(
        TimeoutError("timed out waiting for the peer to close the TCP connection")
    )
    await conn.close_stream()


class HaiveServerConnection(ServerConnection):
    """A server connection that writes queued frames in one syscall; carries our state.

    Its incoming frames queue in an :class:`~._inbound.InboundFrames` (websockets' trio
    ``Assembler`` without a memory channel), which saves about 1.7 KB per idle connection
    and lets the reader wait for a message two calls deep (:attr:`inbound`); a plain
    socket stream reads with :class:`~._receive.LeanReceive`, which waits for data
    shallowly (about 2 KB less per idle connection).
    """

    haive: Any = None

    def __init__(
        self, nursery: trio.Nursery, stream: trio.abc.Stream, *args: Any, **kwargs: Any
    ) -> None:
        install_lean_receive(stream)
        super().__init__(nursery, stream, *args, **kwargs)
        assembler = self.recv_messages
        self.inbound = InboundFrames(
            assembler.high, assembler.low, self.pause_reading, self.resume_reading
        )
        # Duck-typed: InboundFrames has the Assembler's interface, not its channel.
        self.recv_messages = self.inbound  # type: ignore[assignment]

    async def send_data(self) -> None:
        await _send_data(self)


class HaiveClientConnection(ClientConnection):
    """A client connection that writes queued frames in one syscall.

    Its incoming frames queue in an :class:`~._inbound.InboundFrames`, as a server
    connection's do: the client's reader takes every message that arrived together
    (:meth:`~._inbound.InboundFrames.get_nowait`) instead of a memory channel's receive,
    with its task switch, per message.
    """

    def __init__(
        self, nursery: trio.Nursery, stream: trio.abc.Stream, *args: Any, **kwargs: Any
    ) -> None:
        install_lean_receive(stream)
        super().__init__(nursery, stream, *args, **kwargs)
        assembler = self.recv_messages
        self.inbound = InboundFrames(
            assembler.high, assembler.low, self.pause_reading, self.resume_reading
        )
        self.recv_messages = self.inbound  # type: ignore[assignment]

    async def send_data(self) -> None:
        await _send_data(self)


_TEXT_HEAD, _BINARY_HEAD = 0x80 | TEXT, 0x80 | BINARY


def frame_header(is_text: bool, length: int) -> bytes:
    """The header of a final, unmasked, uncompressed frame: what a server sends.

    Example::

        >>> frame_header(True, 5), frame_header(False, 300)
        (b'\\x81\\x05', b'\\x82~\\x01,')
    """
    head = _TEXT_HEAD if is_text else _BINARY_HEAD
    if length < 126:
        return bytes((head, length))
    if length < 65536:
        return _HEAD16.pack(head, 126, length)
    return _HEAD64.pack(head, 127, length)


_HEAD16, _HEAD64 = struct.Struct("!BBH"), struct.Struct("!BBQ")


async def send_frames(conn: Connection, frames: Sequence[tuple[bool, bytes]]) -> None:
    """Queue ``frames`` ((is_text, data) pairs) on ``conn`` and write them together.

    Raises websockets' ConnectionClosed when the connection is closing or closed.
    """
    async with conn.send_context():
        protocol = conn.protocol
        if (
            protocol.side is SERVER
            and not protocol.extensions
            and not protocol.debug
            and not protocol.expect_continuation_frame
        ):
            # What send_text/send_binary would queue, without a Frame object and its
            # serialization per frame: a server's frames are unmasked, and without
            # extensions the payload goes as is. A room broadcast pays this per member.
            writes = protocol.writes
            for is_text, data in frames:
                writes.append(frame_header(is_text, len(data)))
                if data:  # an empty chunk in writes means "end of stream"
                    writes.append(data)
            return
        for is_text, data in frames:
            if is_text:
                protocol.send_text(data)
            else:
                protocol.send_binary(data)


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    if len(group.exceptions) != 1:
        return None
    only = group.exceptions[0]
    return _single(only) if isinstance(only, BaseExceptionGroup) else only


@contextmanager
def unwrap_single_error() -> Iterator[None]:
    """Re-raise the one exception of a group from a nursery that is an implementation detail.

    ``async with client.connect():`` and ``manager.serving()`` run a nursery around the
    caller's block; without this a ``ValueError`` raised in the block would come out as an
    ``ExceptionGroup``. Several concurrent errors still come out as a group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        single = _single(group)
        if single is None:
            raise
        raise single from single.__cause__
