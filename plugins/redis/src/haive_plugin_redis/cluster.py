"""Redis Cluster: ``redis+cluster://host:port`` URLs for streams and state.

* Streams (source, sink, exactly-once): every key one source or sink touches carries the
  input stream's hash tag, so they all live in one hash slot. A :class:`ClusterClient` is a
  :class:`~haive_plugin_redis.failover.FailoverClient` whose "primary" is the master that
  owns that slot, located with ``CLUSTER SLOTS`` (:class:`SlotLocator`). A ``MOVED``,
  ``ASK``, ``TRYAGAIN`` or ``CLUSTERDOWN`` reply, or a lost connection, makes it look the
  slot up again (with backoff, up to ``failover_timeout``) and send the command again:
  the single-node client's hand-packed pipelines run unchanged on the owning node.
* State (:class:`~haive_plugin_redis.backend.RedisStateBackend` on arbitrary keys):
  :class:`RedisClusterClient` wraps redis-py's :class:`redis.cluster.RedisCluster`.

The URL names one node of the cluster (``redis+cluster://127.0.0.1:7000``); the others are
discovered from it. The database is always 0 (Redis Cluster has no other).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import trio
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisError,
    TryAgainError,
)

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration, parse_duration

from ._resp import pack
from .client import DedicatedConnection, RedisClient
from .failover import (
    _FAILOVER_ERRORS,
    Address,
    FailoverClient,
    NoPrimaryError,
    _no_retry,
    _raise_if_demoted,
    _Retry,
    _text,
    parse_address,
)

T = TypeVar("T")

CLUSTER_SCHEME = "redis+cluster"

#: Replies that mean "this node does not serve the slot (now)": locate it again, resend.
_REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)
_MULTI = pack("MULTI")


def is_cluster_url(url: object) -> bool:
    """True for a ``redis+cluster://`` URL.

    Example::

        >>> is_cluster_url("redis+cluster://127.0.0.1:7000"), is_cluster_url("redis://x")
        (True, False)
    """
    return isinstance(url, str) and urlsplit(url).scheme == CLUSTER_SCHEME


def cluster_seed(url: str) -> Address:
    """The node address of a ``redis+cluster://host:port`` URL (db 0 only).

    Example::

        >>> cluster_seed("redis+cluster://127.0.0.1:7000")
        ('127.0.0.1', 7000)
        >>> cluster_seed("redis+cluster://127.0.0.1:7000/2")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: Redis Cluster has only database 0, got 'redis+cluster://127.0.0.1:7000/2'
    """
    if not is_cluster_url(url):
        raise ConfigError(f"expected a redis+cluster://host:port URL, got {url!r}")
    path = urlsplit(url).path.strip("/")
    if path not in ("", "0"):
        raise ConfigError(f"Redis Cluster has only database 0, got {url!r}")
    return parse_address(url)


class SlotLocator:
    """The master that owns the hash slot of ``key``, as ``CLUSTER SLOTS`` reports it.

    Asks the known nodes in turn (the seed first, then every master seen so far).

    Example::

        >>> SlotLocator(["127.0.0.1:7000"], "{orders}:in")
        SlotLocator([127.0.0.1:7000], slot=105)
    """

    def __init__(
        self, seeds: list[str | Address], key: str, *, socket_timeout: Duration = 0.5
    ) -> None:
        if not seeds:
            raise ConfigError("SlotLocator: give at least one cluster node address")
        if not isinstance(key, str) or not key:
            raise ConfigError(f"SlotLocator: key must be a non-empty string, got {key!r}")
        self.nodes = [parse_address(s) for s in seeds]
        self.slot = key_slot(key.encode())
        self.socket_timeout = parse_duration(socket_timeout, what="socket_timeout")

    def describe(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.nodes)

    def __repr__(self) -> str:
        return f"SlotLocator([{self.describe()}], slot={self.slot})"

    def locate(self) -> Address:
        seen: list[str] = []
        for host, port in list(self.nodes):
            try:
                with redis.Redis(
                    host,
                    port,
                    socket_timeout=self.socket_timeout,
                    socket_connect_timeout=self.socket_timeout,
                    retry=_no_retry(),
                ) as probe:
                    ranges = probe.execute_command("CLUSTER SLOTS")
            except RedisError as exc:
                seen.append(f"{host}:{port} unreachable ({type(exc).__name__})")
                continue
            owner: Address | None = None
            for start, end, master, *_replicas in ranges:
                address = (_text(master[0]) or host, int(master[1]))
                if address not in self.nodes:
                    self.nodes.append(address)
                if int(start) <= self.slot <= int(end):
                    owner = address
            if owner is not None:
                return owner
            seen.append(f"{host}:{port} knows no owner of slot {self.slot}")
        raise NoPrimaryError(f"no owner of slot {self.slot} among {self.describe()}: {seen}")


class ClusterClient(FailoverClient):
    """A client for the one hash slot of ``key`` on a Redis Cluster (see the module docs).

    Streams build it from a ``redis+cluster://`` URL with the stream name as ``key``.

    Example::

        >>> ClusterClient("redis+cluster://127.0.0.1:7000", key="{orders}:in")
        ClusterClient('redis+cluster://127.0.0.1:7000', slot=105, node=None)
    """

    retry_errors = (*_FAILOVER_ERRORS, *_REDIRECTS)

    def __init__(self, url: str, *, key: str, **options: Any) -> None:
        seed = cluster_seed(url)
        super().__init__(SlotLocator([seed], key), **options)
        self.cluster_url = url

    @property
    def url(self) -> str:
        return self.cluster_url

    @url.setter
    def url(self, value: str) -> None:
        raise AttributeError("ClusterClient.url cannot be set")

    def __repr__(self) -> str:
        slot = self.locator.slot if isinstance(self.locator, SlotLocator) else None
        return f"ClusterClient({self.cluster_url!r}, slot={slot}, node={self.primary})"

    def dedicated(self) -> ClusterDedicatedConnection:
        return ClusterDedicatedConnection(self)

    def _check_replies(self, conn: redis.Connection, replies: list[Any]) -> None:
        _raise_if_demoted(conn, replies)
        for reply in replies:
            if isinstance(reply, _REDIRECTS):
                conn.disconnect()  # type: ignore[no-untyped-call]  # reconnects to the node located next
                raise reply


class ClusterDedicatedConnection(DedicatedConnection):
    """A dedicated connection (exactly-once ``WATCH``/``MULTI``) that follows its slot.

    On a redirect reply it reconnects to the slot's node located again and sets
    ``watch_lost`` (the WATCHed keys were watched on the old connection): reads are sent
    again there; a ``MULTI`` (the commit, refused with ``EXECABORT``, so nothing was
    applied) is not, and the source replays the epoch instead of committing it.

    Example::

        >>> ClusterClient("redis+cluster://127.0.0.1:7000", key="{o}:in").dedicated().watch_lost
        False
    """

    client: ClusterClient

    def __init__(self, client: ClusterClient) -> None:
        super().__init__(client)
        self.watch_lost = False

    async def send(self, packed: bytes, replies: int) -> list[Any]:
        retry = _Retry()
        while True:
            out = await super().send(packed, replies)
            redirect = next((r for r in out if isinstance(r, _REDIRECTS)), None)
            if redirect is None:
                return out
            self.close()
            self.watch_lost = True
            await self.client._recover(redirect, retry)
            if packed.startswith(_MULTI):
                return out


def stream_client(url: str, key: str, pool_size: int) -> RedisClient:
    """The client a stream source or sink builds for ``url``: a cluster one for ``key``'s slot."""
    if is_cluster_url(url):
        return ClusterClient(url, key=key, pool_size=pool_size)
    return RedisClient(url, pool_size=pool_size)


class RedisClusterClient:
    """redis-py's :class:`~redis.cluster.RedisCluster` driven from trio (for arbitrary keys).

    ``call(fn, ...)`` runs a blocking call in a worker thread, at most ``pool_size`` at a
    time; ``redis`` is the :class:`~redis.cluster.RedisCluster`.

    Example::

        >>> RedisClusterClient("redis+cluster://127.0.0.1:7000")
        RedisClusterClient('redis+cluster://127.0.0.1:7000', pool_size=16)
    """

    def __init__(self, url: str, *, pool_size: int = 16, **options: Any) -> None:
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
            raise ConfigError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self.seed = cluster_seed(url)
        self.url = url
        self.pool_size = pool_size
        self.options = options
        self._redis: RedisCluster | None = None
        self.limiter = trio.CapacityLimiter(pool_size)

    def __repr__(self) -> str:
        return f"RedisClusterClient({self.url!r}, pool_size={self.pool_size})"

    @property
    def redis(self) -> RedisCluster:
        """The RedisCluster (connected on first use: it reads the topology when built)."""
        if self._redis is None:
            host, port = self.seed
            self._redis = RedisCluster(
                host=host, port=port, max_connections=self.pool_size, **self.options
            )
        return self._redis

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, bounded by the pool size."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def connect(self) -> None:
        """Read the cluster topology (in a worker thread)."""
        await trio.to_thread.run_sync(lambda: self.redis, limiter=self.limiter)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
