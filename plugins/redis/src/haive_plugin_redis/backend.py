"""RedisStateBackend: the ``redis://`` state backend behind ``StateStore``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import redis
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from haive.dataflow.errors import ConfigError, InvalidMessageError
from haive.dataflow.state.backend import StateBackend, StateWrite

from ._resp import pack
from .client import DEFAULT_URL, RedisClient, check_url
from .cluster import RedisClusterClient, is_cluster_url

T = TypeVar("T")

_SCAN_CHUNK = 1000
#: A node-local call on Redis Cluster is retried this often (every 50 ms) while its slot moves.
_CLUSTER_ATTEMPTS = 100
_REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)
_GLOB_SPECIAL = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


def glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped (for ``SCAN MATCH prefix*``).

    Example::

        >>> glob_escape("a*b[1]")
        'a\\\\*b\\\\[1\\\\]'
    """
    return text.translate(_GLOB_SPECIAL)


def ttl_ms(ttl: float | None) -> int | None:
    """A TTL in seconds as Redis milliseconds (at least 1); ``None`` means no expiry."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ConfigError(f"ttl must be a number of seconds, got {ttl!r}")
    return max(1, round(ttl * 1000))


class RedisStateBackend(StateBackend):
    """Keyed state in Redis: plain string keys under ``prefix``, TTLs as ``PX``.

    ``get``/``put``/``delete`` are auto-pipelined on one server (:meth:`RedisClient.command`:
    concurrent callers share round trips; a lone call goes out at once); the other calls
    run redis-py in ``trio.to_thread`` on a bounded pool. ``update`` is an
    optimistic WATCH/MULTI/EXEC transaction retried on conflict; ``write_batch`` is one
    MULTI/EXEC; ``scan`` and ``delete_prefix`` iterate with ``SCAN`` (never ``KEYS``).
    ``redis+cluster://host:port`` (one node; the others are discovered) uses redis-py's
    ``RedisCluster`` for keys in any slot: ``get_many``/``scan``/``delete_prefix`` span
    every node, ``update`` is WATCH/MULTI/EXEC on the key's node, ``write_batch`` is one
    MULTI/EXEC per hash slot (put a hash tag in the prefix, ``prefix="{orders}:"``, to
    make a whole batch atomic); a moved slot is looked up again and the call retried. ``incr``/``incr_many`` add to integer values (what ``StateStore``
    writes for ints) without a read, so concurrent workers never conflict on counters.

    ``StateStore("redis://127.0.0.1:6379/0")`` builds one through :meth:`from_url`.

    Example::

        >>> import trio, uuid
        >>> async def main():
        ...     backend = RedisStateBackend(prefix=f"doc-{uuid.uuid4().hex}:")
        ...     await backend.open()
        ...     try:
        ...         await backend.put("user:1", b"ada", ttl=60)
        ...         await backend.update("hits", lambda old: b"%d" % (int(old or 0) + 1))
        ...         await backend.incr("hits", 10)
        ...         return await backend.scan(""), await backend.delete_prefix("")
        ...     finally:
        ...         await backend.aclose()
        >>> trio.run(main)
        ([('hits', b'11'), ('user:1', b'ada')], 2)
    """

    PLUGIN_NAME = "redis"
    URL_SCHEMES = ("redis", "rediss", "redis+cluster")

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = "",
        pool_size: int = 16,
        client: RedisClient | RedisClusterClient | None = None,
    ) -> None:
        if not isinstance(prefix, str):
            raise ConfigError(f"RedisStateBackend: prefix must be a string, got {prefix!r}")
        self.prefix = prefix
        self._owns_client = client is None
        self.client: RedisClient | RedisClusterClient
        if client is not None:
            self.client = client
        elif is_cluster_url(url):
            self.client = RedisClusterClient(url, pool_size=pool_size)
        else:
            self.client = RedisClient(check_url(url), pool_size=pool_size)
        self.url = self.client.url
        #: redis-py's RedisCluster (keys in any slot) rather than one server.
        self.cluster = isinstance(self.client, RedisClusterClient)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStateBackend:
        """``redis://host:port/db``, ``rediss://`` (TLS) or ``redis+cluster://host:port``."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"RedisStateBackend({self.url!r}, prefix={self.prefix!r})"

    async def open(self) -> None:
        await self.client.call(self.client.redis.ping)

    async def aclose(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- the interface --------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        if isinstance(self.client, RedisClusterClient):
            return _raw(await self.client.call(self.client.redis.get, self.prefix + key))
        return _raw(await self.client.command("GET", self.prefix + key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        prefix = self.prefix
        values: list[bytes | None] = await self.client.call(
            self._mget, [prefix + key for key in keys]
        )
        return values

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        data, px = _bytes(value, key), ttl_ms(ttl)
        if isinstance(self.client, RedisClusterClient):
            await self.client.call(self._put, self.prefix + key, data, px)
        elif px is None:
            await self.client.command("SET", self.prefix + key, data)
        else:
            await self.client.command("SET", self.prefix + key, data, "PX", px)

    def _put(self, key: str, value: bytes, px: int | None) -> None:
        self.client.redis.set(key, value, px=px)

    async def delete(self, key: str) -> bool:
        if isinstance(self.client, RedisClusterClient):
            return bool(await self.client.call(self.client.redis.delete, self.prefix + key))
        return bool(await self.client.command("DEL", self.prefix + key))

    async def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        return await self.client.call(self._scan, self.prefix + prefix)

    def _scan_keys(self, full_prefix: str) -> list[bytes]:
        match = glob_escape(full_prefix) + "*"
        return sorted(set(self.client.redis.scan_iter(match=match, count=_SCAN_CHUNK)))

    def _scan(self, full_prefix: str) -> list[tuple[str, bytes]]:
        keys = self._scan_keys(full_prefix)
        cut = len(self.prefix)
        out: list[tuple[str, bytes]] = []
        for start in range(0, len(keys), _SCAN_CHUNK):
            chunk = keys[start : start + _SCAN_CHUNK]
            for key, value in zip(chunk, self._mget(chunk), strict=True):
                if value is not None:  # expired or deleted since SCAN saw it
                    out.append((key.decode()[cut:], value))
        return out

    async def update(
        self,
        key: str,
        fn: Callable[[bytes | None], bytes | None],
        *,
        ttl: float | None = None,
    ) -> bytes | None:
        return await self.client.call(self._update, self.prefix + key, fn, ttl_ms(ttl))

    def _mget(self, keys: Sequence[str | bytes]) -> list[bytes | None]:
        if isinstance(self.client, RedisClusterClient):
            found: list[bytes | str | None] = self.client.redis.mget_nonatomic(keys)
        else:
            found = self.client.redis.mget(keys)
        return cast("list[bytes | None]", found)  # (bytes: see _raw)

    def _on_node(self, key: str, fn: Callable[[redis.Redis], T]) -> T:
        """``fn(client of the node serving key)``; a single server is its own node.

        On Redis Cluster a moved or migrating slot refreshes the topology and retries.
        """
        if not isinstance(self.client, RedisClusterClient):
            return fn(self.client.redis)
        cluster = self.client.redis
        for attempt in range(_CLUSTER_ATTEMPTS):
            node = cluster.get_redis_connection(cluster.get_node_from_key(key))  # type: ignore[no-untyped-call]
            try:
                return fn(node)
            except (*_REDIRECTS, redis.ConnectionError):
                if attempt == _CLUSTER_ATTEMPTS - 1:
                    raise
                time.sleep(0.05)  # in a worker thread: the slot is moving or a node failing over
                cluster.nodes_manager.initialize()
        raise AssertionError("unreachable")

    def _update(
        self, key: str, fn: Callable[[bytes | None], bytes | None], px: int | None
    ) -> bytes | None:
        return self._on_node(key, lambda node: self._update_on(node, key, fn, px))

    def _update_on(
        self,
        node: redis.Redis,
        key: str,
        fn: Callable[[bytes | None], bytes | None],
        px: int | None,
    ) -> bytes | None:
        with node.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    new = fn(_raw(pipe.get(key)))
                    pipe.multi()
                    if new is None:
                        pipe.delete(key)
                    else:
                        pipe.set(key, _bytes(new, key), px=px)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue  # another client changed the key: read it again

    async def write_batch(self, writes: Sequence[StateWrite]) -> None:
        if writes:
            await self.client.call(self._write_batch, list(writes))

    def _write_batch(self, writes: list[StateWrite]) -> None:
        if not isinstance(self.client, RedisClusterClient):
            self._write_all(self.client.redis, writes)
            return
        by_slot: dict[int, list[StateWrite]] = {}
        for write in writes:
            by_slot.setdefault(key_slot((self.prefix + write[0]).encode()), []).append(write)
        for group in by_slot.values():
            self._on_node(
                self.prefix + group[0][0], functools.partial(self._write_all, writes=group)
            )

    def _write_all(self, node: redis.Redis, writes: list[StateWrite]) -> None:
        prefix = self.prefix
        with node.pipeline(transaction=True) as pipe:
            for key, value, ttl in writes:
                if value is None:
                    pipe.delete(prefix + key)
                else:
                    pipe.set(prefix + key, _bytes(value, key), px=ttl_ms(ttl))
            pipe.execute()

    async def delete_prefix(self, prefix: str) -> int:
        return await self.client.call(self._delete_prefix, self.prefix + prefix)

    def _delete_prefix(self, full_prefix: str) -> int:
        keys = self._scan_keys(full_prefix)
        removed = 0
        for start in range(0, len(keys), _SCAN_CHUNK):
            removed += int(self.client.redis.unlink(*keys[start : start + _SCAN_CHUNK]))
        return removed

    # -- counters -------------------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer at ``key`` (absent counts as 0); the new value."""
        values = await self.incr_many({key: amount}, ttl=ttl)
        return values[0]

    async def incr_many(self, amounts: Mapping[str, int], *, ttl: float | None = None) -> list[int]:
        """``incr`` for several keys in one round trip; the new values in order."""
        if not amounts:
            return []
        for key, amount in amounts.items():
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise ConfigError(f"incr {key!r}: amount must be an int, got {amount!r}")
        px = ttl_ms(ttl)
        prefix = self.prefix
        if isinstance(self.client, RedisClusterClient):
            values = await self.client.call(self._incr_cluster, dict(amounts), px)
            return _counters(amounts, values)
        commands = []
        for key, amount in amounts.items():
            commands.append(pack("INCRBY", prefix + key, amount))
            if px is not None:
                commands.append(pack("PEXPIRE", prefix + key, px))
        replies = await self.client.send(b"".join(commands), len(commands))
        return _counters(amounts, replies[:: 1 if px is None else 2])

    def _incr_cluster(self, amounts: dict[str, int], px: int | None) -> list[Any]:
        assert isinstance(self.client, RedisClusterClient)
        with self.client.redis.pipeline() as pipe:  # type: ignore[no-untyped-call]  # routed per key, not a transaction
            for key, amount in amounts.items():
                pipe.incrby(self.prefix + key, amount)
                if px is not None:
                    pipe.pexpire(self.prefix + key, px)
            replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies[:: 1 if px is None else 2]

    async def add(self, key: str, amount: int = 1, *, ttl: float | None = None) -> None:
        """``incr`` without the result (the same call as on exactly-once state)."""
        await self.incr_many({key: amount}, ttl=ttl)

    async def add_many(self, amounts: Mapping[str, int], *, ttl: float | None = None) -> None:
        """``incr_many`` without the results."""
        await self.incr_many(amounts, ttl=ttl)


def _counters(amounts: Mapping[str, int], values: list[Any]) -> list[int]:
    for key, value in zip(amounts, values, strict=True):
        if isinstance(value, ResponseError):
            raise InvalidMessageError(f"state key {key!r} does not hold an integer: {value}")
    return [int(value) for value in values]


def _bytes(value: object, key: str) -> bytes:
    if isinstance(value, bytes):
        return value
    raise ConfigError(
        f"state value of {key!r} must be bytes (StateStore encodes typed values), "
        f"got {type(value).__name__}"
    )


def _raw(value: bytes | str | None) -> bytes | None:
    """A reply as this backend's clients give it (they never decode responses: bytes);
    redis-py types replies as ``bytes | str`` because a client may decode them."""
    return cast("bytes | None", value)
