"""A pool of worker processes that runs one picklable function over micro-batches.

Design (why not ``concurrent.futures.ProcessPoolExecutor``): every worker process is owned by
exactly one trio task, the *driver*, which is the only one to write to the worker's stdin or
read its stdout. Pipes are trio streams, so waiting for a worker costs no thread; cancelling
the pool kills the workers at once (the executor can only cancel jobs that have not started);
a worker that dies is noticed as end-of-file on its pipe, reported with its exit status, and
replaced. Workers are fresh interpreters (no ``fork`` of a process that runs trio and
threads); like multiprocessing's *spawn* method they replay the parent's ``sys.path``,
working directory and ``__main__`` module, so functions defined in the main script work (the
script needs the usual ``if __name__ == "__main__":`` guard).

A whole micro-batch travels as one pickle each way (one frame per batch, not per item), so
the per-item cost of crossing the process boundary is small next to the work.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ..errors import unwrap_node_errors
from ..runtime.pickling import PICKLE_PROTOCOL as _PROTOCOL
from ..runtime.pickling import check_picklable, describe_callable
from ..runtime.validation import NON_NEGATIVE_INT, POSITIVE_INT
from .errors import NotPicklableError, WorkerError

_HEADER = struct.Struct("<Q")
_WORKER_SCRIPT = str(Path(__file__).with_name("_worker.py"))
_READ_SIZE = 1 << 16


def _preparation_data(fn: object) -> dict[str, Any]:
    """What a worker needs to import what the parent imported (as multiprocessing's spawn).

    Besides ``sys.path``, the directory and the main module, the file of ``fn``'s module is
    passed along, so a module loaded from a path under a synthetic name (pytest's importlib
    mode, ``haive run FILE.py``) can be loaded the same way in the worker.
    """
    sys_path = list(sys.path)
    if "" in sys_path:
        sys_path[sys_path.index("")] = os.getcwd()
    data: dict[str, Any] = {"sys_path": sys_path, "sys_argv": list(sys.argv), "dir": os.getcwd()}
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    main_name = getattr(spec, "name", None)
    if main_name is not None:
        data["init_main_from_name"] = main_name
    else:
        main_path = getattr(main, "__file__", None)
        if main_path is not None:
            data["init_main_from_path"] = os.path.abspath(main_path)
    module_name = getattr(fn, "__module__", None)
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    module_file = getattr(module, "__file__", None)
    if module_name not in (None, "__main__") and isinstance(module_file, str):
        data["modules_by_path"] = {module_name: os.path.abspath(module_file)}
    return data


@attrs.define
class BatchResult:
    """What a worker sent back for one batch: values, failures and compute time.

    ``values[i]`` is the output for item ``i`` unless ``i`` is a key of ``errors``.

    Example::

        >>> r = BatchResult([2, None], {1: ValueError("bad")}, 0.001)
        >>> r.outcomes()
        [(True, 2), (False, ValueError('bad'))]
    """

    values: list[Any]
    errors: dict[int, BaseException] = attrs.field(factory=dict)
    seconds: float = 0.0

    def outcomes(self) -> list[tuple[bool, Any]]:
        """``(True, value)`` or ``(False, exception)`` per item, in input order."""
        errors = self.errors
        return [
            (False, errors[i]) if i in errors else (True, value)
            for i, value in enumerate(self.values)
        ]


def apply_inline(fn: Callable[[Any], Any], items: Sequence[Any]) -> BatchResult:
    """Call ``fn`` on every item here (used by the thread executor), failures collected.

    Example::

        >>> apply_inline(lambda x: 10 // x, [5, 0]).outcomes()[0]
        (True, 2)
    """
    import time

    started = time.perf_counter()
    values: list[Any] = []
    errors: dict[int, BaseException] = {}
    for index, item in enumerate(items):
        try:
            values.append(fn(item))
        except Exception as exc:
            values.append(None)
            errors[index] = exc
    return BatchResult(values, errors, time.perf_counter() - started)


def _pickle_items(items: Sequence[Any]) -> tuple[bytes, list[int], dict[int, BaseException]]:
    """Pickle a batch; items that cannot be pickled are left out and reported by index."""
    batch = items if isinstance(items, list) else list(items)
    try:
        return pickle.dumps(batch, _PROTOCOL), list(range(len(batch))), {}
    except Exception:
        pass
    sent: list[int] = []
    failed: dict[int, BaseException] = {}
    for index, item in enumerate(batch):
        try:
            pickle.dumps(item, _PROTOCOL)
        except Exception as exc:
            failed[index] = TypeError(
                f"item {index} of the batch ({type(item).__name__}) cannot be sent to a worker "
                f"process: {type(exc).__name__}: {exc}"
            )
        else:
            sent.append(index)
    return pickle.dumps([batch[i] for i in sent], _PROTOCOL), sent, failed


class _FrameReader:
    """Reads length-prefixed frames from a trio receive stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def read_frame(self) -> bytes | None:
        """The next frame, or ``None`` at end of stream (the worker exited)."""
        buffer = self.buffer
        while len(buffer) < _HEADER.size:
            chunk = await self.stream.receive_some(_READ_SIZE)
            if not chunk:
                return None
            buffer += chunk
        (size,) = _HEADER.unpack_from(buffer)
        end = _HEADER.size + size
        while len(buffer) < end:
            chunk = await self.stream.receive_some(max(_READ_SIZE, end - len(buffer)))
            if not chunk:
                return None
            buffer += chunk
        frame = bytes(memoryview(buffer)[_HEADER.size : end])
        del buffer[:end]
        return frame


@attrs.define(eq=False)
class _Job:
    payload: bytes
    count: int
    done: trio.Event = attrs.field(factory=trio.Event)
    result: BatchResult | None = None
    error: BaseException | None = None


@attrs.define
class PoolStats:
    """Counters of a :class:`ProcessPool`.

    Example::

        >>> PoolStats().restarts
        0
    """

    batches: int = 0
    items: int = 0
    worker_seconds: float = 0.0
    restarts: int = 0
    started_seconds: float = 0.0


class ProcessPool:
    """``workers`` processes applying ``fn`` to micro-batches; open it with :func:`open_process_pool`.

    ``await pool.map_batch(items)`` sends the whole list to one idle worker as one pickle and
    returns a :class:`BatchResult`. Calls from several tasks run on several workers at once.

    Example::

        >>> import math
        >>> async def main():
        ...     async with open_process_pool(math.factorial, workers=2) as pool:
        ...         return (await pool.map_batch([3, 4, 5])).values
        >>> trio.run(main)
        [6, 24, 120]
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        workers: int,
        *,
        name: str = "pool",
        max_restarts: int = 3,
    ) -> None:
        POSITIVE_INT.check("ProcessPool", "workers", workers)
        NON_NEGATIVE_INT.check("ProcessPool", "max_restarts", max_restarts)
        self.name = name
        self.fn = fn
        self.workers = workers
        self.max_restarts = max_restarts
        self.stats = PoolStats()
        self._function_bytes = check_picklable(fn, f"process pool {name!r}")
        self._init_frame = pickle.dumps((_preparation_data(fn), self._function_bytes), _PROTOCOL)
        self._jobs_send, self._jobs_recv = trio.open_memory_channel[_Job](0)
        self.pids: list[int] = []
        self._busy = 0

    async def map_batch(self, items: Sequence[Any]) -> BatchResult:
        """Apply the function to every item in one worker; failures are per item.

        Raises :class:`WorkerError` if the worker died while working on this batch.
        """
        payload, sent, unsent = _pickle_items(items)
        if not sent:
            return BatchResult([None] * len(items), unsent)
        job = _Job(payload, len(sent))
        await self._jobs_send.send(job)
        await job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        if not unsent:
            return job.result
        values: list[Any] = [None] * len(items)
        errors = dict(unsent)
        for position, index in enumerate(sent):
            values[index] = job.result.values[position]
            if position in job.result.errors:
                errors[index] = job.result.errors[position]
        return BatchResult(values, errors, job.result.seconds)

    async def call(self, item: Any) -> Any:
        """Apply the function to one item in a worker; raises what the function raised."""
        result = await self.map_batch([item])
        if 0 in result.errors:
            raise result.errors[0]
        return result.values[0]

    # -- workers -------------------------------------------------------------------------
    async def _spawn(self) -> tuple[trio.Process, _FrameReader]:
        started = trio.current_time()
        proc = await trio.lowlevel.open_process(
            [sys.executable, _WORKER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        reader = _FrameReader(proc.stdout)
        try:
            await proc.stdin.send_all(_HEADER.pack(len(self._init_frame)) + self._init_frame)
            frame = await reader.read_frame()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            frame = None
        except BaseException:
            with trio.CancelScope(shield=True):
                await _stop(proc, graceful=False)
            raise
        if frame is None:
            with trio.CancelScope(shield=True):
                await _stop(proc, graceful=False)
            raise WorkerError(
                f"process pool {self.name!r}: a worker process exited during start-up "
                f"(exit status {proc.returncode})"
            )
        kind, detail = pickle.loads(frame)
        if kind != "ready":
            with trio.CancelScope(shield=True):
                await _stop(proc, graceful=False)
            raise WorkerError(
                f"process pool {self.name!r}: a worker process could not load "
                f"{describe_callable(self.fn)}:\n{detail}"
            )
        self.stats.started_seconds += trio.current_time() - started
        self.pids.append(proc.pid)
        return proc, reader

    async def _drive(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own one worker process: feed it jobs one at a time, replace it if it dies."""
        proc, reader = await self._spawn()
        task_status.started()
        graceful = False
        try:
            async with self._jobs_recv.clone() as jobs:
                async for job in jobs:
                    self._busy += 1
                    try:
                        crashed = await self._run_job(proc, reader, job)
                    finally:
                        self._busy -= 1
                    job.done.set()
                    if crashed:
                        with trio.CancelScope(shield=True):
                            await _stop(proc, graceful=False)
                        if self.stats.restarts >= self.max_restarts:
                            raise WorkerError(
                                f"process pool {self.name!r}: workers died "
                                f"{self.stats.restarts + 1} times; giving up"
                            )
                        self.stats.restarts += 1
                        self.pids.remove(proc.pid)
                        proc, reader = await self._spawn()
            graceful = True
        finally:
            with trio.CancelScope(shield=True):
                await _stop(proc, graceful=graceful)

    async def _run_job(self, proc: trio.Process, reader: _FrameReader, job: _Job) -> bool:
        """Send one batch and read its result; True if the worker died meanwhile."""
        assert proc.stdin is not None
        frame: bytes | None
        try:
            await proc.stdin.send_all(_HEADER.pack(len(job.payload)))
            await proc.stdin.send_all(job.payload)
            frame = await reader.read_frame()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            frame = None
        if frame is None:
            with trio.move_on_after(1):
                await proc.wait()
            status = proc.returncode
            how = (
                f"killed by signal {-status}"
                if status is not None and status < 0
                else f"exit status {status}"
            )
            job.error = WorkerError(
                f"process pool {self.name!r}: worker process {proc.pid} died ({how}) while "
                f"processing a batch of {job.count} item(s)"
            )
            return True
        kind, detail = pickle.loads(frame)
        if kind == "batch-error":
            job.error = WorkerError(
                f"process pool {self.name!r}: the worker could not unpickle the batch:\n{detail}"
            )
            return False
        values, errors, seconds = detail
        job.result = BatchResult(values, dict(errors), seconds)
        self.stats.batches += 1
        self.stats.items += job.count
        self.stats.worker_seconds += seconds
        return False


async def _stop(proc: trio.Process, *, graceful: bool) -> None:
    """Close the worker's pipes; let it exit on end-of-input, or kill it."""
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            await stream.aclose()
    if graceful:
        with trio.move_on_after(5):
            await proc.wait()
            return
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


@asynccontextmanager
async def open_process_pool(
    fn: Callable[[Any], Any],
    workers: int,
    *,
    name: str = "pool",
    max_restarts: int = 3,
) -> AsyncIterator[ProcessPool]:
    """Start ``workers`` processes (concurrently) and yield the :class:`ProcessPool`.

    Leaving the block ends the workers: idle ones by closing their input (they exit), busy
    ones (their callers were cancelled), and all of them on cancellation or error, by
    killing them. A function that cannot
    be pickled raises :class:`NotPicklableError` before any process starts.

    Example: see :class:`ProcessPool`.
    """
    pool = ProcessPool(fn, workers, name=name, max_restarts=max_restarts)
    with unwrap_node_errors():
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as starter:
                for _ in range(workers):
                    starter.start_soon(nursery.start, pool._drive)
            try:
                yield pool
            finally:
                pool._jobs_send.close()
                pool._jobs_recv.close()
                if pool._busy:
                    # Batches whose callers are gone (cancelled): no one wants the results.
                    nursery.cancel_scope.cancel()


__all__ = [
    "BatchResult",
    "NotPicklableError",
    "ProcessPool",
    "WorkerError",
    "apply_inline",
    "check_picklable",
    "describe_callable",
    "open_process_pool",
]
