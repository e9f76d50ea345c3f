"""Retention and erasure for Redis streams: trim by length or age, forget one subject.

* :class:`Retention` says how much of a stream to keep: at most ``maxlen`` entries and/or
  entries younger than ``max_age`` (``MAXLEN`` / ``MINID`` trimming). :meth:`Retention.trim`
  applies it now; :class:`RetainedStreamSink` applies it on every write.
* :class:`Erasure` removes everything stored about one subject (the GDPR right to
  erasure): its keyed state in every registered store (memory, SQLite, Redis...: through
  :meth:`~haive.dataflow.state.store.StateStore.forget`), the state records quarantined as
  corrupt, and the entries of every registered stream (and its dead-letter stream) whose
  key field equals the subject's key, ``XDEL``\\ ed after a scan and ``XACK``\\ ed in every
  consumer group so no pending list still names them.

Stream IDs are the primary's clock: the age cut-off is computed from the server's ``TIME``
(not this machine's clock), so a skewed client never trims too much.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson
import trio
from redis.exceptions import ResponseError

from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.io.serializers import JsonSerializer, Serializer
from haive.dataflow.runtime.units import Duration, parse_duration
from haive.dataflow.state.backend import StateBackend
from haive.dataflow.state.store import DEAD_LETTER_PREFIX, StateStore

from ._resp import derived_key, pack, pack_ids
from .backend import RedisStateBackend
from .client import RedisClient
from .streams import EntryCodec, RedisStreamSink, RedisStreamSource

_CHUNK = 1000


def _optional_positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"Retention: {attribute.name} must be an int >= 1, got {value!r}")


def _age(value: Duration | None) -> float | None:
    if value is None:
        return None
    seconds = parse_duration(value, what="max_age")
    if seconds <= 0:
        raise ConfigError(f"Retention: max_age must be positive, got {value!r}")
    return seconds


async def server_time_ms(client: RedisClient) -> int:
    """The Redis server's clock in milliseconds (``TIME``): the clock stream IDs come from."""
    reply = (await client.send(pack("TIME"), 1))[0]
    if isinstance(reply, ResponseError):
        raise HaiveError(f"TIME failed: {reply}")
    seconds, micros = int(reply[0]), int(reply[1])
    return seconds * 1000 + micros // 1000


@attrs.frozen
class Retention:
    """How much of a stream to keep: ``maxlen`` entries and/or entries younger than ``max_age``.

    ``max_age`` is seconds or a string like ``"7d"``/``"12h"``. ``approximate=True`` (the
    default) lets Redis trim whole internal nodes only (``~``), which is much cheaper and
    keeps a few more entries than asked; ``False`` trims exactly.

    Example::

        >>> import uuid
        >>> from haive_plugin_redis import RedisClient, RedisStreamSink
        >>> async def main():
        ...     client = RedisClient()
        ...     stream = f"doc-{uuid.uuid4().hex}"
        ...     await RedisStreamSink(stream, client=client).write_batch([{"n": n} for n in range(10)])
        ...     removed = await Retention(maxlen=3, approximate=False).trim(client, stream)
        ...     left = await client.execute("XLEN", stream)
        ...     await client.execute("DEL", stream)
        ...     client.close()
        ...     return removed, left
        >>> trio.run(main)
        (7, 3)
        >>> Retention()
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: Retention: give maxlen (entries), max_age (time) or both
    """

    maxlen: int | None = attrs.field(default=None, validator=_optional_positive_int)
    max_age: float | None = attrs.field(default=None, converter=_age)
    approximate: bool = True

    def __attrs_post_init__(self) -> None:
        if self.maxlen is None and self.max_age is None:
            raise ConfigError("Retention: give maxlen (entries), max_age (time) or both")

    def min_id(self, now_ms: int) -> str | None:
        """The oldest ID to keep at server time ``now_ms`` (None without ``max_age``).

        Example::

            >>> Retention(max_age="1s").min_id(1_700_000_005_000)
            '1700000004000-0'
        """
        if self.max_age is None:
            return None
        return f"{max(0, now_ms - round(self.max_age * 1000))}-0"

    def trim_commands(self, stream: str, now_ms: int) -> list[bytes]:
        """The packed ``XTRIM`` commands for ``stream`` at server time ``now_ms``.

        Example::

            >>> [c.count(b"XTRIM") for c in Retention(maxlen=5, max_age=60).trim_commands("s", 0)]
            [1, 1]
        """
        mode = ("~",) if self.approximate else ()
        commands = []
        if self.maxlen is not None:
            commands.append(pack("XTRIM", stream, "MAXLEN", *mode, self.maxlen))
        min_id = self.min_id(now_ms)
        if min_id is not None:
            commands.append(pack("XTRIM", stream, "MINID", *mode, min_id))
        return commands

    async def trim(self, client: RedisClient, stream: str) -> int:
        """Apply this retention to ``stream`` now; how many entries were removed."""
        now = await server_time_ms(client) if self.max_age is not None else 0
        commands = self.trim_commands(stream, now)
        replies = await client.send(b"".join(commands), len(commands))
        removed = 0
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise HaiveError(f"XTRIM of {stream!r} failed: {reply}")
            removed += int(reply)
        return removed


async def trim_streams(client: RedisClient, policies: Mapping[str, Retention]) -> dict[str, int]:
    """:meth:`Retention.trim` for several streams; stream -> entries removed.

    Run it on a timer (``haive run``, cron) for streams written by producers that do not
    trim themselves.
    """
    out: dict[str, int] = {}
    for stream, policy in policies.items():
        if not isinstance(policy, Retention):
            raise ConfigError(f"trim_streams: {stream!r} maps to {policy!r}, not a Retention")
        out[stream] = await policy.trim(client, stream)
    return out


class RetainedStreamSink(RedisStreamSink):
    """A :class:`~haive_plugin_redis.streams.RedisStreamSink` that keeps its stream trimmed.

    Length: every ``XADD`` carries ``MAXLEN``. Age: an ``XTRIM MINID`` follows a write at
    most every ``trim_interval`` seconds (the server's clock decides what is old). Bound to
    an exactly-once source (``transaction=``) the trim is staged with the commit.

    Example::

        >>> import uuid
        >>> async def main():
        ...     sink = RetainedStreamSink(f"doc-{uuid.uuid4().hex}", Retention(maxlen=5, approximate=False))
        ...     async with sink:
        ...         await sink.write_batch([{"n": n} for n in range(8)])
        ...         await sink.write_batch([{"n": 8}])
        ...         length = await sink.client.execute("XLEN", sink.stream)
        ...         await sink.client.execute("DEL", sink.stream)
        ...     return length
        >>> trio.run(main)
        5
    """

    PLUGIN_NAME = "redis_stream_retained"

    def __init__(
        self,
        stream: str,
        retention: Retention,
        *,
        trim_interval: Duration = "1s",
        **options: Any,
    ) -> None:
        if not isinstance(retention, Retention):
            raise ConfigError(
                f"RetainedStreamSink: retention must be a Retention, got {retention!r}"
            )
        if "maxlen" in options or "approximate" in options:
            raise ConfigError("RetainedStreamSink: set maxlen/approximate on the Retention")
        super().__init__(
            stream, maxlen=retention.maxlen, approximate=retention.approximate, **options
        )
        self.retention = retention
        self.trim_interval = parse_duration(trim_interval, what="trim_interval")
        self.trimmed = 0
        self._next_trim = -float("inf")

    def __repr__(self) -> str:
        return f"RetainedStreamSink({self.stream!r}, {self.retention!r})"

    async def write_batch(self, items: list[Any]) -> None:
        await super().write_batch(items)
        if self.retention.max_age is None or not items:
            return
        now = trio.current_time()
        if now < self._next_trim:
            return
        self._next_trim = now + self.trim_interval
        server_now = await server_time_ms(self.client)
        age_only = attrs.evolve(self.retention, maxlen=None) if self.retention.maxlen else None
        commands = (age_only or self.retention).trim_commands(self.stream, server_now)
        if self.epoch is not None:
            for command in commands:
                self.epoch.stage_xadds(command, 1)
            return
        for reply in await self.client.send(b"".join(commands), len(commands)):
            if isinstance(reply, ResponseError):
                raise HaiveError(f"XTRIM of {self.stream!r} failed: {reply}")
            self.trimmed += int(reply)


# -- erasure -------------------------------------------------------------------------------


@attrs.frozen
class ErasureReport:
    """What :meth:`Erasure.forget` removed for one key.

    Example::

        >>> ErasureReport("u1", 2, {"s": 3}, {"s": 1}).removed
        5
    """

    key: str
    state_keys: int
    stream_entries: dict[str, int]
    pending_acknowledged: dict[str, int]

    @property
    def removed(self) -> int:
        """State keys plus stream entries removed."""
        return self.state_keys + sum(self.stream_entries.values())


@attrs.frozen
class _StreamScope:
    stream: str
    key_field: str
    codec: EntryCodec
    match: Callable[[Any, str], bool] | None


@attrs.frozen
class _StateScope:
    store: StateStore
    templates: tuple[str, ...]


def contains_key(value: Any, key_field: str, key: str, *, depth: int = 4) -> bool:
    """True when ``value`` (or a mapping/list nested in it, ``depth`` levels) has ``key_field == key``.

    Dead letters wrap the item (``{"data": item, "error": ...}``), so nested mappings count.

    Example::

        >>> contains_key({"data": {"user": "u1"}, "error": "x"}, "user", "u1")
        True
        >>> contains_key({"user": "u10"}, "user", "u1")
        False
    """
    if isinstance(value, Mapping):
        found = value.get(key_field)
        if found is not None and str(found) == key:
            return True
        children: Any = value.values()
    elif isinstance(value, list | tuple):
        children = value
    else:
        return False
    if depth <= 0:
        return False
    return any(contains_key(child, key_field, key, depth=depth - 1) for child in children)


class Erasure:
    """Forget one subject everywhere it is stored: state, stream entries, dead letters.

    Register what to search, then call :meth:`forget` per erasure request:

    * :meth:`add_state`: a :class:`~haive.dataflow.state.store.StateStore` (any backend) or
      a raw :class:`~haive.dataflow.state.backend.StateBackend`, with the key templates the
      subject's state lives under (``"{key}"`` by default; a ``StatefulProcessor`` named
      ``counter`` stores ``"counter:{key}"``). For each template the key itself and every
      key below it (``<key>:...``) is removed, and the store's quarantined copies too.
    * :meth:`add_stream`: a stream whose entries carry the key in ``key_field`` (looked up in
      the decoded item, also nested, e.g. in a dead letter's ``data``); its dead-letter
      stream (``<stream>:dead``) is searched as well. Entries that no longer decode are
      matched on their raw bytes (``"key_field": "key"`` in JSON, or the serializer's
      encoding of both).
    * :meth:`add_source`: a :class:`~haive_plugin_redis.streams.RedisStreamSource`'s stream,
      its dead letters and its named keyed states.

    Matching entries are deleted with ``XDEL`` and acknowledged in every consumer group of
    the stream, so no pending list still refers to them. Entries written while ``forget``
    runs are not covered: stop the subject's intake first, or call ``forget`` again.

    Example::

        >>> import uuid
        >>> from haive_plugin_redis import RedisClient, RedisStreamSink
        >>> async def main():
        ...     client = RedisClient()
        ...     stream = f"doc-{uuid.uuid4().hex}"
        ...     events = [{"user": "u1", "n": 1}, {"user": "u2", "n": 2}, {"user": "u1", "n": 3}]
        ...     await RedisStreamSink(stream, client=client).write_batch(events)
        ...     async with StateStore(namespace="doc") as store:
        ...         await store.put("u1", {"visits": 2})
        ...         await store.put("u1:profile", {"name": "Ada"})
        ...         await store.put("u10", {"visits": 1})
        ...         erasure = Erasure(client).add_stream(stream, key_field="user").add_state(store)
        ...         report = await erasure.forget("u1")
        ...         kept = [k for k, _ in await store.scan("")]
        ...     left = await client.execute("XLEN", stream)
        ...     await client.execute("DEL", stream)
        ...     client.close()
        ...     return report.state_keys, report.stream_entries[stream], kept, left
        >>> trio.run(main)
        (2, 2, ['u10'], 1)
    """

    def __init__(self, client: RedisClient, *, separator: str = ":") -> None:
        if not isinstance(client, RedisClient):
            raise ConfigError(f"Erasure: client must be a RedisClient, got {client!r}")
        if not isinstance(separator, str) or not separator:
            raise ConfigError(f"Erasure: separator must be a non-empty string, got {separator!r}")
        self.client = client
        self.separator = separator
        self._streams: dict[str, _StreamScope] = {}
        self._states: list[_StateScope] = []

    def __repr__(self) -> str:
        return f"Erasure(streams={sorted(self._streams)}, states={len(self._states)})"

    def add_stream(
        self,
        stream: str,
        *,
        key_field: str = "key",
        codec: str | Serializer = "json",
        field: str = "data",
        dead_letter: str | bool | None = True,
        match: Callable[[Any, str], bool] | None = None,
    ) -> Erasure:
        """Search ``stream`` (and its dead-letter stream) for entries of the key.

        ``dead_letter``: True for ``<stream>:dead`` in its hash slot (the source's default),
        a name, or False. ``match(item, key)`` replaces the ``key_field`` lookup.
        """
        if not isinstance(stream, str) or not stream:
            raise ConfigError(
                f"Erasure.add_stream: stream must be a non-empty string, got {stream!r}"
            )
        if not isinstance(key_field, str) or not key_field:
            raise ConfigError(
                f"Erasure.add_stream: key_field must be a non-empty string, got {key_field!r}"
            )
        scope = _StreamScope(stream, key_field, EntryCodec(codec, field), match)
        self._streams[stream] = scope
        if dead_letter:
            name = derived_key(stream, "dead") if dead_letter is True else str(dead_letter)
            self._streams[name] = attrs.evolve(scope, stream=name)
        return self

    def add_state(self, store: StateStore | StateBackend, *templates: str) -> Erasure:
        """Remove the key's state from ``store``, under each template (default ``"{key}"``)."""
        if isinstance(store, StateBackend):
            store = StateStore(store, namespace="")
        if not isinstance(store, StateStore):
            raise ConfigError(
                f"Erasure.add_state: expected a StateStore or StateBackend, got {store!r}"
            )
        templates = templates or ("{key}",)
        for template in templates:
            if not isinstance(template, str) or "{key}" not in template:
                raise ConfigError(
                    f"Erasure.add_state: template {template!r} must contain '{{key}}', "
                    "e.g. 'counter:{key}'"
                )
        self._states.append(_StateScope(store, tuple(templates)))
        return self

    def add_source(
        self,
        source: RedisStreamSource,
        *state_names: str,
        key_field: str = "key",
        templates: Sequence[str] = ("{key}",),
    ) -> Erasure:
        """The source's stream and dead letters, and its keyed states ``state_names``."""
        self.add_stream(
            source.stream,
            key_field=key_field,
            codec=source.codec.serializer if source.codec.serializer is not None else "fields",
            field=source.codec.field,
            dead_letter=source.dead_letter,
        )
        for name in state_names:
            backend = RedisStateBackend(client=self.client, prefix=source.state_prefix(name))
            self.add_state(backend, *templates)
        return self

    async def forget(self, key: str) -> ErasureReport:
        """Remove every trace of ``key`` from the registered state and streams."""
        if not isinstance(key, str) or not key:
            raise ConfigError(f"forget: the key must be a non-empty string, got {key!r}")
        state_keys = 0
        for scope in self._states:
            state_keys += await self._forget_state(scope, key)
        entries: dict[str, int] = {}
        pending: dict[str, int] = {}
        for stream_scope in self._streams.values():
            stream = stream_scope.stream
            entries[stream], pending[stream] = await self._forget_stream(stream_scope, key)
        return ErasureReport(key, state_keys, entries, pending)

    # -- state ----------------------------------------------------------------------------
    async def _forget_state(self, scope: _StateScope, key: str) -> int:
        store = scope.store
        await store.open()
        removed = 0
        for template in scope.templates:
            subject = template.replace("{key}", key)
            removed += int(await store.delete(subject))
            removed += await store.forget(subject + self.separator)
            # Records StateStore quarantined as corrupt keep the subject's raw bytes.
            quarantined = DEAD_LETTER_PREFIX + store.full_key(subject)
            removed += int(await store.backend.delete(quarantined))
            removed += await store.backend.delete_prefix(quarantined + self.separator)
        return removed

    # -- streams --------------------------------------------------------------------------
    async def _forget_stream(self, scope: _StreamScope, key: str) -> tuple[int, int]:
        client = self.client
        kind = (await client.send(pack("TYPE", scope.stream), 1))[0]
        if kind in (b"none", "none"):
            return 0, 0
        if kind not in (b"stream", "stream"):
            raise ConfigError(f"forget: key {scope.stream!r} is a {kind!r}, not a stream")
        last = await client.send(pack("XREVRANGE", scope.stream, "+", "-", "COUNT", 1), 1)
        if not last[0]:
            return 0, 0
        end = last[0][0][0]  # entries appended from now on are not scanned
        matcher = _EntryMatcher(scope, key)
        doomed: list[bytes] = []
        start: bytes = b"-"
        while True:
            reply = await client.send(pack("XRANGE", scope.stream, start, end, "COUNT", _CHUNK), 1)
            batch = reply[0]
            if isinstance(batch, ResponseError):
                raise HaiveError(f"XRANGE of {scope.stream!r} failed: {batch}")
            doomed.extend(entry_id for entry_id, fields in batch if matcher(fields))
            if len(batch) < _CHUNK:
                break
            start = b"(" + batch[-1][0]
        if not doomed:
            return 0, 0
        groups = await client.send(pack("XINFO", "GROUPS", scope.stream), 1)
        names = _group_names(groups[0])
        commands: list[bytes] = []
        for i in range(0, len(doomed), _CHUNK):
            chunk = doomed[i : i + _CHUNK]
            commands.extend(pack_ids(("XACK", scope.stream, name), chunk) for name in names)
            commands.append(pack_ids(("XDEL", scope.stream), chunk))
        replies = await client.send(b"".join(commands), len(commands))
        deleted = acked = 0
        per_chunk = len(names) + 1
        for index, reply in enumerate(replies):
            if isinstance(reply, ResponseError):
                raise HaiveError(f"erasing entries of {scope.stream!r} failed: {reply}")
            if index % per_chunk == len(names):
                deleted += int(reply)
            else:
                acked += int(reply)
        return deleted, acked


def _group_names(reply: Any) -> list[bytes]:
    if isinstance(reply, ResponseError):
        raise HaiveError(f"XINFO GROUPS failed: {reply}")
    names = []
    for group in reply:
        info = group if isinstance(group, dict) else dict(zip(group[::2], group[1::2], strict=True))
        name = info.get(b"name", info.get("name"))
        names.append(name if isinstance(name, bytes) else str(name).encode())
    return names


class _EntryMatcher:
    """Does a raw entry (flat field/value list) belong to ``key``?"""

    def __init__(self, scope: _StreamScope, key: str) -> None:
        self.scope = scope
        self.key = key
        self.key_bytes = key.encode()
        field = scope.key_field
        self.field_bytes = field.encode()
        self.payload_fields = {scope.codec.field_bytes, b"entry." + scope.codec.field_bytes}
        self.flat_fields = {self.field_bytes, b"entry." + self.field_bytes}
        json_key = orjson.dumps(key).decode()
        pattern = rf"{re.escape(orjson.dumps(field).decode())}\s*:\s*(?:{re.escape(json_key)}"
        if key.lstrip("-").isdigit():
            pattern += rf"|{re.escape(key)}(?![0-9.eE])"
        self.json_pair = re.compile((pattern + ")").encode())
        serializer = scope.codec.serializer
        self.needle: bytes | None = None
        if serializer is not None and not isinstance(serializer, JsonSerializer):
            try:
                self.needle = serializer.dumps(field) + serializer.dumps(key)
            except Exception:
                self.needle = None  # e.g. an encrypting serializer: no stable bytes
        # Quarantined counters (exactly-once) name the state key: "...:<key>" or "...:<key>:..."
        self.state_key = re.compile(rb"(?:^|:)" + re.escape(self.key_bytes) + rb"(?:$|:)")

    def __call__(self, fields: list[bytes] | None) -> bool:
        if not fields:
            return False
        scope = self.scope
        for i in range(0, len(fields) - 1, 2):
            name, value = fields[i], fields[i + 1]
            if name in self.flat_fields and value == self.key_bytes:
                return True
            if name == b"state_key" and self.state_key.search(value):
                return True
        if scope.codec.serializer is None:
            return False  # codec "fields": the flat fields were the item
        for i in range(0, len(fields) - 1, 2):
            if fields[i] not in self.payload_fields:
                continue
            raw = fields[i + 1]
            try:
                item = scope.codec.serializer.loads(raw)
            except Exception:
                if self._raw_match(raw):
                    return True
                continue
            if scope.match is not None:
                if scope.match(item, self.key):
                    return True
            elif contains_key(item, scope.key_field, self.key):
                return True
        return False

    def _raw_match(self, raw: bytes) -> bool:
        if self.json_pair.search(raw):
            return True
        return self.needle is not None and self.needle in raw
