"""Built-in sources: iterables, async iterables, an in-memory push source, JSON-lines files."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import orjson
import trio

from ..errors import ConfigError, SerializationError
from ..io.sources import DataSource
from ..plugins.hookspecs import hookimpl
from ..runtime.backpressure import BoundedBuffer, strategy_spec
from ..runtime.defaults import DEFAULT_BACKPRESSURE, DEFAULT_BUFFER_SIZE
from ..runtime.validation import POSITIVE_INT, one_of
from ..state.checkpoint import CheckpointableSource

#: Sequence types IterableSource slices instead of iterating (exact types: a subclass may
#: iterate differently from its slices).
_SLICEABLE: tuple[type, ...] = (list, tuple, range)


class IterableSource(DataSource, CheckpointableSource):
    """Items of a synchronous iterable (list, generator, range), in batches.

    Checkpointable: the position is the number of items yielded; ``seek(n)`` skips the first
    ``n`` items of the next iteration (the iterable is iterated again from its start).

    Example::

        >>> async def main():
        ...     return [b async for b in IterableSource(range(5)).batches(2)]
        >>> trio.run(main)
        [[0, 1], [2, 3], [4]]
    """

    PLUGIN_NAME = "iterable"

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.iterable = iterable
        self._start = 0
        self._yielded = 0

    def position(self) -> int:
        return self._yielded

    def seek(self, position: Any) -> None:
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise ConfigError(f"IterableSource.seek: expected an item count >= 0, got {position!r}")
        self._start = self._yielded = position

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        iterable = self.iterable
        self._yielded = self._start
        if type(iterable) in _SLICEABLE:
            # A list, tuple or range is sliced: one C copy per batch instead of islice's
            # step per item (half the source's cost per item). Slicing by position sees a
            # list growing meanwhile as its iterator would.
            sequence: Any = iterable
            position = self._start
            while chunk := sequence[position : position + chunk_size]:
                batch = chunk if type(chunk) is list else list(chunk)
                position += len(batch)
                self._yielded = position
                yield batch
            return
        iterator = iter(iterable)
        if self._start:
            # consume() idiom: skip the replayed prefix at C speed.
            next(itertools.islice(iterator, self._start, self._start), None)
        while batch := list(itertools.islice(iterator, chunk_size)):
            self._yielded += len(batch)
            yield batch


class AsyncIterableSource(DataSource):
    """Items of an async iterable; each item is passed on as soon as it arrives.

    Example::

        >>> async def numbers():
        ...     for n in range(3):
        ...         yield n
        >>> async def main():
        ...     return [b async for b in AsyncIterableSource(numbers()).batches(10)]
        >>> trio.run(main)
        [[0], [1], [2]]
    """

    PLUGIN_NAME = "async_iterable"

    def __init__(self, iterable: AsyncIterable[Any]) -> None:
        self.iterable = iterable

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        # The pipeline coalesces these single-item batches downstream when it is busy.
        async for item in self.iterable:
            yield [item]

    async def aclose(self) -> None:
        closer = getattr(self.iterable, "aclose", None)
        if closer is not None:
            await closer()


class MemorySource(DataSource):
    """A source you push into from other tasks; ``close()`` ends it.

    ``buffer_size`` bounds what is waiting; ``push`` blocks when full (or the strategy drops).

    Example::

        >>> async def main():
        ...     source = MemorySource(buffer_size=10)
        ...     await source.push("a")
        ...     source.push_nowait("b")
        ...     source.close()
        ...     return [b async for b in source.batches(10)]
        >>> trio.run(main)
        [['a', 'b']]
    """

    PLUGIN_NAME = "memory"

    def __init__(
        self, buffer_size: int = DEFAULT_BUFFER_SIZE, *, backpressure: object = DEFAULT_BACKPRESSURE
    ) -> None:
        POSITIVE_INT.check("MemorySource", "buffer_size", buffer_size)
        spec = strategy_spec(backpressure, owner="MemorySource", parameter="backpressure")
        self.buffer: BoundedBuffer[Any] = BoundedBuffer(buffer_size, spec, name="memory-source")

    async def push(self, item: Any) -> None:
        await self.buffer.put(item)

    async def push_batch(self, items: Iterable[Any]) -> None:
        await self.buffer.put_batch(items)

    def push_nowait(self, item: Any) -> None:
        self.buffer.put_nowait(item)

    def close(self) -> None:
        self.buffer.close()

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        while True:
            try:
                yield await self.buffer.get_batch(chunk_size)
            except trio.EndOfChannel:
                return


class JsonLinesSource(DataSource, CheckpointableSource):
    """One JSON value per line of a file, read in large chunks off the event loop.

    ``on_invalid="raise"`` (default) stops at a malformed line with its file and line number;
    ``"skip"`` counts it in ``invalid_lines`` and goes on. Items before it are delivered.

    Checkpointable: the position is ``{"offset": bytes, "line": n}`` just after the last line
    yielded; ``seek(position)`` makes the next run start reading there.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "in.jsonl"
        >>> _ = path.write_text('{"n": 1}\\n{"n": 2}\\n')
        >>> async def main():
        ...     return [b async for b in JsonLinesSource(path).batches(100)]
        >>> trio.run(main)
        [[{'n': 1}, {'n': 2}]]
    """

    PLUGIN_NAME = "jsonl"
    CHUNK = 1 << 20

    def __init__(self, path: str | os.PathLike[str], *, on_invalid: str = "raise") -> None:
        one_of("raise", "skip").check("JsonLinesSource", "on_invalid", on_invalid)
        self.path = os.fspath(path)
        self.on_invalid = on_invalid
        self.invalid_lines = 0
        self.lines_read = 0
        self._start_offset = 0
        self._start_line = 0
        self._offset = 0

    def position(self) -> dict[str, int]:
        return {"offset": self._offset, "line": self.lines_read}

    def seek(self, position: Any) -> None:
        if (
            not isinstance(position, dict)
            or not isinstance(position.get("offset"), int)
            or not isinstance(position.get("line"), int)
            or position["offset"] < 0
        ):
            raise ConfigError(
                f"JsonLinesSource.seek: expected {{'offset': int, 'line': int}}, got {position!r}"
            )
        self._start_offset = self._offset = position["offset"]
        self._start_line = self.lines_read = position["line"]

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        async with await trio.open_file(self.path, "rb") as f:
            rest = b""
            lineno = self._start_line
            # Byte offset of the start of ``rest``: where the next unread line begins.
            offset = self._start_offset
            self._offset, self.lines_read = offset, lineno
            if offset:
                await f.seek(offset)
            while True:
                chunk = await f.read(self.CHUNK)
                if not chunk:
                    lines = [rest] if rest.strip() else []
                    rest = b""
                else:
                    lines = (rest + chunk).split(b"\n")
                    rest = lines.pop()
                batch: list[Any] = []
                for line in lines:
                    lineno += 1
                    offset += len(line) + 1 if chunk else len(line)
                    if not line.strip():
                        continue
                    try:
                        batch.append(orjson.loads(line))
                    except orjson.JSONDecodeError as exc:
                        if self.on_invalid == "raise":
                            if batch:
                                line_start = offset - len(line) - (1 if chunk else 0)
                                self._offset, self.lines_read = line_start, lineno - 1
                                yield batch
                            raise SerializationError(
                                f"{self.path}:{lineno}: invalid JSON line: {exc}"
                            ) from exc
                        self.invalid_lines += 1
                    if len(batch) >= chunk_size:
                        self._offset, self.lines_read = offset, lineno
                        yield batch
                        batch = []
                self._offset, self.lines_read = offset, lineno
                if batch:
                    yield batch
                if not chunk:
                    return


@hookimpl
def haive_register_sources() -> list[type[Any]]:
    return [IterableSource, AsyncIterableSource, MemorySource, JsonLinesSource]
