"""Keyed state and outputs of a partitioned source, routed to the partition being processed.

A :class:`~haive_plugin_redis.partitioned.PartitionedStreamSource` has exactly one
partition in flight at a time (it asks for an acknowledgment before it switches), so the
state a processor reads and writes and the outputs the sink writes belong to that
partition: :class:`PartitionState` and :class:`PartitionOutputSink` forward every call to
its :class:`~haive_plugin_redis.partition_member.PartitionMember`. The state keys live next
to the partition (``{orders:p3}:state:<name>:<key>``), so a new owner reads them directly
from Redis: nothing to restore. Exactly once they are staged and committed with the
partition's outputs and read position in its ``MULTI/EXEC``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.state.backend import StateBackend, StateWrite

from ._resp import derived_key
from .backend import RedisStateBackend
from .stream_sink import RedisStreamSink, _positive_int
from .stream_state import TransactionalState
from .stream_wire import EntryCodec

if TYPE_CHECKING:
    from .partition_member import PartitionMember
    from .partitioned import PartitionedStreamSource


def _current(source: PartitionedStreamSource, what: str) -> PartitionMember:
    member = source.current_member
    if member is None:
        raise ConfigError(
            f"{what} of a PartitionedStreamSource is used outside the processing of a "
            "partition's items (its state and outputs belong to the partition in flight)"
        )
    return member


class PartitionState(StateBackend):
    """Keyed state ``name`` of the partition in flight (get one from ``source.state(name)``).

    Example::

        >>> from haive_plugin_redis import PartitionedStreamSource
        >>> source = PartitionedStreamSource("doc-orders", 4)
        >>> source.state("counts")
        PartitionState('counts')
    """

    def __init__(self, source: PartitionedStreamSource, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"state name must be a non-empty string, got {name!r}")
        self.source = source
        self.name = name
        # The member in flight and its backend (holding the member: identity, not id()).
        self._bound: tuple[PartitionMember, RedisStateBackend | TransactionalState] | None = None

    def __repr__(self) -> str:
        return f"PartitionState({self.name!r})"

    def backend(self) -> RedisStateBackend | TransactionalState:
        """The state backend of the partition in flight."""
        member = _current(self.source, f"state {self.name!r}")
        if self._bound is None or self._bound[0] is not member:
            self._bound = (member, member.state(self.name))
        return self._bound[1]

    def prefix(self, partition: int) -> str:
        """Where partition ``partition`` keeps this state's keys."""
        return derived_key(self.source.layout.stream(partition), f"state:{self.name}:")

    async def open(self) -> None:
        """The source owns the connections."""

    async def aclose(self) -> None:
        """The source owns the connections."""

    async def get(self, key: str) -> bytes | None:
        return await self.backend().get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self.backend().get_many(keys)

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self.backend().put(key, value, ttl=ttl)

    async def delete(self, key: str) -> bool:
        return await self.backend().delete(key)

    async def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        return await self.backend().scan(prefix)

    async def update(
        self,
        key: str,
        fn: Callable[[bytes | None], bytes | None],
        *,
        ttl: float | None = None,
    ) -> bytes | None:
        return await self.backend().update(key, fn, ttl=ttl)

    async def delete_prefix(self, prefix: str) -> int:
        return await self.backend().delete_prefix(prefix)

    async def write_batch(self, writes: Sequence[StateWrite]) -> None:
        await self.backend().write_batch(writes)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        return await self.backend().incr(key, amount, ttl=ttl)

    async def incr_many(self, amounts: Mapping[str, int], *, ttl: float | None = None) -> list[int]:
        return await self.backend().incr_many(amounts, ttl=ttl)

    async def add(self, key: str, amount: int = 1, *, ttl: float | None = None) -> None:
        await self.backend().add(key, amount, ttl=ttl)

    async def add_many(self, amounts: Mapping[str, int], *, ttl: float | None = None) -> None:
        await self.backend().add_many(amounts, ttl=ttl)


class PartitionOutputSink(StreamSink):
    """Writes each batch to the stream ``name`` kept next to the partition in flight.

    The outputs stay partitioned like the input (``{orders:p3}:billed``: read them with
    ``PartitionedStreamSource(sink.layout)``) and, exactly once, commit in the partition's
    transaction. Get one from ``source.sink(name)``.

    Example::

        >>> from haive_plugin_redis import PartitionedStreamSource
        >>> sink = PartitionedStreamSource("doc-orders", 4).sink("billed")
        >>> sink.layout.stream(3)
        '{doc-orders:p3}:billed'
    """

    def __init__(
        self,
        source: PartitionedStreamSource,
        name: str,
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        codec: str | Serializer | None = None,
        field: str = "data",
    ) -> None:
        if not isinstance(name, str) or not name or "{" in name or "}" in name:
            raise ConfigError(
                f"PartitionOutputSink(name={name!r}): name must be a non-empty string "
                "without '{' or '}'"
            )
        if maxlen is not None:
            _positive_int(maxlen, "maxlen")
        self.source = source
        self.name = name
        self.layout = source.layout.with_suffix(f":{name}")
        self.maxlen = maxlen
        self.approximate = approximate
        self.codec = EntryCodec(codec, field)
        self.written = 0
        self._bound: tuple[PartitionMember, RedisStreamSink] | None = None

    def __repr__(self) -> str:
        return f"PartitionOutputSink({self.layout.stream(0)!r}...)"

    def use_serializer(self, serializer: Serializer) -> None:
        """Encode items with the pipeline's serializer (``StreamingPipeline.set_serializer``)."""
        self.codec = self.codec.adopt(serializer, repr(self))
        if self._bound is not None:
            self._bound[1].codec = self.codec

    async def write_batch(self, items: list[Any]) -> None:
        member = _current(self.source, f"sink {self.name!r}")
        if self._bound is None or self._bound[0] is not member:
            sink = member.sink(
                self.layout.stream(member.partition),
                maxlen=self.maxlen,
                approximate=self.approximate,
            )
            sink.codec = self.codec
            await sink.open()
            self._bound = (member, sink)
        sink = self._bound[1]
        before = sink.written
        try:
            await sink.write_batch(items)
        finally:
            self.written += sink.written - before
