"""``haive replay``: a stream range by time or ID, into another stream or through a pipeline."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
import trio
from haive_plugin_redis import RedisClient
from haive_plugin_redis.replay import (
    ProgressPrinter,
    ReplayProgress,
    StreamRangeSource,
    copy_range,
    parse_position,
)

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.cli import main as haive
from haive.dataflow.errors import ConfigError
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

pytestmark = pytest.mark.redis

BASE_MS = 1_795_600_800_000  # 2026-11-25T10:00:00Z


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def fill(r: redis.Redis, stream: str, minutes: int = 10) -> None:
    """One entry per minute from 10:00 (two in the 10:05 millisecond), ``{"minute": m}``."""
    for m in range(minutes):
        ms = BASE_MS + m * 60_000
        r.xadd(stream, {"data": orjson.dumps({"minute": m})}, id=f"{ms}-0")
        if m == 5:
            r.xadd(stream, {"data": orjson.dumps({"minute": 5.5})}, id=f"{ms}-1")


def minutes(r: redis.Redis, stream: str) -> list[float]:
    return [orjson.loads(fields[b"data"])["minute"] for _, fields in r.xrange(stream)]


def test_positions() -> None:
    assert parse_position("2026-11-25T10:00:00Z") == f"{BASE_MS}-0"
    assert parse_position("2026-11-25T11:00:00+01:00") == f"{BASE_MS}-0"
    assert (
        parse_position("2026-11-25T10:00:00.250Z", end=True)
        == f"{BASE_MS + 250}-18446744073709551615"
    )
    assert parse_position(" 1732528800000-0 ") == "1732528800000-0"
    assert parse_position("+", end=True) == "+"
    for bad, reason in [
        ("yesterday", "neither an ISO-8601 time"),
        ("2026-11-25 10:00", "no time zone"),
        ("1-99999999999999999999", "sequence part is larger"),
        ("1969-12-31T23:59:59Z", "before 1970"),
        ("", "must be a time or an ID"),
    ]:
        with pytest.raises(ConfigError, match=reason):
            parse_position(bad)


async def test_copy_range_by_time_and_id(r: redis.Redis, tag: str) -> None:
    stream, copy = f"{{{tag}}}:events", f"{{{tag}}}:copy"
    fill(r, stream)
    client = RedisClient(pool_size=2)
    seen: list[ReplayProgress] = []
    try:
        progress = await copy_range(
            client,
            stream,
            copy,
            start=iso(BASE_MS + 3 * 60_000),
            end=iso(BASE_MS + 6 * 60_000),
            batch_size=2,
            on_progress=lambda p: seen.append(attrs_copy(p)),
        )
        assert minutes(r, copy) == [3, 4, 5, 5.5, 6]
        assert progress.entries == 5 and progress.done and progress.fraction == 1.0
        # Progress after each page, by share of the time span covered, then done.
        assert [p.entries for p in seen] == [2, 4, 5, 5]
        assert [round(p.fraction, 2) for p in seen[:-1]] == [0.33, 0.67, 1.0]
        # From an ID (the second entry of the 10:05 millisecond) to the end.
        r.delete(copy)
        await copy_range(client, stream, copy, start=f"{BASE_MS + 5 * 60_000}-1")
        assert minutes(r, copy) == [5.5, 6, 7, 8, 9]
        # An empty range copies nothing; a bad target or range is refused before writing.
        empty = await copy_range(client, stream, f"{{{tag}}}:none", start=iso(BASE_MS + 3600_000))
        assert empty.entries == 0 and r.exists(f"{{{tag}}}:none") == 0
        with pytest.raises(ConfigError, match="is the stream being replayed"):
            await copy_range(client, stream, stream)
        with pytest.raises(ConfigError, match="is after --to"):
            await copy_range(client, stream, copy, start="5-0", end="4-0")
        with pytest.raises(ConfigError, match="does not exist"):
            await copy_range(client, f"{{{tag}}}:missing", copy)
    finally:
        client.close()


def attrs_copy(progress: ReplayProgress) -> ReplayProgress:
    import attrs

    return attrs.evolve(progress)


def test_cli_replay_into_another_stream_with_progress(
    r: redis.Redis, tag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stream, copy = f"{{{tag}}}:events", f"{{{tag}}}:copy"
    fill(r, stream)
    code = haive(
        [
            "replay",
            stream,
            "--from",
            "2026-11-25T10:07:00Z",
            "--into",
            copy,
            "--batch-size",
            "1",
        ]
    )
    assert code == 0
    assert minutes(r, copy) == [7, 8, 9]
    err = capsys.readouterr().err
    assert f"replay {stream}: 3 entries (100%) up to {BASE_MS + 9 * 60_000}-0" in err
    assert f"replayed 3 entries of {stream} into {copy}" in err
    # Into another Redis database (as into another region's Redis), by ID range, quietly.
    target = redis.Redis.from_url("redis://127.0.0.1:6379/1")
    try:
        code = haive(
            [
                "replay",
                stream,
                "--from",
                str(BASE_MS),
                "--to",
                f"{BASE_MS + 60_000}",
                "--into",
                copy,
                "--target-url",
                "redis://127.0.0.1:6379/1",
                "--quiet",
            ]
        )
        assert code == 0
        assert minutes(target, copy) == [0, 1]
        assert "replay " not in capsys.readouterr().err.splitlines()[0]
    finally:
        target.delete(copy)
        target.close()


def test_cli_errors_are_named(r: redis.Redis, tag: str, capsys: pytest.CaptureFixture[str]) -> None:
    stream = f"{{{tag}}}:events"
    fill(r, stream, minutes=2)
    cases = [
        (["replay", stream, "--from", "2026-11-25T10:00", "--into", "x"], "no time zone"),
        (["replay", "--from", "0", "--into", "x"], "needs the STREAM to replay"),
        (
            ["replay", stream, "--from", "10-0", "--to", "9-0", "--into", f"{{{tag}}}:x"],
            "--from 10-0 is after --to 9-0",
        ),
        (["replay", f"{{{tag}}}:nope", "--from", "0", "--into", "x"], "does not exist"),
    ]
    for argv, reason in cases:
        assert haive(argv) == 2
        assert reason in capsys.readouterr().err
    with pytest.raises(SystemExit):
        haive(["replay", stream, "--from", "0"])  # neither --into nor --pipeline


PIPELINE = """
import os
from haive.dataflow.streaming import RedisStreamSource, StreamingPipeline

source = RedisStreamSource(os.environ["REPLAY_IN"], group="live", delivery=os.environ["REPLAY_DELIVERY"])
pipeline = StreamingPipeline("minutes")
pipeline.set_source(source)
pipeline.add_processor(lambda event: {"minute": event["minute"], "doubled": event["minute"] * 2})
pipeline.set_sink(source.sink(os.environ["REPLAY_OUT"]))
"""


def test_cli_replay_through_a_pipeline_leaves_consumer_groups_alone(
    r: redis.Redis,
    tag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream, out = f"{{{tag}}}:events", f"{{{tag}}}:out"
    fill(r, stream)
    r.xadd(stream, {"data": b"{broken"}, id=f"{BASE_MS + 9 * 60_000}-5")
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(PIPELINE))
    monkeypatch.setenv("REPLAY_IN", stream)
    monkeypatch.setenv("REPLAY_OUT", out)
    monkeypatch.setenv("REPLAY_DELIVERY", "at_least_once")
    code = haive(["replay", "--from", "2026-11-25T10:08:00Z", "--pipeline", str(job)])
    assert code == 0
    assert [orjson.loads(f[b"data"]) for _, f in r.xrange(out)] == [
        {"minute": 8, "doubled": 16},
        {"minute": 9, "doubled": 18},
    ]
    err = capsys.readouterr().err
    assert f"replayed 3 entries of {stream} through minutes: 2 processed, 0 failed" in err
    assert "1 undecodable skipped" in err
    assert r.xinfo_groups(stream) == []  # no consumer group was created or moved

    monkeypatch.setenv("REPLAY_DELIVERY", "exactly_once")
    assert haive(["replay", "--from", "0", "--pipeline", str(job)]) == 2
    assert "is exactly-once" in capsys.readouterr().err


async def test_stream_range_source_yields_ids_and_ends_at_the_last_entry_present(
    r: redis.Redis, tag: str
) -> None:
    stream = f"{{{tag}}}:events"
    fill(r, stream, minutes=3)
    client = RedisClient(pool_size=2)
    try:
        source = StreamRangeSource(stream, client=client, with_ids=True, batch_size=2)
        pipeline = StreamingPipeline("range")
        pipeline.set_source(source)

        def append_more(entry: object) -> object:
            # A producer keeps writing during the replay: the range still ends.
            r.xadd(stream, {"data": b'{"minute": 99}'})
            return entry

        pipeline.add_processor(append_more)
        sink = MemorySink()
        pipeline.set_sink(sink)
        with trio.fail_after(10):
            await pipeline.execute()
        assert [e.id for e in sink.items] == [f"{BASE_MS + m * 60_000}-0" for m in range(3)]
        assert [e.data["minute"] for e in sink.items] == [0, 1, 2]
        assert r.xlen(stream) == 6
    finally:
        client.close()


def test_progress_printer_throttles(capsys: pytest.CaptureFixture[str]) -> None:
    printer = ProgressPrinter(every=3600)

    async def main() -> None:
        progress = ReplayProgress("s", first_ms=0, last_ms=100)
        for n in range(5):
            progress.advance(1, f"{n * 25}-0", trio.current_time())
            printer(progress)
        progress.done = True
        printer(progress)

    trio.run(main)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("replay s: 1 entries (0%)")
    assert lines[1].startswith("replay s: 5 entries (100%) up to 100-0")
    assert len(lines) == 2
