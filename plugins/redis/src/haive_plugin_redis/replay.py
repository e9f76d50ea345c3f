"""Replay a Redis stream from a time or an ID: ``haive replay``, :class:`StreamRangeSource`.

Replaying reads a range of the stream with ``XRANGE``: no consumer group is involved, so
live workers are not disturbed (``haive worker --replay-from`` instead moves a whole group
back). The range ends at the last entry present when the replay starts, so a replay of a
stream that producers keep writing still ends.

* ``haive replay STREAM --from 2026-11-25T10:00:00Z --into OTHER``: copy the entries,
  fields verbatim (any codec, encrypted payloads included), to another stream, on the same
  or another Redis (``--target-url``).
* ``haive replay --from 1732528800000-0 --pipeline job.py``: run the pipeline ``job.py``
  defines with its Redis stream source replaced by the range (same codec); its processors
  and sink are used as they are.

Positions are ISO-8601 times with a time zone (``2026-11-25T10:00:00Z``,
``...+01:00``), stream IDs (``1732528800000-0``), milliseconds (``1732528800000``), or
``-`` / ``+`` for the first / last entry. ``--from`` is inclusive, ``--to`` too (a time
includes its whole millisecond).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, TextIO

import attrs
import trio
from redis.exceptions import ResponseError

from haive.dataflow.cli import Command
from haive.dataflow.errors import (
    ConfigError,
    HaiveError,
    InvalidMessageError,
    SerializationError,
)
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sources import DataSource
from haive.dataflow.pipelines.streaming_pipeline import RunReport, StreamingPipeline
from haive.dataflow.runtime.units import Duration, parse_duration

from ._resp import pack
from .client import DEFAULT_URL, RedisClient, check_url
from .streams import EntryCodec, RedisStreamSource, StreamEntry, pack_xadds

_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_MAX_SEQ = 18446744073709551615


def parse_position(text: str, *, end: bool = False) -> str:
    """A ``--from`` / ``--to`` value as an ``XRANGE`` bound.

    Example::

        >>> parse_position("2026-11-25T10:00:00Z")
        '1795600800000-0'
        >>> parse_position("2026-11-25T10:00:00Z", end=True)
        '1795600800000-18446744073709551615'
        >>> parse_position("1732528800000-3"), parse_position("1732528800000"), parse_position("-")
        ('1732528800000-3', '1732528800000-0', '-')
        >>> parse_position("2026-11-25T10:00:00")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: '2026-11-25T10:00:00' has no time zone: add Z (UTC) or an offset such as +01:00
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a stream position must be a time or an ID, got {text!r}")
    text = text.strip()
    if text in ("-", "+"):
        return text
    match = _ID.fullmatch(text)
    if match is not None:
        ms, seq = match.group(1), match.group(2)
        if seq is None:
            return f"{int(ms)}-{_MAX_SEQ if end else 0}"
        if int(seq) > _MAX_SEQ:
            raise ConfigError(f"{text!r}: the sequence part is larger than {_MAX_SEQ}")
        return f"{int(ms)}-{int(seq)}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{text!r} is neither an ISO-8601 time (2026-11-25T10:00:00Z) nor a stream ID "
            "(1732528800000-0)"
        ) from None
    if moment.tzinfo is None:
        raise ConfigError(f"{text!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    ms = int(moment.timestamp() * 1000)
    if ms < 0:
        raise ConfigError(f"{text!r} is before 1970: stream IDs start at 0")
    return f"{ms}-{_MAX_SEQ if end else 0}"


def check_range(start: str, end: str) -> None:
    """ConfigError when the XRANGE bounds ``start`` > ``end`` (an empty replay is a mistake).

    Example::

        >>> check_range("5-0", "4-0")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: replay range is empty: --from 5-0 is after --to 4-0
    """
    if start not in ("-", "+") and end not in ("-", "+") and id_key(start) > id_key(end):
        raise ConfigError(f"replay range is empty: --from {start} is after --to {end}")


def id_key(entry_id: str | bytes) -> tuple[int, int]:
    """``(ms, seq)`` of a stream ID, for comparisons.

    Example::

        >>> id_key(b"5-2") < id_key("10-0")
        True
    """
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@attrs.define
class ReplayProgress:
    """How far a replay got: entries so far, the last ID, the share of the range's time span.

    Example::

        >>> p = ReplayProgress(stream="s", first_ms=1000, last_ms=3000)
        >>> p.advance(10, "2000-0", 0.0)
        >>> round(p.fraction, 2), p.entries
        (0.5, 10)
    """

    stream: str
    first_ms: int = 0
    last_ms: int = 0
    entries: int = 0
    skipped: int = 0
    last_id: str | None = None
    started: float = 0.0
    elapsed: float = 0.0
    done: bool = False

    def advance(self, count: int, last_id: str, now: float) -> None:
        self.entries += count
        self.last_id = last_id
        self.elapsed = now - self.started

    @property
    def fraction(self) -> float:
        """Share of the range's time span covered so far (0..1)."""
        if self.done:
            return 1.0
        if self.last_id is None:
            return 0.0
        span = self.last_ms - self.first_ms
        if span <= 0:
            return 0.0
        return min(1.0, max(0.0, (id_key(self.last_id)[0] - self.first_ms) / span))

    @property
    def rate(self) -> float:
        return self.entries / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        """One human-readable progress line."""
        skipped = f", {self.skipped:,} undecodable skipped" if self.skipped else ""
        return (
            f"{self.stream}: {self.entries:,} entries ({self.fraction:.0%}) up to "
            f"{self.last_id or '-'}, {self.rate:,.0f}/s{skipped}"
        )


class ProgressPrinter:
    """Calls with a :class:`ReplayProgress` print a line at most every ``every`` seconds.

    Example::

        >>> import io
        >>> out = io.StringIO()
        >>> printer = ProgressPrinter(out, every=0)
        >>> progress = ReplayProgress("s", entries=3, last_id="5-0", done=True)
        >>> printer(progress)
        >>> out.getvalue()
        'replay s: 3 entries (100%) up to 5-0, 0/s\\n'
    """

    def __init__(self, file: TextIO | None = None, *, every: Duration = 0.5) -> None:
        self.file = file if file is not None else sys.stderr
        self.every = parse_duration(every, what="ProgressPrinter every")
        self._next = -float("inf")

    def __call__(self, progress: ReplayProgress) -> None:
        now = trio.current_time() if _in_trio() else 0.0
        if progress.done or now >= self._next:
            self._next = now + self.every
            print(f"replay {progress.line()}", file=self.file, flush=True)


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


async def _range_bounds(
    client: RedisClient, stream: str, start: str, end: str
) -> tuple[str, str] | None:
    """The IDs of the first and last entries within ``start..end`` (None when empty)."""
    kind = (await client.send(pack("TYPE", stream), 1))[0]
    if kind in (b"none", "none"):
        raise ConfigError(f"replay: stream {stream!r} does not exist")
    if kind not in (b"stream", "stream"):
        text = kind.decode() if isinstance(kind, bytes) else kind
        raise ConfigError(f"replay: key {stream!r} holds a {text}, not a stream")
    replies = await client.send(
        pack("XRANGE", stream, start, end, "COUNT", 1)
        + pack("XREVRANGE", stream, end, start, "COUNT", 1),
        2,
    )
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise ConfigError(f"replay: reading {stream!r} from {start} to {end} failed: {reply}")
    if not replies[0] or not replies[1]:
        return None
    return replies[0][0][0].decode(), replies[1][0][0].decode()


async def _ranges(
    client: RedisClient, stream: str, first: str, last: str, count: int
) -> AsyncIterator[list[Any]]:
    """XRANGE pages from ``first`` to ``last`` inclusive."""
    start = first
    while True:
        reply = (await client.send(pack("XRANGE", stream, start, last, "COUNT", count), 1))[0]
        if isinstance(reply, ResponseError):
            raise HaiveError(f"XRANGE of {stream!r} failed: {reply}")
        if reply:
            yield reply
        if len(reply) < count:
            return
        start = "(" + reply[-1][0].decode()


class StreamRangeSource(DataSource):
    """Entries ``start..end`` of a Redis stream, read with ``XRANGE`` (no consumer group).

    Items are decoded as by :class:`~haive_plugin_redis.streams.RedisStreamSource` (same
    ``codec``/``field``/``with_ids``); entries that do not decode are skipped and counted
    (``progress.skipped``). ``end="+"`` means the last entry present when the source opens.
    ``on_progress(progress)`` is called after every batch and at the end.

    Example::

        >>> import uuid
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> from haive_plugin_redis import RedisStreamSink
        >>> async def main():
        ...     client = RedisClient()
        ...     stream = f"doc-{uuid.uuid4().hex}"
        ...     await RedisStreamSink(stream, client=client).write_batch([{"n": n} for n in range(5)])
        ...     ids = [e[0].decode() for e in await client.execute("XRANGE", stream, "-", "+")]
        ...     pipeline = StreamingPipeline("replay")
        ...     pipeline.set_source(StreamRangeSource(stream, start=ids[2], client=client))
        ...     sink = MemorySink()
        ...     pipeline.set_sink(sink)
        ...     await pipeline.execute()
        ...     await client.execute("DEL", stream)
        ...     client.close()
        ...     return sink.items
        >>> trio.run(main)
        [{'n': 2}, {'n': 3}, {'n': 4}]
    """

    PLUGIN_NAME = "redis_stream_range"

    def __init__(
        self,
        stream: str,
        *,
        start: str = "-",
        end: str = "+",
        url: str = DEFAULT_URL,
        client: RedisClient | None = None,
        codec: str | Serializer = "json",
        field: str = "data",
        with_ids: bool = False,
        batch_size: int = 1000,
        on_progress: Callable[[ReplayProgress], None] | None = None,
        pool_size: int = 2,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConfigError(
                f"StreamRangeSource: stream must be a non-empty string, got {stream!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.stream = stream
        self.start = parse_position(start)
        self.end = parse_position(end, end=True)
        check_range(self.start, self.end)
        self.codec = EntryCodec(codec, field)
        self.with_ids = with_ids
        self.batch_size = batch_size
        self.on_progress = on_progress
        self._owns_client = client is None
        self.client = (
            client if client is not None else RedisClient(check_url(url), pool_size=pool_size)
        )
        self.progress = ReplayProgress(stream)
        self._bounds: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"StreamRangeSource({self.stream!r}, start={self.start!r}, end={self.end!r})"

    async def open(self) -> None:
        self._bounds = await _range_bounds(self.client, self.stream, self.start, self.end)
        self.progress = ReplayProgress(self.stream, started=trio.current_time())
        if self._bounds is not None:
            self.progress.first_ms = id_key(self._bounds[0])[0]
            self.progress.last_ms = id_key(self._bounds[1])[0]

    async def aclose(self) -> None:
        if self._owns_client:
            self.client.close()

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        if self._bounds is None:
            await self._report_done()
            return
        count = max(1, min(self.batch_size, chunk_size))
        first, last = self._bounds
        async for entries in _ranges(self.client, self.stream, first, last, count):
            items = self._decode(entries)
            self.progress.advance(len(entries), entries[-1][0].decode(), trio.current_time())
            if self.on_progress is not None:
                self.on_progress(self.progress)
            if items:
                yield items
        await self._report_done()

    async def _report_done(self) -> None:
        self.progress.done = True
        self.progress.elapsed = trio.current_time() - self.progress.started
        if self.on_progress is not None:
            self.on_progress(self.progress)
        await trio.lowlevel.checkpoint()

    def _decode(self, entries: list[Any]) -> list[Any]:
        decode = self.codec.decode
        items: list[Any] = []
        for entry_id, fields in entries:
            try:
                value = decode(fields)
            except (SerializationError, InvalidMessageError, UnicodeDecodeError):
                self.progress.skipped += 1
                continue
            items.append(StreamEntry(entry_id.decode(), value) if self.with_ids else value)
        return items


async def copy_range(
    client: RedisClient,
    stream: str,
    target: str,
    *,
    start: str = "-",
    end: str = "+",
    target_client: RedisClient | None = None,
    batch_size: int = 1000,
    maxlen: int | None = None,
    on_progress: Callable[[ReplayProgress], None] | None = None,
) -> ReplayProgress:
    """Append entries ``start..end`` of ``stream`` to ``target`` (new IDs, fields verbatim).

    ``target_client`` writes to another Redis (another region). Each page of
    ``batch_size`` entries is one pipelined write, awaited before the next page is read.

    Example::

        >>> import uuid
        >>> from haive_plugin_redis import RedisStreamSink
        >>> async def main():
        ...     client = RedisClient()
        ...     src, dst = f"doc-{uuid.uuid4().hex}", f"doc-{uuid.uuid4().hex}"
        ...     await RedisStreamSink(src, client=client).write_batch([{"n": n} for n in range(5)])
        ...     progress = await copy_range(client, src, dst, batch_size=2)
        ...     copied = await client.execute("XRANGE", dst, "-", "+")
        ...     await client.execute("DEL", src, dst)
        ...     client.close()
        ...     return progress.entries, [fields[b"data"] for _, fields in copied]
        >>> trio.run(main)
        (5, [b'{"n":0}', b'{"n":1}', b'{"n":2}', b'{"n":3}', b'{"n":4}'])
    """
    start, end = parse_position(start), parse_position(end, end=True)
    check_range(start, end)
    writer = target_client if target_client is not None else client
    if writer is client and target == stream:
        raise ConfigError(f"replay: --into {target!r} is the stream being replayed")
    kind = (await writer.send(pack("TYPE", target), 1))[0]
    if kind not in (b"stream", b"none", "stream", "none"):
        text = kind.decode() if isinstance(kind, bytes) else kind
        raise ConfigError(f"replay: target key {target!r} holds a {text}, not a stream")
    progress = ReplayProgress(stream, started=trio.current_time())
    bounds = await _range_bounds(client, stream, start, end)
    if bounds is not None:
        progress.first_ms, progress.last_ms = id_key(bounds[0])[0], id_key(bounds[1])[0]
        async for entries in _ranges(client, stream, bounds[0], bounds[1], batch_size):
            packed = pack_xadds(target, [fields for _, fields in entries], maxlen, True)
            for reply in await writer.send(packed, len(entries)):
                if isinstance(reply, ResponseError):
                    raise HaiveError(f"XADD to {target!r} failed: {reply}")
            progress.advance(len(entries), entries[-1][0].decode(), trio.current_time())
            if on_progress is not None:
                on_progress(progress)
    progress.done = True
    progress.elapsed = trio.current_time() - progress.started
    if on_progress is not None:
        on_progress(progress)
    return progress


class ReplayCommand(Command):
    """``haive replay [STREAM] --from T|ID [--to T|ID] (--into S | --pipeline FILE.py)``.

    Example::

        >>> parser = argparse.ArgumentParser(prog="haive replay")
        >>> ReplayCommand().add_arguments(parser)
        >>> args = parser.parse_args(["events", "--from", "2026-11-25T10:00:00Z", "--into", "copy"])
        >>> args.stream, args.start, args.into
        ('events', '2026-11-25T10:00:00Z', 'copy')
    """

    PLUGIN_NAME = "replay"
    help = "replay a Redis stream from a time or an ID into another stream or through a pipeline"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "stream",
            nargs="?",
            default=None,
            help="stream to replay (default with --pipeline: the stream its source reads)",
        )
        parser.add_argument(
            "--from",
            dest="start",
            required=True,
            metavar="TIME|ID",
            help="first entry: ISO time with zone (2026-11-25T10:00:00Z), ID (1732528800000-0), or -",
        )
        parser.add_argument(
            "--to",
            dest="end",
            default="+",
            metavar="TIME|ID",
            help="last entry (default: the newest)",
        )
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--into", metavar="STREAM", help="append the entries to this stream")
        target.add_argument(
            "--pipeline", metavar="FILE.py", help="run this pipeline with the range as its source"
        )
        parser.add_argument("--object", default=None, help="name of the pipeline in FILE.py")
        parser.add_argument("--url", default=None, help=f"Redis URL (default {DEFAULT_URL})")
        parser.add_argument(
            "--target-url", default=None, help="Redis URL of --into (default: --url)"
        )
        parser.add_argument("--maxlen", type=int, default=None, help="cap --into at N entries (~)")
        parser.add_argument("--batch-size", type=int, default=1000, help="entries per XRANGE page")
        parser.add_argument("--quiet", action="store_true", help="no progress lines")

    def run(self, args: argparse.Namespace) -> int:
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.maxlen is not None and args.into is None:
            raise ConfigError("--maxlen applies to --into only")
        printer: Callable[[ReplayProgress], None] | None = (
            None if args.quiet else ProgressPrinter(sys.stderr)
        )
        start = parse_position(args.start)
        end = parse_position(args.end, end=True)
        check_range(start, end)
        if args.into is not None:
            if args.stream is None:
                raise ConfigError("haive replay --into needs the STREAM to replay")
            progress = trio.run(self._copy, args, start, end, printer)
            print(
                f"replayed {progress.entries:,} entries of {args.stream} into {args.into} "
                f"in {progress.elapsed:.2f} s",
                file=sys.stderr,
            )
            return 0
        pipeline, source = self._pipeline(args, start, end, printer)
        report: RunReport = trio.run(pipeline.execute)
        print(
            f"replayed {source.progress.entries:,} entries of {source.stream} through "
            f"{pipeline.name}: {report.processed} processed, {report.failed} failed in "
            f"{report.elapsed:.2f} s",
            file=sys.stderr,
        )
        return 1 if report.failed and pipeline.dead_letter is None else 0

    async def _copy(
        self,
        args: argparse.Namespace,
        start: str,
        end: str,
        printer: Callable[[ReplayProgress], None] | None,
    ) -> ReplayProgress:
        client = RedisClient(check_url(args.url or DEFAULT_URL), pool_size=2)
        target = RedisClient(check_url(args.target_url), pool_size=2) if args.target_url else None
        try:
            return await copy_range(
                client,
                args.stream,
                args.into,
                start=start,
                end=end,
                target_client=target,
                batch_size=args.batch_size,
                maxlen=args.maxlen,
                on_progress=printer,
            )
        finally:
            client.close()
            if target is not None:
                target.close()

    def _pipeline(
        self,
        args: argparse.Namespace,
        start: str,
        end: str,
        printer: Callable[[ReplayProgress], None] | None,
    ) -> tuple[StreamingPipeline, StreamRangeSource]:
        from haive.dataflow.cli.worker import load_pipeline

        if args.target_url is not None:
            raise ConfigError("--target-url applies to --into only")
        pipeline = load_pipeline(args.pipeline, args.object)
        original = _stream_source(pipeline)
        stream = args.stream or (original.stream if original is not None else None)
        if stream is None:
            raise ConfigError(
                f"haive replay: give the STREAM to replay ({args.pipeline}'s pipeline does not "
                "read a Redis stream)"
            )
        if original is not None and original.exactly_once:
            raise ConfigError(
                f"haive replay: the pipeline of {args.pipeline} is exactly-once: its sink and "
                "state commit with its consumer-group source, which a replay replaces; replay "
                "it with delivery='at_least_once'"
            )
        options: dict[str, Any] = {}
        if original is not None:
            serializer = original.codec.serializer
            options = {
                "codec": serializer if serializer is not None else "fields",
                "field": original.codec.field,
                "with_ids": original.with_ids,
            }
        url = args.url or (original.url if original is not None else DEFAULT_URL)
        source = StreamRangeSource(
            stream,
            start=start,
            end=end,
            url=url,
            batch_size=args.batch_size,
            on_progress=printer,
            **options,
        )
        pipeline.set_source(source)
        return pipeline, source


def _stream_source(pipeline: StreamingPipeline) -> RedisStreamSource | None:
    source: Any = pipeline.source
    for _ in range(8):
        if source is None or isinstance(source, RedisStreamSource):
            return source
        source = getattr(source, "inner", None)
    return None
