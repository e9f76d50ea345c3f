"""Built-in sinks: in-memory list, JSON-lines file, stdout, and a callback."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any

import orjson
import trio

from ..errors import ConfigError, SerializationError
from ..io.sinks import StreamSink
from ..plugins.hookspecs import hookimpl
from ..runtime.nodes import is_async_callable
from ..runtime.validation import one_of
from ..state.checkpoint import CheckpointableSink, CheckpointError


class MemorySink(StreamSink, CheckpointableSink):
    """Collects every item in ``items`` (tests, small results, notebooks).

    Example::

        >>> sink = MemorySink()
        >>> trio.run(sink.write_batch, [1, 2])
        >>> sink.items
        [1, 2]
    """

    PLUGIN_NAME = "memory"

    def __init__(self) -> None:
        self.items: list[Any] = []

    async def write_batch(self, items: list[Any]) -> None:
        self.items.extend(items)
        await trio.lowlevel.checkpoint()

    async def position(self) -> int:
        """How many items were written (checkpoints)."""
        await trio.lowlevel.checkpoint()
        return len(self.items)

    async def seek(self, position: Any) -> None:
        """Forget the items written after ``position`` (checkpoint recovery)."""
        await trio.lowlevel.checkpoint()
        del self.items[position:]


def _json_line(item: Any) -> bytes:
    try:
        return orjson.dumps(item, default=_default, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError as exc:
        raise SerializationError(f"jsonl: cannot encode {type(item).__name__}: {exc}") from exc


def _default(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


class JsonLinesSink(StreamSink, CheckpointableSink):
    """Appends one JSON value per line to a file; each batch is one write off the event loop.

    Checkpointable: the position is the file's size after a flush; ``seek(position)``
    truncates the file back to it, so a replayed run writes each output exactly once.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
        >>> async def main():
        ...     async with JsonLinesSink(path) as sink:
        ...         await sink.write_batch([{"n": 1}])
        >>> trio.run(main)
        >>> path.read_text()
        '{"n":1}\\n'
    """

    PLUGIN_NAME = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, mode: str = "ab") -> None:
        one_of("ab", "wb").check("JsonLinesSink", "mode", mode)
        self.path = os.fspath(path)
        self.mode = mode
        self._raw: Any = None

    async def open(self) -> None:
        self._raw = await trio.open_file(self.path, self.mode)

    async def write_batch(self, items: list[Any]) -> None:
        if self._raw is None:
            await self.open()
        await self._raw.write(b"".join([_json_line(item) for item in items]))

    async def aclose(self) -> None:
        if self._raw is not None:
            raw, self._raw = self._raw, None
            await raw.aclose()

    async def position(self) -> int:
        """Bytes in the file once everything written so far is flushed (checkpoints)."""
        if self._raw is not None:
            await self._raw.flush()
        try:
            return (await trio.Path(self.path).stat()).st_size
        except FileNotFoundError:
            return 0

    async def seek(self, position: Any) -> None:
        """Truncate the file to ``position`` bytes (checkpoint recovery); later opens append."""
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise ConfigError(f"JsonLinesSink.seek: expected a byte offset >= 0, got {position!r}")
        self.mode = "ab"
        if self._raw is not None:
            await self._raw.flush()
        path = trio.Path(self.path)
        size = (await path.stat()).st_size if await path.exists() else 0
        if size < position:
            raise CheckpointError(
                f"JsonLinesSink: {self.path} has {size} bytes but the checkpoint says "
                f"{position} were written: the file was truncated or replaced"
            )
        if size > position:
            await trio.to_thread.run_sync(os.truncate, self.path, position)


class StdoutSink(StreamSink):
    """Prints each item, as JSON (default) or with ``repr``.

    Example::

        >>> trio.run(StdoutSink().write, {"n": 1})
        {"n":1}
    """

    PLUGIN_NAME = "stdout"

    def __init__(self, *, format: str = "json", stream: IO[str] | None = None) -> None:
        if format not in ("json", "repr"):
            raise ConfigError(f"StdoutSink: format must be 'json' or 'repr', got {format!r}")
        self.format = format
        self.stream = stream

    async def write_batch(self, items: list[Any]) -> None:
        stream = self.stream or sys.stdout
        if self.format == "json":
            text = b"".join([_json_line(item) for item in items]).decode()
        else:
            text = "".join(f"{item!r}\n" for item in items)
        stream.write(text)
        stream.flush()
        await trio.lowlevel.checkpoint()


class CallbackSink(StreamSink):
    """Calls ``fn(item)`` (sync or async) for every item.

    Example::

        >>> seen = []
        >>> trio.run(CallbackSink(seen.append).write_batch, [1, 2])
        >>> seen
        [1, 2]
    """

    PLUGIN_NAME = "callback"

    def __init__(self, fn: Callable[[Any], Awaitable[None] | None]) -> None:
        if not callable(fn):
            raise ConfigError(f"CallbackSink needs a callable, got {fn!r}")
        self.fn = fn
        self._is_async = is_async_callable(fn)

    async def write_batch(self, items: list[Any]) -> None:
        fn = self.fn
        if self._is_async:
            for item in items:
                await fn(item)  # type: ignore[misc]
        else:
            for item in items:
                fn(item)
            await trio.lowlevel.checkpoint()


@hookimpl
def haive_register_sinks() -> list[type[Any]]:
    return [MemorySink, JsonLinesSink, StdoutSink, CallbackSink]
