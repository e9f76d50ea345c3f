"""``haive worker FILE.py --group G``: scale a Redis Streams pipeline out over processes.

Every worker process loads ``FILE.py``, takes the pipeline it defines (as ``haive run``
does: ``pipeline``, ``main``, ``--object NAME`` or the only pipeline in the file), joins the
source's consumer group ``G`` under a consumer name of its own and runs until the source
ends or it is stopped (SIGINT/SIGTERM stop it cleanly). ``--processes N`` starts N such
processes and supervises them; running the same command on several machines adds more.
Redis hands each entry to one consumer; pending entries of a worker that dies are claimed
by the others after the source's ``claim_idle``. Keyed state lives in Redis next to the
stream (:meth:`~haive_plugin_redis.streams.RedisStreamSource.state`), so whichever worker
gets a key's next event reads and writes that key's state: the state goes with the key.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import trio

from haive.dataflow.cli import Command, find_runnable, load_config_file
from haive.dataflow.errors import ConfigError, HaiveError, unwrap_node_errors
from haive.dataflow.io.sources import DataSource
from haive.dataflow.pipelines.streaming_pipeline import RunReport, StreamingPipeline

from .cluster import stream_client
from .streams import RedisStreamSource, reset_group


def find_stream_source(pipeline: StreamingPipeline) -> RedisStreamSource:
    """The :class:`RedisStreamSource` feeding ``pipeline`` (looking through wrappers)."""
    source: DataSource | None = pipeline.source
    seen = 0
    while source is not None and not isinstance(source, RedisStreamSource) and seen < 8:
        source = getattr(source, "inner", None)  # e.g. a checkpointing wrapper
        seen += 1
    if not isinstance(source, RedisStreamSource):
        raise ConfigError(
            f"haive worker: pipeline {pipeline.name!r} reads from "
            f"{type(pipeline.source).__name__}, not a RedisStreamSource; workers share a "
            "Redis consumer group, so the pipeline's source must be one"
        )
    return source


def load_pipeline(path: str, object_name: str | None) -> StreamingPipeline:
    """The StreamingPipeline that ``path`` defines."""
    obj = find_runnable(load_config_file(path), object_name, path)
    if not isinstance(obj, StreamingPipeline):
        raise ConfigError(
            f"haive worker: {path} must define a StreamingPipeline (got {type(obj).__name__})"
        )
    return obj


async def serve(pipeline: StreamingPipeline) -> RunReport | None:
    """Run ``pipeline`` until its source ends (its report) or SIGINT/SIGTERM (None)."""
    report: RunReport | None = None
    with (
        unwrap_node_errors(),  # a failed pipeline raises its NodeError, not a group
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
    ):
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            report = await pipeline.execute()
            nursery.cancel_scope.cancel()
    return report


def run_worker(path: str, group: str, consumer: str | None, object_name: str | None = None) -> int:
    """One worker process: load, join the group, run; prints a JSON summary to stderr.

    The summary is printed when the run fails too (with ``error``), so what was left
    pending for redelivery is always counted.
    """
    pipeline = load_pipeline(path, object_name)
    source = find_stream_source(pipeline)
    source.join(group=group, consumer=consumer)
    report: RunReport | None = None
    error: BaseException | None = None
    try:
        report = trio.run(serve, pipeline)
    except BaseException as exc:
        error = exc
        raise
    finally:
        summary: dict[str, Any] = {
            "consumer": source.consumer,
            "group": source.group,
            "stream": source.stream,
            "delivery": source.delivery,
            "stopped_by_signal": report is None and error is None,
            **attrs.asdict(source.stats),
        }
        if report is not None:
            summary.update(
                processed=report.processed, failed=report.failed, elapsed=report.elapsed
            )
        if error is not None:
            summary["error"] = f"{type(error).__name__}: {error}"
        sys.stderr.write(f"haive worker: {orjson.dumps(summary).decode()}\n")
        sys.stderr.flush()
    # Failures are in a dead-letter stream or pending for redelivery (the source's
    # on_failure), or in the pipeline's dead-letter sink: none is lost, so exit 0.
    return 0


async def supervise(commands: Sequence[Sequence[str]]) -> int:
    """Run worker processes until all exit (SIGINT/SIGTERM stop them); 0 when all did 0."""
    codes: list[int] = [0] * len(commands)

    async def child(index: int, command: Sequence[str]) -> None:
        result = await trio.run_process(list(command), check=False)
        codes[index] = result.returncode

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()  # run_process terminates the children
                    return

            async with trio.open_nursery() as children:
                for index, command in enumerate(commands):
                    children.start_soon(child, index, command)
                nursery.start_soon(stop_on_signal)
            nursery.cancel_scope.cancel()
    return 0 if all(code == 0 for code in codes) else 1


def worker_command_line(args: argparse.Namespace, consumer: str) -> list[str]:
    """The command line of one child worker process."""
    line = [sys.executable, "-m", "haive_plugin_redis.worker", args.file, "--group", args.group]
    line += ["--consumer", consumer]
    if args.object:
        line += ["--object", args.object]
    return line


class WorkerCommand(Command):
    """``haive worker FILE.py --group G [--processes N]``: consumer-group workers.

    Example::

        >>> parser = argparse.ArgumentParser(prog="haive worker")
        >>> WorkerCommand().add_arguments(parser)
        >>> args = parser.parse_args(["job.py", "--group", "g", "--processes", "3"])
        >>> args.group, args.processes
        ('g', 3)
    """

    PLUGIN_NAME = "worker"
    help = "run the Redis Streams pipeline of FILE.py as N consumer-group worker processes"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", help="Python file defining the pipeline (as for `haive run`)")
        parser.add_argument(
            "--group", required=True, help="Redis consumer group shared by all workers"
        )
        parser.add_argument(
            "--processes",
            "-n",
            type=int,
            default=1,
            help="worker processes to start here (default 1)",
        )
        parser.add_argument(
            "--consumer",
            default=None,
            help="consumer name (default host-pid-random; with -n N, NAME-1 ... NAME-N)",
        )
        parser.add_argument("--object", default=None, help="name of the pipeline in FILE")
        parser.add_argument(
            "--replay-from",
            default=None,
            metavar="ID",
            help="first move the group back to stream ID (inclusive; 0 = everything)",
        )

    def run(self, args: argparse.Namespace) -> int:
        if args.processes < 1:
            raise ConfigError(f"--processes must be >= 1, got {args.processes}")
        if args.replay_from is not None:
            source = find_stream_source(load_pipeline(args.file, args.object))
            trio.run(_reset, source.url, source.stream, args.group, args.replay_from)
        if args.processes == 1:
            return run_worker(args.file, args.group, args.consumer, args.object)
        base = args.consumer or f"{socket.gethostname()}-{os.getpid()}"
        commands = [
            worker_command_line(args, f"{base}-{index}") for index in range(1, args.processes + 1)
        ]
        return trio.run(supervise, commands)


async def _reset(url: str, stream: str, group: str, from_id: str) -> None:
    client = stream_client(url, stream, 1)  # a redis+cluster:// source: its slot's node
    try:
        await reset_group(client, stream, group, from_id)
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m haive_plugin_redis.worker``: one worker process (what ``-n`` starts)."""
    parser = argparse.ArgumentParser(prog="haive worker", description=WorkerCommand.help)
    WorkerCommand().add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return WorkerCommand().run(args)
    except HaiveError as exc:
        sys.stderr.write(f"haive worker: error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
