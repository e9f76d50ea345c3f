"""Entries whose processing failed: dead-lettered, or left pending for redelivery.

When a processor fails on an item for good and the pipeline has no dead-letter sink, the
pipeline hands the failure to the source's ``reject`` before the acknowledgment that covers
it (the core's :meth:`~haive.dataflow.io.sources.DataSource.reject`), and the source to its
:class:`FailureHandler`, which finds the entry the item came from, then, per
``on_failure``:

* ``"dead_letter"`` (default): the entry goes to the dead-letter stream (``<stream>:dead``)
  with its original fields (``entry.<name>``), ``reason``, ``node``, ``attempts``, ``id``,
  ``deliveries``, ``stream``, ``group`` and ``consumer``; at least once the ``XADD`` is
  written before ``reject`` returns (so before the ``XACK``), exactly once it is staged in
  the epoch's ``MULTI/EXEC`` with the ``XACK``.
* ``"redeliver"``: the entry is left out of the acknowledgment, so it stays pending and is
  claimed again once idle for ``claim_idle`` (by this worker or another); once it has been
  delivered ``max_deliveries`` times it is dead-lettered as above.

An item is traced to its entry by identity: ``Result.data`` is the item as it entered the
failing node, which is the object the source yielded unless an earlier processor replaced
it (a :class:`StreamEntry` of ``with_ids=True`` is traced by its ``id`` too). A failure on
a derived item cannot be traced: it is dead-lettered with that item (``item``, encoded with
the source's codec) and the reason, and its entry is acknowledged with the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from haive.dataflow.errors import HaiveError, SerializationError
from haive.dataflow.runtime.results import Result

from ._resp import pack
from .stream_reading import StreamEntry

if TYPE_CHECKING:
    from .client import RedisClient
    from .stream_dead_letters import DeadLetterWriter
    from .stream_stats import StreamSourceStats
    from .stream_unacked import UnackedEntries
    from .stream_wire import EntryCodec

#: What ``on_failure`` accepts.
FAILURE_MODES = ("dead_letter", "redeliver")


class FailureHandler:
    """Dead-letters the entries whose items failed for good, or leaves them pending.

    Given the consumer's client, stream, group and name, the codec items are encoded with
    when their entry cannot be found, ``on_failure`` and ``max_deliveries``, the entries
    read and not acknowledged (where a failed item is traced to its entry), the
    dead-letter writer and the stats.

    Example::

        >>> import uuid
        >>> from collections import deque
        >>> import trio
        >>> from haive.dataflow.runtime.results import Result
        >>> from haive_plugin_redis import EntryCodec, RedisClient, StreamSourceStats
        >>> from haive_plugin_redis.stream_dead_letters import DeadLetterWriter
        >>> from haive_plugin_redis.stream_unacked import UnackedEntries
        >>> async def main():
        ...     client, stream, stats = RedisClient(), f"doc-{uuid.uuid4().hex}", StreamSourceStats()
        ...     await client.execute("XADD", stream, "1-0", "data", '{"n":1}')
        ...     await client.execute("XGROUP", "CREATE", stream, "g", "0")
        ...     await client.execute("XREADGROUP", "GROUP", "g", "c", "STREAMS", stream, ">")
        ...     unacked = UnackedEntries()
        ...     item = {"n": 1}
        ...     unacked.add(deque([b"1-0"]), [], deque([item]))
        ...     failures = FailureHandler(
        ...         client, stream, "g", "c", codec=EntryCodec("json"), on_failure="dead_letter",
        ...         max_deliveries=5, unacked=unacked,
        ...         dead_letters=DeadLetterWriter(client, stream + ":dead", stats=stats),
        ...         stats=stats)
        ...     await failures.reject([Result.failed(item, ValueError("boom"), node="check")])
        ...     dead = await client.execute("XRANGE", stream + ":dead", "-", "+")
        ...     await client.execute("DEL", stream, stream + ":dead")
        ...     client.close()
        ...     fields = dead[0][1]
        ...     return stats.dead_lettered, fields[b"id"], fields[b"entry.data"], fields[b"reason"]
        >>> trio.run(main)
        (1, b'1-0', b'{"n":1}', b"processor 'check' failed: ValueError: boom")
    """

    def __init__(
        self,
        client: RedisClient,
        stream: str,
        group: str,
        consumer: str,
        *,
        codec: EntryCodec,
        on_failure: str,
        max_deliveries: int,
        unacked: UnackedEntries,
        dead_letters: DeadLetterWriter,
        stats: StreamSourceStats,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.codec = codec
        self.on_failure = on_failure
        self.max_deliveries = max_deliveries
        self.unacked = unacked
        self.dead_letters = dead_letters
        self.stats = stats

    def __repr__(self) -> str:
        return f"FailureHandler({self.stream!r}, on_failure={self.on_failure!r})"

    async def reject(self, failed: list[Result]) -> None:
        """Dead-letter the entries of ``failed`` (or keep them pending), before their ack."""
        traced: list[tuple[bytes, Result]] = []
        untraced: list[Result] = []
        origin = self.unacked.origins()
        for result in failed:
            entry_id = self._trace(origin, result.data)
            if entry_id is None:
                untraced.append(result)
            else:
                self.unacked.reject(entry_id)
                traced.append((entry_id, result))
        dead: list[list[bytes]] = [self._untraced_fields(result) for result in untraced]
        if traced:
            deliveries, fields = await self._pending_rows([i for i, _ in traced])
            for entry_id, result in traced:
                count = deliveries.get(entry_id, 1)
                if self.on_failure == "redeliver" and count < self.max_deliveries:
                    self.unacked.keep(entry_id)
                    self.stats.left_for_redelivery += 1
                    continue
                dead.append(self._failure_fields(entry_id, result, count, fields.get(entry_id)))
        await self.dead_letters.write(dead)

    def _trace(self, origin: dict[int, list[bytes]], data: Any) -> bytes | None:
        unacked = self.unacked
        for entry_id in origin.get(id(data), ()):
            if not unacked.is_rejected(entry_id):
                return entry_id
        if isinstance(data, StreamEntry):
            entry_id = data.id.encode()
            if unacked.holds_item(entry_id) and not unacked.is_rejected(entry_id):
                return entry_id
        return None

    async def _pending_rows(
        self, ids: list[bytes]
    ) -> tuple[dict[bytes, int], dict[bytes, list[bytes]]]:
        """Delivery count (``XPENDING``) and original fields (``XRANGE``) of each entry."""
        commands = []
        for entry_id in ids:
            commands.append(pack("XPENDING", self.stream, self.group, entry_id, entry_id, 1))
            commands.append(pack("XRANGE", self.stream, entry_id, entry_id))
        replies = await self.client.send(b"".join(commands), len(commands))
        deliveries: dict[bytes, int] = {}
        fields: dict[bytes, list[bytes]] = {}
        for entry_id, rows, entries in zip(ids, replies[::2], replies[1::2], strict=True):
            for reply in (rows, entries):
                if isinstance(reply, ResponseError):
                    raise HaiveError(
                        f"looking up failed entry {entry_id!r} of {self.stream!r}: {reply}"
                    )
            if rows:
                deliveries[entry_id] = int(rows[0][3])
            if entries:
                fields[entry_id] = _flat(entries[0][1])
        return deliveries, fields

    def _common_fields(self, result: Result) -> list[bytes]:
        error = result.error
        reason = f"processor {result.node!r} failed: {type(error).__name__}: {error}"
        return [
            b"reason", reason.encode(errors="replace"),
            b"node", str(result.node).encode(errors="replace"),
            b"attempts", b"%d" % result.attempts,
            b"stream", self.stream.encode(),
            b"group", self.group.encode(),
            b"consumer", self.consumer.encode(),
        ]  # fmt: skip

    def _failure_fields(
        self, entry_id: bytes, result: Result, deliveries: int, original: list[bytes] | None
    ) -> list[bytes]:
        out = self._common_fields(result)
        out += [b"id", entry_id, b"deliveries", b"%d" % deliveries]
        if original is None:  # trimmed or deleted meanwhile: keep the item itself
            out += [b"item", self._encode_item(result.data)]
        else:
            for i in range(0, len(original) - 1, 2):
                out.append(b"entry." + original[i])
                out.append(original[i + 1])
        return out

    def _untraced_fields(self, result: Result) -> list[bytes]:
        out = self._common_fields(result)
        out += [
            b"item", self._encode_item(result.data),
            b"origin", b"untraced: the failing processor received an item made by an "
            b"earlier one, so the entry it came from is not known (it was acknowledged)",
        ]  # fmt: skip
        return out

    def _encode_item(self, data: Any) -> bytes:
        if isinstance(data, StreamEntry):
            data = data.data
        serializer = self.codec.serializer
        try:
            if serializer is not None:
                return serializer.dumps(data)
            return repr(data).encode(errors="replace")
        except (SerializationError, TypeError, ValueError):
            return repr(data).encode(errors="replace")


def _flat(fields: Any) -> list[bytes]:
    """An entry's fields as a flat [name, value, ...] list (RESP2 list or RESP3 map)."""
    if isinstance(fields, dict):
        return [part for pair in fields.items() for part in pair]
    return list(fields)
