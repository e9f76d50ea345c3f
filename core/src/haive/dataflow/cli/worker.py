"""``haive worker FILE.py --group G``: scale a pipeline out over processes sharing a group.

Every worker process loads ``FILE.py``, takes the pipeline it defines (as ``haive run``
does: ``pipeline``, ``main``, ``--object NAME`` or the only pipeline in the file), joins the
source's group ``G`` under a consumer name of its own and runs until the source ends or it
is stopped (SIGINT/SIGTERM stop it cleanly: a
:class:`~haive.dataflow.io.groups.StoppableSource` is first asked to finish its batch and hand
over, for up to ``--grace`` seconds). ``--processes N`` starts N such processes and
supervises them; running the same command on several machines adds more.

Any source that is a :class:`~haive.dataflow.io.groups.GroupMemberSource` works: a Redis
Streams consumer group, a Kafka consumer group, a JetStream durable consumer... The broker
hands each message to one member and redelivers what a dead member left unacknowledged;
how, and what happens to keyed state, is in each plugin's README.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import trio

from ..errors import ConfigError, unwrap_node_errors
from ..io.groups import GroupMemberSource, RewindableGroup, StoppableSource, layers
from ..pipelines.streaming_pipeline import RunReport, StreamingPipeline
from ..runtime.memory import keep_freed_heap
from .main import Command, find_runnable, load_config_file


def load_pipeline(path: str, object_name: str | None) -> StreamingPipeline:
    """The StreamingPipeline that ``path`` defines."""
    obj = find_runnable(load_config_file(path), object_name, path)
    if not isinstance(obj, StreamingPipeline):
        raise ConfigError(
            f"haive worker: {path} must define a StreamingPipeline (got {type(obj).__name__})"
        )
    return obj


def group_member(pipeline: StreamingPipeline) -> GroupMemberSource:
    """The source of ``pipeline`` that joins a group (looking through wrappers)."""
    member = next((s for s in layers(pipeline.source) if isinstance(s, GroupMemberSource)), None)
    if member is None:
        raise ConfigError(
            f"haive worker: pipeline {pipeline.name!r} reads from "
            f"{type(pipeline.source).__name__}, which does not join a consumer group; workers "
            "share their input through one, so the source must be a group member (a Redis "
            "Streams, Kafka or NATS JetStream source, or another GroupMemberSource)"
        )
    return member


#: Seconds a StoppableSource gets after the first signal to hand over and end the run.
DEFAULT_GRACE = 10.0


@attrs.frozen
class Served:
    """How a worker's run ended: its report (``None`` when cancelled) and whether a signal
    stopped it (a stoppable source ends its run normally after one: both are set).

    Example::

        >>> Served(report=None, signalled=True).signalled
        True
    """

    report: RunReport | None
    signalled: bool


async def serve(pipeline: StreamingPipeline, grace: float = DEFAULT_GRACE) -> Served:
    """Run ``pipeline`` until its source ends or SIGINT/SIGTERM.

    A :class:`~haive.dataflow.io.groups.StoppableSource` is asked to stop reading on the
    first signal, and the run ends when it has handed over (or is cancelled after
    ``grace`` seconds, or on a second signal); any other run is cancelled at once.
    """
    stoppable = next((s for s in layers(pipeline.source) if isinstance(s, StoppableSource)), None)
    report: RunReport | None = None
    signalled = False
    with (
        unwrap_node_errors(),  # a failed pipeline raises its NodeError, not a group
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
    ):
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                nonlocal signalled
                async for _ in signals:
                    if stoppable is not None and not signalled:
                        signalled = True
                        stoppable.stop_reading()
                        nursery.cancel_scope.deadline = trio.current_time() + grace
                        continue
                    signalled = True
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            report = await pipeline.execute()
            nursery.cancel_scope.cancel()
    return Served(report, signalled)


def summary_of(member: GroupMemberSource, report: RunReport | None, error: BaseException | None,
               signalled: bool = False) -> dict[str, Any]:
    """The JSON line a worker prints when it stops (also when it failed)."""
    summary: dict[str, Any] = {
        **member.membership(),
        "stopped_by_signal": signalled or (report is None and error is None),
    }
    if report is not None:
        summary.update(processed=report.processed, failed=report.failed, elapsed=report.elapsed)
    if error is not None:
        summary["error"] = f"{type(error).__name__}: {error}"
    return summary


def run_worker(
    path: str,
    group: str,
    consumer: str | None,
    object_name: str | None = None,
    grace: float = DEFAULT_GRACE,
) -> int:
    """One worker process: load, join the group, run; prints a JSON summary to stderr.

    The summary is printed when the run fails too (with ``error``), so what was left
    pending for redelivery is always counted.
    """
    keep_freed_heap()  # a worker reuses the same memory every batch: no page fault per item
    pipeline = load_pipeline(path, object_name)
    member = group_member(pipeline)
    member.join(group=group, consumer=consumer)
    # What is loaded by now (modules, plugins, the pipeline: ~120,000 objects) lives as long
    # as the process. Frozen, the collector's full passes no longer walk it: they took
    # 10-15 % of a Redis Streams worker's time (0.3 of 2-3 s per 200,000 events), 2 % after.
    gc.collect()
    gc.freeze()
    served = Served(None, False)
    error: BaseException | None = None
    try:
        served = trio.run(serve, pipeline, grace)
    except BaseException as exc:
        error = exc
        raise
    finally:
        summary = summary_of(member, served.report, error, served.signalled)
        line = orjson.dumps(summary, default=_jsonable).decode()
        sys.stderr.write(f"haive worker: {line}\n")
        sys.stderr.flush()
    # Failures are dead-lettered or pending for redelivery (the source's on_failure), or in
    # the pipeline's dead-letter sink: none is lost, so exit 0.
    return 0


def _jsonable(value: object) -> object:
    if attrs.has(type(value)):
        return attrs.asdict(value)  # type: ignore[arg-type]
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


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
    line = [sys.executable, "-m", "haive.dataflow.cli", "worker", args.file]
    line += ["--group", args.group, "--consumer", consumer]
    if args.object:
        line += ["--object", args.object]
    if args.grace != DEFAULT_GRACE:
        line += ["--grace", str(args.grace)]
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
    help = (
        "run the pipeline of FILE.py as N worker processes sharing its source's consumer group "
        "(Redis Streams, Kafka, NATS JetStream...)"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", help="Python file defining the pipeline (as for `haive run`)")
        parser.add_argument(
            "--group", required=True, help="consumer group shared by all workers"
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
            "--grace",
            type=float,
            default=DEFAULT_GRACE,
            metavar="SECONDS",
            help="after SIGINT/SIGTERM, how long a source that hands over cleanly (keyed "
            f"partitions) may take to finish its batch before the run is cancelled "
            f"(default {DEFAULT_GRACE:g}; a second signal cancels at once)",
        )
        parser.add_argument(
            "--replay-from",
            default=None,
            metavar="POSITION",
            help="first move the group back to POSITION (Redis: a stream id, 0 = everything; "
            "Kafka: earliest; NATS: a stream sequence, 1 = everything)",
        )

    def run(self, args: argparse.Namespace) -> int:
        if args.processes < 1:
            raise ConfigError(f"haive worker: --processes must be >= 1, got {args.processes}")
        if not args.grace >= 0:
            raise ConfigError(f"haive worker: --grace must be >= 0 seconds, got {args.grace}")
        if args.replay_from is not None:
            trio.run(rewind_group, args.file, args.object, args.group, args.replay_from)
        if args.processes == 1:
            return run_worker(args.file, args.group, args.consumer, args.object, args.grace)
        base = args.consumer or f"{socket.gethostname()}-{os.getpid()}"
        commands = [
            worker_command_line(args, f"{base}-{index}") for index in range(1, args.processes + 1)
        ]
        return trio.run(supervise, commands)


async def rewind_group(path: str, object_name: str | None, group: str, position: str) -> None:
    """``--replay-from``: move ``group`` of the pipeline's source back to ``position``."""
    keep_freed_heap()  # a worker reuses the same memory every batch: no page fault per item
    pipeline = load_pipeline(path, object_name)
    member = group_member(pipeline)
    member.join(group=group)
    rewindable = next((s for s in layers(pipeline.source) if isinstance(s, RewindableGroup)), None)
    if rewindable is None:
        raise ConfigError(
            f"haive worker: --replay-from: {type(member).__name__} cannot move its group "
            "back to an earlier position"
        )
    await rewindable.rewind(position)
