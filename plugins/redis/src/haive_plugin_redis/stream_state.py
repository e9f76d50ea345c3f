"""Keyed state of an exactly-once :class:`~haive_plugin_redis.streams.RedisStreamSource`.

:class:`TransactionalState` is a :class:`~haive_plugin_redis.backend.RedisStateBackend`
whose writes are staged in the source's epoch and committed with its acknowledgment
(:mod:`.stream_exactly_once`); reads are ``WATCH``\\ ed so that a concurrent change
aborts the commit. Get one from :meth:`RedisStreamSource.state`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from haive.dataflow.errors import ConfigError, InvalidMessageError

from .backend import RedisStateBackend

if TYPE_CHECKING:
    from .streams import RedisStreamSource


class TransactionalState(RedisStateBackend):
    """Keyed state of an exactly-once :class:`RedisStreamSource`: writes wait for the commit.

    Reads return this epoch's staged writes, else the stored value read under ``WATCH``
    (so a concurrent change by another worker aborts the commit and the epoch is
    replayed). ``add``/``add_many`` stage ``INCRBY`` without reading, so counters never
    conflict. ``scan`` sees stored keys plus this epoch's writes; keys another worker
    creates meanwhile are not guarded. Get one from :meth:`RedisStreamSource.state`.

    Example::

        >>> import uuid
        >>> import trio
        >>> from haive_plugin_redis import RedisStreamSource
        >>> async def main():
        ...     source = RedisStreamSource(f"doc-{uuid.uuid4().hex}", delivery="exactly_once")
        ...     state = source.state("counts")
        ...     await source.open()
        ...     try:
        ...         await state.add("a", 2)
        ...         await state.put("b", b"x")
        ...         staged = await state.get("a"), await state.get("b")
        ...         await source.acknowledge(0)  # commits the epoch
        ...         return staged, await source.client.execute("GET", state.prefix + "a")
        ...     finally:
        ...         await source.client.execute("DEL", state.prefix + "a", state.prefix + "b", source.stream)
        ...         await source.aclose()
        >>> trio.run(main)
        ((b'2', b'x'), b'2')
    """

    def __init__(self, source: RedisStreamSource, prefix: str) -> None:
        if source.fenced_connection is None:
            raise ConfigError(
                f"TransactionalState: {source!r} is not exactly_once; use source.state(name)"
            )
        super().__init__(client=source.client, prefix=prefix)
        self.source = source
        #: The epoch writes are staged in, and the connection reads are watched on.
        self.transaction = source.transaction
        self.connection = source.fenced_connection
        self._owns_client = False

    def __repr__(self) -> str:
        return f"TransactionalState({self.source.stream!r}, prefix={self.prefix!r})"

    async def open(self) -> None:
        """Nothing to connect: the source's connection is used."""

    async def aclose(self) -> None:
        """The source owns the connection."""

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        txn = self.transaction
        prefix = self.prefix
        full = [prefix + key for key in keys]
        missing = [
            k
            for k in dict.fromkeys(full)
            if k not in txn.reads and (k not in txn.writes or txn.writes[k][0] == "add")
        ]
        if missing:
            for k, value in zip(missing, await self.connection.watched_read(missing), strict=True):
                txn.reads[k] = value
        return [self._current(k) for k in full]

    def _current(self, key: str) -> bytes | None:
        txn = self.transaction
        op = txn.writes.get(key)
        if op is None:
            return txn.reads.get(key)
        if op[0] == "set":
            value: bytes = op[1]
            return value
        if op[0] == "del":
            return None
        return b"%d" % (_as_int(txn.reads.get(key), key) + op[1])

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._stage(key, value, ttl)

    def _stage(self, key: str, value: bytes | None, ttl: float | None) -> None:
        full = self.prefix + key
        if value is None:
            self.transaction.stage_write(full, ("del",))
        else:
            if ttl is not None and ttl <= 0:
                self.transaction.stage_write(full, ("del",))
                return
            self.transaction.stage_write(full, ("set", _check_bytes(value, key), ttl))

    async def delete(self, key: str) -> bool:
        existed = await self.get(key) is not None
        self._stage(key, None, None)
        return existed

    async def update(
        self,
        key: str,
        fn: Callable[[bytes | None], bytes | None],
        *,
        ttl: float | None = None,
    ) -> bytes | None:
        new = fn(await self.get(key))
        self._stage(key, new, ttl)
        return new

    async def write_batch(self, writes: Sequence[tuple[str, bytes | None, float | None]]) -> None:
        for key, value, ttl in writes:
            self._stage(key, value, ttl)

    async def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        full_prefix = self.prefix + prefix
        stored = [k.decode() for k in await self.client.call(self._scan_keys, full_prefix)]
        staged = [k for k in self.transaction.writes if k.startswith(full_prefix)]
        keys = sorted(set(stored) | set(staged))
        cut = len(self.prefix)
        values = await self.get_many([k[cut:] for k in keys])
        return [(k[cut:], v) for k, v in zip(keys, values, strict=True) if v is not None]

    async def delete_prefix(self, prefix: str) -> int:
        doomed = await self.scan(prefix)
        for key, _ in doomed:
            self._stage(key, None, None)
        return len(doomed)

    async def add(self, key: str, amount: int = 1, *, ttl: float | None = None) -> None:
        """Stage ``INCRBY key amount`` (no read, so never a conflict)."""
        await self.add_many({key: amount}, ttl=ttl)

    async def add_many(self, amounts: Mapping[str, int], *, ttl: float | None = None) -> None:
        """``add`` for several keys."""
        txn = self.transaction
        prefix = self.prefix
        for key, amount in amounts.items():
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise ConfigError(f"add {key!r}: amount must be an int, got {amount!r}")
            full = prefix + key
            op = txn.writes.get(full)
            if op is None:
                txn.writes[full] = ("add", amount, ttl)
            elif op[0] == "add":
                txn.writes[full] = ("add", op[1] + amount, ttl if ttl is not None else op[2])
            elif op[0] == "del":
                txn.stage_write(full, ("set", b"%d" % amount, ttl))
            else:
                txn.stage_write(full, ("set", b"%d" % (_as_int(op[1], key) + amount), ttl))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add and return the new value (reads the key, so it is WATCHed)."""
        await self.get(key)
        await self.add(key, amount, ttl=ttl)
        return _as_int(self._current(self.prefix + key), key)

    async def incr_many(self, amounts: Mapping[str, int], *, ttl: float | None = None) -> list[int]:
        await self.get_many(list(amounts))
        await self.add_many(amounts, ttl=ttl)
        return [_as_int(self._current(self.prefix + k), k) for k in amounts]


def _as_int(value: bytes | None, key: str) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise InvalidMessageError(
            f"state key {key!r} holds {value[:40]!r}, not an integer"
        ) from None


def _check_bytes(value: object, key: str) -> bytes:
    if isinstance(value, bytes):
        return value
    raise ConfigError(f"state value of {key!r} must be bytes, got {type(value).__name__}")
