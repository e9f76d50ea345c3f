"""websockets' trio connections, customised through its ``create_connection`` hatch.

Two changes: outgoing frames queued together are written with one ``send_all`` (one
syscall) instead of one per frame, and frames can be queued in bulk with
:func:`send_frames`. Everything else (handshake, ping/pong, close, compression) is
websockets' own.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import trio
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import BINARY, TEXT
from websockets.protocol import OPEN, SERVER, Protocol
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


def drop_compression(protocol: Protocol) -> None:
    """Free ``protocol``'s permessage-deflate compressor and decompressor now.

    A closed connection's objects are otherwise freed by the cycle collector only (the
    connection is referenced from its own tasks and callbacks), which can be long after
    the close: about 32 KB of zlib state each (12-bit windows, memLevel 5). Nothing is
    encoded or decoded once the stream is closed; should something try, it gets a fresh
    object for that message (no context takeover), never an AttributeError.
    """
    for ext in protocol.extensions:
        if isinstance(ext, PerMessageDeflate):
            ext.local_no_context_takeover = True
            ext.remote_no_context_takeover = True
            state = vars(ext)
            state.pop("encoder", None)
            state.pop("decoder", None)


def replace_assembler(connection: ServerConnection | ClientConnection) -> InboundFrames:
    """Queue ``connection``'s incoming messages in an :class:`~._inbound.InboundFrames`
    with the same high/low water marks as the websockets Assembler it replaces (called
    from the connection's ``__init__``, before any frame arrives), and return it."""
    assembler = connection.recv_messages
    inbound = InboundFrames(
        assembler.high, assembler.low, connection.pause_reading, connection.resume_reading
    )
    # Duck-typed: InboundFrames has the Assembler's interface, not its channel.
    connection.recv_messages = inbound  # type: ignore[assignment]
    return inbound


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
        self.inbound = replace_assembler(self)

    async def send_data(self) -> None:
        await _send_data(self)

    async def close_stream(self) -> None:
        try:
            await super().close_stream()
        finally:
            drop_compression(self.protocol)


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
        self.inbound = replace_assembler(self)

    async def close_stream(self) -> None:
        try:
            await super().close_stream()
        finally:
            drop_compression(self.protocol)

    async def send_data(self) -> None:
        await _send_data(self)


_TEXT_HEAD, _BINARY_HEAD = 0x80 | TEXT, 0x80 | BINARY
_RSV1 = 0x40


def frame_header(is_text: bool, length: int, compressed: bool = False) -> bytes:
    """The header of a final, unmasked frame: what a server sends (``compressed``: RSV1).

    Example::

        >>> frame_header(True, 5), frame_header(False, 300), frame_header(True, 5, True)
        (b'\\x81\\x05', b'\\x82~\\x01,', b'\\xc1\\x05')
    """
    head = _TEXT_HEAD if is_text else _BINARY_HEAD
    if compressed:
        head |= _RSV1
    if length < 126:
        return bytes((head, length))
    if length < 65536:
        return _HEAD16.pack(head, 126, length)
    return _HEAD64.pack(head, 127, length)


_HEAD16, _HEAD64 = struct.Struct("!BBH"), struct.Struct("!BBQ")


class DeflateCache:
    """Messages compressed for permessage-deflate without context takeover, by content.

    A server that answered ``server_no_context_takeover`` compresses every message on its
    own, so a message compresses to the same bytes for every connection with the same
    window bits and settings: a room broadcast is compressed once, not once per member.
    Entries are kept by content (bytes cache their hash; the members' frames are the same
    object, so a lookup is a hash and an identity check), first in first out within
    ``budget`` bytes; a message over ``largest`` bytes is compressed but not kept.

    Example::

        >>> import zlib
        >>> cache = DeflateCache(budget=1 << 20)
        >>> data = b'{"type":"tick","n":1}' * 10
        >>> deflated = cache.deflate(data, 12, (("memLevel", 5),))
        >>> cache.deflate(data, 12, (("memLevel", 5),)) is deflated  # compressed once
        True
        >>> zlib.decompressobj(wbits=-12).decompress(deflated + b"\\x00\\x00\\xff\\xff") == data
        True
    """

    def __init__(self, budget: int, largest: int = 256 * 1024) -> None:
        self.budget = budget
        self.largest = largest
        self.size = 0
        self._entries: dict[tuple[int, tuple[tuple[str, Any], ...]], dict[bytes, bytes]] = {}
        self._order: deque[tuple[dict[bytes, bytes], bytes]] = deque()

    def deflate(self, data: bytes, wbits: int, settings: tuple[tuple[str, Any], ...]) -> bytes:
        """``data`` compressed as one permessage-deflate message (what websockets sends)."""
        key = (wbits, settings)
        entries = self._entries.get(key)
        if entries is None:
            entries = self._entries[key] = {}
        found = entries.get(data)
        if found is not None:
            return found
        compressor = zlib.compressobj(wbits=-wbits, **dict(settings))
        # As websockets' PerMessageDeflate.encode: a sync flush, minus its final
        # 00 00 ff ff (RFC 7692 7.2.1).
        deflated = (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        if len(data) <= self.largest:
            entries[data] = deflated
            self._order.append((entries, data))
            self.size += len(data) + len(deflated)
            while self.size > self.budget:
                old_entries, old = self._order.popleft()
                self.size -= len(old) + len(old_entries.pop(old))
        return deflated


#: One per process: what the server's connections share (1 MiB of recent messages).
DEFLATE_CACHE = DeflateCache(budget=1 << 20)


def _shared_deflate(protocol: Protocol) -> PerMessageDeflate | None:
    # permessage-deflate as the only extension, compressing each message on its own.
    extensions = protocol.extensions
    if len(extensions) == 1:
        ext = extensions[0]
        if isinstance(ext, PerMessageDeflate) and ext.local_no_context_takeover:
            return ext
    return None


def _server_chunks(protocol: Protocol, frames: Sequence[tuple[bool, bytes]]) -> list[bytes] | None:
    """What send_text/send_binary would queue for ``frames`` on a server connection, built
    without a Frame object and its serialization per frame (a room broadcast pays this per
    member): None when that needs websockets (a client's masked frames, an extension other
    than deflate without context takeover, debug logging, a fragmented message going on).

    Without extensions the payload goes as is; with deflate without context takeover it is
    compressed once for every connection (:class:`DeflateCache`).
    """
    if protocol.side is not SERVER or protocol.debug or protocol.expect_continuation_frame:
        return None
    chunks: list[bytes] = []
    append = chunks.append
    if not protocol.extensions:
        for is_text, data in frames:
            append(frame_header(is_text, len(data)))
            if data:  # an empty chunk in writes means "end of stream"
                append(data)
        return chunks
    ext = _shared_deflate(protocol)
    if ext is None:
        return None
    wbits = ext.local_max_window_bits
    settings = tuple(ext.compress_settings.items())
    deflate = DEFLATE_CACHE.deflate
    for is_text, data in frames:
        payload = deflate(data, wbits, settings)
        append(frame_header(is_text, len(payload), True))
        if payload:
            append(payload)
    return chunks


async def send_frames(conn: Connection, frames: Sequence[tuple[bool, bytes]]) -> None:
    """Queue ``frames`` ((is_text, data) pairs) on ``conn`` and write them together.

    Raises websockets' ConnectionClosed when the connection is closing or closed.
    """
    async with conn.send_context():
        protocol = conn.protocol
        chunks = _server_chunks(protocol, frames)
        if chunks is not None:
            protocol.writes.extend(chunks)
            return
        for is_text, data in frames:
            if is_text:
                protocol.send_text(data)
            else:
                protocol.send_binary(data)


def write_now(
    conn: Connection, frames: Sequence[tuple[bool, bytes]]
) -> Sequence[tuple[bool, bytes]] | None:
    """Write ``frames`` to a server connection's socket now, without waiting: None once
    all are written; else what to pass to :func:`send_frames`, which waits.

    As ``websockets.broadcast`` writes to each transport at once: when the connection is
    open, nothing else is being written and the socket takes the bytes, a writer needs no
    send context, lock or socket wrapper. What the socket did not take is queued first in
    the protocol's writes and ``()`` returned: send_frames then writes it, in order. A
    TLS stream, a client connection or anything unusual: ``frames``, untouched.
    """
    protocol = conn.protocol
    stream = conn.stream
    if (
        protocol.state is not OPEN
        or protocol.writes
        or conn.send_lock.locked()
        or type(stream) is not trio.SocketStream
    ):
        return frames
    chunks = _server_chunks(protocol, frames)
    if chunks is None:
        return frames
    data = b"".join(chunks)
    try:
        sent = os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        sent = 0
    except OSError:
        sent = 0  # send_frames meets the error again and closes the connection
    if sent == len(data):
        return None
    protocol.writes.append(data[sent:])
    return ()


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
