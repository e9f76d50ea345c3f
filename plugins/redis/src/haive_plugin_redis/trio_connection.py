"""Round trips on redis-py connections driven by trio itself, without a worker thread.

:meth:`RedisClient.send <haive_plugin_redis.client.RedisClient.send>` used to run every
round trip in ``trio.to_thread``: a thread hand-off both ways, and the GIL passed between
the thread parsing replies and trio (about a fifth of a stream worker's CPU, three round
trips per batch). Here redis-py only *opens* a connection (in a thread, once: connect,
``HELLO``/``AUTH``/``SELECT``, whatever its options say); its socket is then handed to
trio and its hiredis reader parses the replies, so a round trip is one ``send_all`` and
as many ``receive_some`` as the replies need, in the trio thread.

Only plain TCP and Unix sockets with the hiredis parser qualify (a TLS socket is a blocking
``SSLSocket``): otherwise the client keeps its threads. A round trip is never cancelled
halfway (it runs shielded, like the thread it replaces, so the connection stays in sync);
redis-py's ``socket_timeout`` applies to each write and read; a broken or timed out
connection is closed and the error raised as redis-py's ``ConnectionError`` /
``TimeoutError``.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import redis
import trio
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser

#: Bytes asked of the socket per read (a batch of 500 entries is about 40 KB).
_READ_SIZE = 256 * 1024


def _mock_clock() -> bool:
    """Whether this run's clock is trio.testing's MockClock (without importing trio.testing,
    which pulls in pytest: a MockClock can only exist once a test imported it)."""
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)



def raise_connection_error(reply: Any) -> None:
    """Raise the :class:`redis.ConnectionError` hiredis parsed as ``reply`` (or as the first
    element of an EXEC's reply): LOADING and the like, after which the connection is not
    usable, as redis-py raises it. Other replies, error replies included, pass.

    Example::

        >>> raise_connection_error([b"OK"])
        >>> raise_connection_error(redis.BusyLoadingError("LOADING"))
        Traceback (most recent call last):
        ...
        redis.exceptions.BusyLoadingError: LOADING
    """
    if isinstance(reply, redis.ConnectionError):
        raise reply
    if isinstance(reply, list) and reply and isinstance(reply[0], redis.ConnectionError):
        raise reply[0]

class TrioConnection:
    """One connected redis-py connection whose socket trio reads and writes.

    Example::

        >>> from haive_plugin_redis._resp import pack
        >>> async def main():
        ...     conn = redis.Connection(host="127.0.0.1", port=6379)
        ...     await trio.to_thread.run_sync(conn.connect)
        ...     native = TrioConnection.adopt(conn)
        ...     try:
        ...         return await native.roundtrip(pack("PING") + pack("ECHO", "x"), 2)
        ...     finally:
        ...         native.close()
        >>> trio.run(main)
        [b'PONG', b'x']
    """

    __slots__ = ("_push_type", "_reader", "_sock", "_stream", "_timeout", "broken", "generation")

    def __init__(
        self, sock: socket.socket, parser: _HiredisParser, timeout: float | None, generation: int
    ) -> None:
        self._sock = sock
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        # The parser's own reader: what redis-py set up (error classes, decoding).
        self._reader = parser._reader
        self._push_type = parser._hiredis_PushNotificationType
        #: redis-py's ``socket_timeout`` (5 s by default), per write and per read.
        self._timeout = timeout
        self.broken = False
        self.generation = generation

    @classmethod
    def adopt(cls, conn: redis.Connection, generation: int = 0) -> TrioConnection | None:
        """Take over ``conn``'s socket (connected), or None when it does not qualify."""
        sock = getattr(conn, "_sock", None)
        parser = getattr(conn, "_parser", None)
        if (
            type(sock) is not socket.socket  # an SSLSocket: TLS stays in redis-py's hands
            or not isinstance(parser, _HiredisParser)
            or parser._reader is None
            or parser._reader.has_data()
        ):
            return None
        # The socket is trio's from now on: redis-py must not read or close it.
        conn._sock = None
        return cls(sock, parser, conn.socket_timeout, generation)

    async def roundtrip(self, packed: bytes, replies: int) -> list[Any]:
        """Write ``packed`` and read ``replies`` replies (error replies in the list)."""
        try:
            with trio.CancelScope(shield=True):
                timeout = self._timeout
                if timeout is not None and _mock_clock():
                    # socket_timeout is wall-clock time; a test's MockClock jumps to the
                    # next deadline whenever every task waits (as on a socket): no limit.
                    timeout = None
                out = await self._roundtrip(packed, replies, timeout)
        except trio.TooSlowError as exc:
            self.close()
            raise redis.TimeoutError("Timeout reading from Redis") from exc
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.close()
            raise redis.ConnectionError(f"Error while talking to Redis: {exc!r}") from exc
        except BaseException:
            self.close()
            raise
        return out

    async def _roundtrip(self, packed: bytes, replies: int, limit: float | None) -> list[Any]:
        stream = self._stream
        reader = self._reader
        push_type = self._push_type
        if limit is None:
            await stream.send_all(packed)
        else:
            with trio.fail_after(limit):
                await stream.send_all(packed)
        out: list[Any] = []
        append = out.append
        gets = reader.gets
        while len(out) < replies:
            reply = gets()
            if reply is NOT_ENOUGH_DATA:
                if limit is None:
                    data = await stream.receive_some(_READ_SIZE)
                else:
                    with trio.fail_after(limit):
                        data = await stream.receive_some(_READ_SIZE)
                if not data:
                    raise redis.ConnectionError("Connection closed by server.")
                reader.feed(data)
                continue
            if push_type is not None and isinstance(reply, push_type):
                # A push message (client tracking, a managed service's maintenance notice):
                # not a reply to our commands. redis-py's handlers need the connection
                # object this socket left; a notice that a node moves is followed by the
                # server closing the connection, which the next round trip reports.
                continue
            raise_connection_error(reply)
            append(reply)
        return out

    def close(self) -> None:
        """Close the socket (also outside ``trio.run``)."""
        self.broken = True
        try:
            trio.lowlevel.notify_closing(self._sock)
        except RuntimeError:
            pass  # not inside trio.run: nobody can be waiting on it
        self._sock.close()


class TrioConnections:
    """Idle :class:`TrioConnection`\\ s of one redis-py pool's server, opened on demand.

    The caller bounds how many are in use (the client's limiter); at most that many are
    kept idle. :meth:`close` closes the idle ones and makes those in use close when given
    back, so the client stays usable (new ones are opened), like redis-py's pool after
    ``disconnect()``. ``usable`` turns False when a connection does not qualify (TLS, no
    hiredis): the client then keeps its worker threads.

    Example::

        >>> from haive_plugin_redis._resp import pack
        >>> async def main():
        ...     pool = redis.ConnectionPool(host="127.0.0.1", port=6379)
        ...     conns = TrioConnections(pool)
        ...     conn = await conns.take()
        ...     replies = await conn.roundtrip(pack("PING"), 1)
        ...     conns.give_back(conn)
        ...     conns.close()
        ...     return replies, conns.usable
        >>> trio.run(main)
        ([b'PONG'], True)
    """

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._idle: list[TrioConnection] = []
        self._generation = 0
        self.usable = not issubclass(pool.connection_class, redis.SSLConnection)

    async def take(self) -> TrioConnection | None:
        """An idle connection, or a new one (None when connections do not qualify)."""
        if self._idle:
            return self._idle.pop()
        pool = self._pool
        conn = pool.connection_class(**pool.connection_kwargs)
        await trio.to_thread.run_sync(conn.connect)
        native = TrioConnection.adopt(conn, self._generation)
        if native is None:
            self.usable = False
            conn.disconnect()
        return native

    def give_back(self, conn: TrioConnection) -> None:
        """Keep ``conn`` for the next round trip (unless it broke or the pool was closed)."""
        if conn.broken:
            return
        if conn.generation != self._generation:
            conn.close()
            return
        self._idle.append(conn)

    def close(self) -> None:
        """Close the idle connections; those in use are closed when given back."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
