"""Follow a Redis primary change (Sentinel, or a replica promoted by hand) without losing acks.

:class:`FailoverClient` is a :class:`~haive_plugin_redis.client.RedisClient` whose
connections go to whichever server is the primary *now*, as a locator says:

* :class:`SentinelLocator`: ask Redis Sentinel (``SENTINEL get-master-addr-by-name``
  through redis-py's :class:`redis.sentinel.Sentinel`).
* :class:`RoleLocator`: ask each known server its ``ROLE``; the one answering ``master``
  is the primary (for a replica promoted by hand with ``REPLICAOF NO ONE``). Two servers
  both claiming to be primary is ambiguous: clients wait until the operator stops or
  demotes the old one.

When a command fails because the primary went away (connection refused or reset, timeout,
``READONLY`` from a demoted primary, ``LOADING``), the client locates the primary again,
with backoff, for up to ``failover_timeout``, and sends the command again there. Sources,
sinks and state take it as ``client=``; nothing else changes.

**What is not lost.** Replication is asynchronous: a write the old primary acknowledged
but had not yet sent to a replica is gone after the replica is promoted. With
``wait_replicas=N`` every round trip of :meth:`FailoverClient.send` (the stream source's
``XREADGROUP``/``XACK``, the sink's ``XADD`` batches, counter updates) ends with ``WAIT N``
on the same connection: the call returns only once N replicas hold everything that
connection wrote, and ``WAIT`` covers every write the server executed before it, so when a
pipeline's ``XACK`` returns, its outputs and state are on the replicas too. A write that a
failover interrupted before ``WAIT`` confirmed it is sent again to the new primary (at
least once: it may then exist twice). Calls through :meth:`FailoverClient.call` (redis-py
methods: ``RedisStateBackend.put``...) are retried the same way but not followed by
``WAIT``; the next ``send`` of the pipeline covers them.

An at-least-once :class:`~haive_plugin_redis.streams.RedisStreamSource` on this client
goes on after a failover: entries it had read but not acknowledged are either delivered
again (the promoted replica had not seen their delivery) or still pending for it, and
claimed back after ``claim_idle``. Exactly-once sources fail on a failover instead of
retrying (an interrupted ``EXEC`` is in doubt); restart the worker: its epoch is replayed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import attrs
import redis
import trio
from redis.backoff import NoBackoff
from redis.exceptions import ReadOnlyError, RedisError
from redis.retry import Retry

from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.runtime.units import Duration, parse_duration

from ._resp import Arg, pack
from .client import RedisClient, roundtrip

T = TypeVar("T")
Address = tuple[str, int]

log = logging.getLogger("haive.redis.failover")


class NoPrimaryError(redis.exceptions.ConnectionError):
    """No primary can be located right now (the client keeps looking until its timeout)."""


class FailoverError(HaiveError):
    """No primary was found within ``failover_timeout``; the message says what was seen."""


class ReplicationTimeoutError(HaiveError):
    """A write reached the primary but not ``wait_replicas`` replicas in time.

    The write may still replicate later; it was not acknowledged, so the caller may retry.
    """


class _NotReplicated(redis.exceptions.ConnectionError):
    """WAIT fell short and the primary moved meanwhile: send the writes again."""


_FAILOVER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ReadOnlyError)


def parse_address(value: str | Address, default_port: int = 6379) -> Address:
    """``"host:port"``, ``"redis://host:port"`` or ``(host, port)`` as ``(host, port)``.

    Example::

        >>> parse_address("redis://127.0.0.1:6380/0"), parse_address("h:26379"), parse_address(("h", 1))
        (('127.0.0.1', 6380), ('h', 26379), ('h', 1))
    """
    if isinstance(value, tuple) and len(value) == 2:
        host, port = value
        if isinstance(host, str) and isinstance(port, int) and not isinstance(port, bool):
            return host, port
    if isinstance(value, str) and value:
        parts = urlsplit(value if "://" in value else f"redis://{value}")
        try:
            port = parts.port or default_port
        except ValueError:
            port = -1
        if parts.hostname and 0 < port < 65536:
            return parts.hostname, port
    raise ConfigError(f"expected an address like 'host:port' or ('host', port), got {value!r}")


class PrimaryLocator(Protocol):
    """Finds the current primary; ``locate`` blocks (it runs in a worker thread)."""

    def locate(self) -> Address:
        """The primary's address, or raise :class:`NoPrimaryError` saying what was seen."""
        ...

    def describe(self) -> str:
        """A short description for messages and ``repr``."""
        ...


class RoleLocator:
    """The primary among known servers: the one whose ``ROLE`` is ``master``.

    Use it when a replica is promoted by hand (``REPLICAOF NO ONE``), no Sentinel.

    Example::

        >>> RoleLocator(["127.0.0.1:6379"]).locate()
        ('127.0.0.1', 6379)
        >>> RoleLocator(["127.0.0.1:1"], socket_timeout=0.2).locate()
        Traceback (most recent call last):
        ...
        haive_plugin_redis.failover.NoPrimaryError: no primary among 127.0.0.1:1: 127.0.0.1:1 unreachable (ConnectionError)
    """

    def __init__(
        self,
        addresses: Sequence[str | Address],
        *,
        socket_timeout: float = 0.5,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if isinstance(addresses, str) or not addresses:
            raise ConfigError(f"RoleLocator: give a list of server addresses, got {addresses!r}")
        self.addresses = [parse_address(a) for a in addresses]
        self.socket_timeout = socket_timeout
        self.username = username
        self.password = password

    def describe(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.addresses)

    def __repr__(self) -> str:
        return f"RoleLocator([{self.describe()}])"

    def locate(self) -> Address:
        primaries: list[Address] = []
        seen: list[str] = []
        for host, port in self.addresses:
            name = f"{host}:{port}"
            try:
                with redis.Redis(
                    host,
                    port,
                    username=self.username,
                    password=self.password,
                    socket_timeout=self.socket_timeout,
                    socket_connect_timeout=self.socket_timeout,
                    retry=_no_retry(),  # redis-py's default retries a dead server for seconds
                ) as probe:
                    role = probe.execute_command("ROLE")
            except RedisError as exc:
                seen.append(f"{name} unreachable ({type(exc).__name__})")
                continue
            kind = _text(role[0])
            if kind == "master":
                primaries.append((host, port))
                seen.append(f"{name} primary")
            elif kind == "slave":
                seen.append(f"{name} replica of {_text(role[1])}:{role[2]} ({_text(role[3])})")
            else:
                seen.append(f"{name} {kind}")
        if len(primaries) == 1:
            return primaries[0]
        if not primaries:
            raise NoPrimaryError(f"no primary among {self.describe()}: {'; '.join(seen)}")
        raise NoPrimaryError(
            f"{len(primaries)} servers claim to be primary ({'; '.join(seen)}): stop or demote "
            "the old primary (REPLICAOF host port) so clients know which one to follow"
        )


class SentinelLocator:
    """The primary of ``service`` as Redis Sentinel reports it.

    Example::

        >>> SentinelLocator(["127.0.0.1:26379"], "mymaster")
        SentinelLocator([127.0.0.1:26379], 'mymaster')
    """

    def __init__(
        self,
        sentinels: Sequence[str | Address],
        service: str,
        *,
        socket_timeout: float = 0.5,
        sentinel_password: str | None = None,
    ) -> None:
        if isinstance(sentinels, str) or not sentinels:
            raise ConfigError(
                f"SentinelLocator: give a list of sentinel addresses, got {sentinels!r}"
            )
        if not isinstance(service, str) or not service:
            raise ConfigError(f"SentinelLocator: service must be a non-empty name, got {service!r}")
        self.sentinels = [parse_address(a, 26379) for a in sentinels]
        self.service = service
        from redis.sentinel import Sentinel

        sentinel_kwargs: dict[str, Any] = {"socket_timeout": socket_timeout, "retry": _no_retry()}
        if sentinel_password is not None:
            sentinel_kwargs["password"] = sentinel_password
        self._sentinel = Sentinel(
            self.sentinels,
            sentinel_kwargs=sentinel_kwargs,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=_no_retry(),
        )

    def describe(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.sentinels)

    def __repr__(self) -> str:
        return f"SentinelLocator([{self.describe()}], {self.service!r})"

    def locate(self) -> Address:
        from redis.sentinel import MasterNotFoundError

        try:
            host, port = self._sentinel.discover_master(self.service)
        except MasterNotFoundError as exc:
            raise NoPrimaryError(
                f"no sentinel of {self.describe()} reports a healthy primary for "
                f"{self.service!r}: {exc}"
            ) from exc
        return str(host), int(port)


def _no_retry() -> Retry:
    """No redis-py retries: the locator's caller retries with its own backoff and deadline."""
    return Retry(NoBackoff(), 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Primary:
    """The located primary, shared by the connections of one client (thread-safe)."""

    def __init__(self, locator: PrimaryLocator) -> None:
        self.locator = locator
        self._address: Address | None = None
        #: The last primary located (kept while none can be located, to notice a change).
        self.last: Address | None = None
        self._lock = threading.Lock()

    @property
    def known(self) -> Address | None:
        return self._address

    def address(self) -> Address:
        """The primary (located now if unknown). Blocking."""
        with self._lock:
            if self._address is None:
                self._address = self.last = self.locator.locate()
            return self._address

    def relocate(self) -> tuple[Address | None, Address]:
        """Locate again; (the primary located before, the current one). Blocking."""
        with self._lock:
            previous = self.last
            self._address = None
            self._address = self.last = self.locator.locate()
            return previous, self._address


class FailoverConnection(redis.Connection):
    """A redis-py connection that connects to the located primary (not a fixed host)."""

    def __init__(self, *, primary: _Primary, **kwargs: Any) -> None:
        self.primary = primary
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]  # unannotated in redis-py

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self._sock:
            return
        self.host, self.port = self.primary.address()
        super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )


@attrs.define
class FailoverStats:
    """Counters of one :class:`FailoverClient`.

    Example::

        >>> FailoverStats().failovers
        0
    """

    #: The primary changed (a new address was located).
    failovers: int = 0
    #: Commands sent again after a connection to the primary failed.
    retries: int = 0
    #: Extra WAITs because replicas had not confirmed the writes yet.
    replication_waits: int = 0


class FailoverClient(RedisClient):
    """A :class:`RedisClient` that follows the primary (see the module docs).

    ``wait_replicas``: writes are acknowledged only once that many replicas hold them
    (``WAIT``, ``wait_timeout`` per wait; :class:`ReplicationTimeoutError` after
    ``failover_timeout`` without enough replicas). ``failover_timeout``: how long to look
    for a primary before :class:`FailoverError`. Connection options (``db``, ``password``,
    ``socket_timeout``...) are redis-py's.

    Example::

        >>> async def main():
        ...     client = FailoverClient.replicas(["127.0.0.1:6379"])
        ...     try:
        ...         return await client.send(pack("PING"), 1), client.primary
        ...     finally:
        ...         client.close()
        >>> trio.run(main)
        ([b'PONG'], ('127.0.0.1', 6379))
    """

    def __init__(
        self,
        locator: PrimaryLocator,
        *,
        db: int = 0,
        pool_size: int = 8,
        wait_replicas: int = 0,
        wait_timeout: Duration = "500ms",
        failover_timeout: Duration = "30s",
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float = 1.0,
        **options: Any,
    ) -> None:
        if not hasattr(locator, "locate"):
            raise ConfigError(f"FailoverClient: locator must have locate(), got {locator!r}")
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
            raise ConfigError(f"pool_size must be an int >= 1, got {pool_size!r}")
        if (
            isinstance(wait_replicas, bool)
            or not isinstance(wait_replicas, int)
            or wait_replicas < 0
        ):
            raise ConfigError(f"wait_replicas must be an int >= 0, got {wait_replicas!r}")
        self.locator = locator
        self.db = db
        self.pool_size = pool_size
        self.wait_replicas = wait_replicas
        self.wait_timeout = parse_duration(wait_timeout, what="wait_timeout")
        self.failover_timeout = parse_duration(failover_timeout, what="failover_timeout")
        self.stats = FailoverStats()
        self._primary = _Primary(locator)
        self.pool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
            connection_class=FailoverConnection,
            max_connections=pool_size,
            timeout=None,
            primary=self._primary,
            db=db,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            retry=_no_retry(),  # this client retries, after locating the primary again
            **options,
        )
        self.redis = redis.Redis(connection_pool=self.pool)
        self.limiter = trio.CapacityLimiter(pool_size)
        # `send` holds a connection across several thread calls (a write, then WAITs): at
        # most pool_size holders, so taking a connection never blocks a thread.
        self._holders = trio.Semaphore(pool_size)
        self._send_threads = trio.CapacityLimiter(pool_size)
        self._relocating = trio.Lock()
        self._wait_command = pack("WAIT", wait_replicas, max(1, round(self.wait_timeout * 1000)))

    @classmethod
    def sentinel(
        cls,
        sentinels: Sequence[str | Address],
        service: str,
        *,
        sentinel_password: str | None = None,
        **options: Any,
    ) -> FailoverClient:
        """Follow the primary that Redis Sentinel reports for ``service``."""
        return cls(
            SentinelLocator(sentinels, service, sentinel_password=sentinel_password), **options
        )

    @classmethod
    def replicas(cls, addresses: Sequence[str | Address], **options: Any) -> FailoverClient:
        """Follow whichever of ``addresses`` is the primary (``ROLE``), for manual promotion."""
        locator = RoleLocator(
            addresses, username=options.get("username"), password=options.get("password")
        )
        return cls(locator, **options)

    @property
    def primary(self) -> Address | None:
        """The primary the client is connected to (None before the first command)."""
        return self._primary.known

    @property
    def url(self) -> str:
        """``redis://host:port/db`` of the current primary (of the first candidate before)."""
        known = self._primary.known
        if known is None and isinstance(self.locator, RoleLocator):
            known = self.locator.addresses[0]
        if known is None:
            return f"redis://unresolved/{self.db}"
        return f"redis://{known[0]}:{known[1]}/{self.db}"

    @url.setter
    def url(self, value: str) -> None:
        raise AttributeError("FailoverClient.url follows the primary; it cannot be set")

    def __repr__(self) -> str:
        return (
            f"FailoverClient({self.locator!r}, primary={self.primary}, "
            f"wait_replicas={self.wait_replicas})"
        )

    # -- the two ways in --------------------------------------------------------------------
    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        retry = _Retry()
        while True:
            try:
                return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
            except self.retry_errors as exc:
                await self._recover(exc, retry)

    async def send(self, packed: bytes, replies: int) -> list[Any]:
        retry = _Retry()
        while True:
            try:
                async with self._holders:
                    return await self._send_durable(packed, replies)
            except self.retry_errors as exc:
                await self._recover(exc, retry)

    async def command(self, *args: Arg) -> Any:
        """One command through :meth:`send` (its failover retries; not auto-pipelined)."""
        (reply,) = await self.send(pack(*args), 1)
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
        return reply

    # -- internals ------------------------------------------------------------------------------
    #: Errors after which the command is sent again to the primary located anew.
    retry_errors: tuple[type[BaseException], ...] = _FAILOVER_ERRORS

    def _check_replies(self, conn: redis.Connection, replies: list[Any]) -> None:
        """Raise (one of ``retry_errors``) when the replies say the server is not the primary."""
        _raise_if_demoted(conn, replies)

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._send_threads)

    async def _send_durable(self, packed: bytes, replies: int) -> list[Any]:
        conn = await self._thread(self.pool.get_connection)
        try:
            if not self.wait_replicas:
                out = await self._thread(roundtrip, conn, packed, replies)
                self._check_replies(conn, out)
                return out
            out = await self._thread(roundtrip, conn, packed + self._wait_command, replies + 1)
            self._check_replies(conn, out)
            acked = out.pop()
            deadline = trio.current_time() + self.failover_timeout
            while not isinstance(acked, int) or acked < self.wait_replicas:
                if isinstance(acked, Exception):
                    raise HaiveError(f"WAIT failed: {acked}")
                # The writes are on the primary, not yet on enough replicas: has it moved?
                located = await self._thread(_try_locate, self.locator)
                if located != (conn.host, conn.port):
                    raise _NotReplicated(
                        f"{acked} of {self.wait_replicas} replicas confirmed and the primary "
                        f"is now {located or 'unknown'}: sending again"
                    )
                if trio.current_time() > deadline:
                    raise ReplicationTimeoutError(
                        f"written on the primary {conn.host}:{conn.port} but only {acked} of "
                        f"{self.wait_replicas} replicas confirmed within "
                        f"{self.failover_timeout:g} s; not acknowledged"
                    )
                self.stats.replication_waits += 1
                acked = (await self._thread(roundtrip, conn, self._wait_command, 1))[0]
            return out
        finally:
            self.pool.release(conn)  # type: ignore[no-untyped-call]

    async def _recover(self, error: BaseException, retry: _Retry) -> None:
        """Wait (backing off), then locate the primary again; FailoverError past the deadline."""
        if retry.deadline is None:
            retry.deadline = trio.current_time() + self.failover_timeout
        self.stats.retries += 1
        while True:
            if retry.attempts:
                now = trio.current_time()
                if now >= retry.deadline:
                    raise FailoverError(
                        f"no Redis primary within {self.failover_timeout:g} s after "
                        f"{type(error).__name__}: {error}; last seen: {retry.last or error}"
                    ) from error
                await trio.sleep(min(retry.delay, retry.deadline - now))
                retry.delay = min(retry.delay * 2, 0.25)
            retry.attempts += 1
            async with self._relocating:
                try:
                    previous, current = await trio.to_thread.run_sync(self._primary.relocate)
                except NoPrimaryError as exc:
                    retry.last = exc
                    continue
            if previous is not None and current != previous:
                self.stats.failovers += 1
                log.warning(
                    "Redis primary moved from %s:%s to %s:%s (%s)",
                    *previous,
                    *current,
                    type(error).__name__,
                )
                # Connections to the old primary must not be reused.
                await trio.to_thread.run_sync(self.pool.disconnect)
            return


@attrs.define
class _Retry:
    """Retry state of one command: its deadline, attempts and backoff."""

    deadline: float | None = None
    attempts: int = 0
    delay: float = 0.02
    last: BaseException | None = None


def _try_locate(locator: PrimaryLocator) -> Address | None:
    try:
        return locator.locate()
    except NoPrimaryError:
        return None


def _raise_if_demoted(conn: redis.Connection, replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, ReadOnlyError):
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise reply
