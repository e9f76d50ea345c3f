"""Dead letters a Redis Streams source keeps in its dead-letter stream (``<stream>:dead``).

A pipeline reading a ``RedisStreamSource`` without a dead-letter sink hands its failures to
the source, which writes them to its dead-letter stream, shared by every worker of the
group. The console lists that stream (``XRANGE``) and replays an entry by adding its original
fields back to the input stream and deleting it from the dead-letter stream in one Lua
script (atomic, so a replay neither loses nor duplicates it); a worker of the group, in
this process or another, then reads it again.
"""

from __future__ import annotations

import re
from typing import Any

from .dead_letters import DeadLetter

#: XADD the original fields to the input and XDEL the dead letter, atomically. The two keys
#: share a hash slot (the source's default dead-letter stream is derived from the input's).
REPLAY_SCRIPT = """
local entry = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #entry == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
return redis.call('XDEL', KEYS[2], ARGV[1])
"""

_ERROR_TYPE = re.compile(r"failed: ([A-Za-z_][\w.]*): ")
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
#: At most this many dead letters are scanned per listing (filters apply to them).
SCAN_LIMIT = 10_000


def is_redis_stream_source(source: object) -> bool:
    """True for a ``haive_plugin_redis.RedisStreamSource`` (checked without importing it)."""
    return type(source).__module__.startswith("haive_plugin_redis.") and all(
        hasattr(source, name) for name in ("client", "stream", "dead_letter", "codec")
    )


def _original_fields(flat: dict[bytes, bytes]) -> list[bytes]:
    """The input entry's own fields, flattened (``entry.<name>`` in the dead letter)."""
    out: list[bytes] = []
    for name, value in flat.items():
        if name.startswith(b"entry."):
            out += [name[len(b"entry.") :], value]
    return out


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace") if value is not None else ""


class RedisDeadLetters:
    """The dead-letter stream of a Redis Streams source, as the console's dead letters.

    Ids are the dead-letter stream's entry ids (``"1732528800000-0"``).

    Example::

        >>> import trio
        >>> from haive_plugin_redis import RedisStreamSource
        >>> source = RedisStreamSource("orders", group="g", consumer="c")
        >>> letters = RedisDeadLetters(source)
        >>> letters.dead_stream
        '{orders}:dead'
        >>> source.client.close()
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self.dead_stream: str = source.dead_letter

    def _letter(self, entry_id: bytes, flat: dict[bytes, bytes]) -> DeadLetter:
        original = _original_fields(flat)
        payload: Any
        try:
            if original:
                payload = self.source.codec.decode(original)
            elif b"item" in flat:
                serializer = self.source.codec.serializer
                payload = serializer.loads(flat[b"item"]) if serializer else _text(flat[b"item"])
            else:
                payload = None
        except Exception as exc:  # an entry that no longer decodes is still shown
            payload = {"undecodable": repr(exc)}
        reason = _text(flat.get(b"reason"))
        match = _ERROR_TYPE.search(reason)
        attempts = flat.get(b"attempts", b"1")
        return DeadLetter(
            id=entry_id.decode(),
            payload=payload,
            node=_text(flat[b"node"]) if b"node" in flat else None,
            error_type=match.group(1) if match else "unknown",
            reason=reason,
            attempts=int(attempts) if attempts.isdigit() else 1,
            time=int(entry_id.split(b"-")[0]) / 1000.0,
        )

    async def _scan(self) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        start = "-"
        while len(letters) < SCAN_LIMIT:
            page = await self.source.client.execute(
                "XRANGE", self.dead_stream, start, "+", "COUNT", 500
            )
            if not page:
                break
            for entry_id, fields in page:
                letters.append(self._letter(entry_id, dict(fields)))
            start = "(" + page[-1][0].decode()
        return letters

    async def find(
        self, *, node: str | None, error: str | None, offset: int, limit: int
    ) -> list[DeadLetter]:
        needle = error.lower() if error else None
        found = [
            d
            for d in await self._scan()
            if (node is None or d.node == node)
            and (needle is None or needle in d.error_type.lower() or needle in d.reason.lower())
        ]
        return found[offset : offset + limit]

    async def get(self, letter_id: str) -> DeadLetter | None:
        if not _STREAM_ID.fullmatch(letter_id):
            return None
        entries = await self.source.client.execute("XRANGE", self.dead_stream, letter_id, letter_id)
        return self._letter(entries[0][0], dict(entries[0][1])) if entries else None

    async def count(self) -> int:
        return int(await self.source.client.execute("XLEN", self.dead_stream))

    async def replay(self, ids: list[str]) -> tuple[list[str], list[str]]:
        """Put the entries back on the input stream; returns (replayed, missing) ids."""
        replayed: list[str] = []
        missing: list[str] = []
        for letter_id in ids:
            if not _STREAM_ID.fullmatch(letter_id):
                missing.append(letter_id)
                continue
            entries = await self.source.client.execute(
                "XRANGE", self.dead_stream, letter_id, letter_id
            )
            if not entries:
                missing.append(letter_id)
                continue
            fields = dict(entries[0][1])
            original = _original_fields(fields)
            if not original and b"item" in fields:
                original = list(
                    self.source.codec.encode(self._letter(entries[0][0], fields).payload)
                )
            if not original:
                missing.append(letter_id)
                continue
            done = await self.source.client.execute(
                "EVAL", REPLAY_SCRIPT, 2, self.source.stream, self.dead_stream, letter_id, *original
            )
            (replayed if done else missing).append(letter_id)
        return replayed, missing
