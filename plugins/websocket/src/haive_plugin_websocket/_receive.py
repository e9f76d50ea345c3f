"""A socket stream's ``receive_some`` that waits for data two calls deep.

Every idle connection has websockets' reading task suspended in ``stream.receive_some()``.
trio's ``SocketStream.receive_some`` waits nine calls deep (the stream, an error-translating
context manager, the socket's method, its non-blocking helper and its ``_try_sync``
context, then the I/O manager), about 2 KB per connection while nothing arrives.
:class:`LeanReceive` does what it does (one non-blocking ``recv``; if that would
block, wait until the socket is readable and try again; the same checkpoints and the same
errors) and waits in ``trio.lowlevel.wait_readable`` directly.
"""

from __future__ import annotations

import errno
import os

import trio

#: trio's ``SocketStream`` reads up to this many bytes when not told.
RECEIVE_SIZE = 65536
#: What trio's ``SocketStream`` reports as ClosedResourceError (EBADF: closed; ENOTSOCK).
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


class LeanReceive:
    """``receive_some`` for one plain (not TLS) socket stream's socket, waiting shallowly.

    Holds the socket, not the stream, so that installing it makes no reference cycle.

    Example::

        >>> import trio
        >>> async def main():
        ...     left, right = trio.socket.socketpair()
        ...     a, b = trio.SocketStream(left), trio.SocketStream(right)
        ...     receive = LeanReceive(b.socket)
        ...     await a.send_all(b"hi")
        ...     print(await receive())
        ...     await a.aclose()
        ...     print(await receive())
        >>> trio.run(main)
        b'hi'
        b''
    """

    __slots__ = ("_sock",)

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock

    async def __call__(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        sock = self._sock
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            try:
                # The fd is looked up every time: a closed socket's is -1 (EBADF), never
                # a number reused by another socket.
                data = os.read(sock.fileno(), max_bytes)
            except BlockingIOError:
                pass  # wait below, not here: the exception and its traceback would wait too
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError("this socket was already closed") from None
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
            else:
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            await trio.lowlevel.wait_readable(sock)
            waited = True


def install(stream: trio.abc.Stream) -> None:
    """Give a plain socket stream a :class:`LeanReceive` (TLS streams keep their own)."""
    if os.name == "posix" and isinstance(stream, trio.SocketStream):
        # An instance attribute, so that the stream stays a trio SocketStream for everything
        # else (its type, socket, send side and closing are untouched).
        stream.receive_some = LeanReceive(stream.socket)  # type: ignore[method-assign]


__all__ = ["RECEIVE_SIZE", "LeanReceive", "install"]
