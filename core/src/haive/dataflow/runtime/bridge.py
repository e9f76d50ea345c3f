"""Run blocking or asyncio-only client libraries beside trio: the one bridge of the core.

Many broker clients cannot be driven by trio itself: confluent-kafka (librdkafka) and
psycopg's synchronous API block the calling thread; nats-py and aiokafka need an asyncio
event loop. A plugin wrapping such a client opens a bridge from the trio task that owns the
client and makes every call through it:

* :func:`open_thread_bridge` gives a :class:`ThreadBridge`, for a **blocking** client: one
  dedicated OS thread, where the calls run one at a time in the order they were made (a
  librdkafka consumer must be used from one thread).
* :func:`open_asyncio_bridge` gives an :class:`AsyncioBridge`, for an **asyncio-only**
  client: one asyncio event loop running in one thread. ``run`` awaits a coroutine function
  there; ``stream`` carries what an async generator yields (batches) to trio through a
  bounded buffer, so a slow pipeline stops the generator, and through it the broker fetch.

Why the core has one bridge and plugins never start threads or event loops of their own:

* **Structured lifetime.** A bridge belongs to the trio task that opened it. Leaving the
  ``async with`` block stops its thread (an asyncio bridge first cancels its pending asyncio
  tasks and closes its loop) and joins it, so no thread outlives its pipeline, even when the
  block is left by cancellation or an error.
* **Cancellation crosses over.** A cancelled trio caller of :meth:`AsyncioBridge.run`
  cancels the asyncio task and waits until it has finished cancelling. A blocking call
  cannot be interrupted, so :meth:`ThreadBridge.run` waits for it to return by default (give
  clients short timeouts), or leaves it running with ``abandon=True``.
* **Errors cross over unchanged**: the caller gets the very exception the call raised, with
  a note naming the bridge's thread. Use after close raises
  :class:`~haive.dataflow.errors.BridgeClosedError`.
* **Cheap per event.** Each crossing costs one thread hand-off each way (tens of
  microseconds); a call or a stream item should carry a batch, so the cost per event is a
  small fraction of that.

Example::

    >>> import asyncio, trio
    >>> async def fetch(n):                      # an asyncio client's coroutine
    ...     await asyncio.sleep(0)
    ...     return list(range(n))
    >>> async def batches(count):                # an asyncio client's stream of batches
    ...     for start in range(0, count, 3):
    ...         yield list(range(start, min(start + 3, count)))
    >>> async def main():
    ...     async with open_thread_bridge(name="blocking") as thread:
    ...         print(await thread.run(sum, [1, 2, 3]))
    ...     async with open_asyncio_bridge(name="asyncio") as loop:
    ...         print(await loop.run(fetch, 3))
    ...         async with loop.stream(batches, 7, max_buffered=2) as stream:
    ...             print([batch async for batch in stream])
    >>> trio.run(main)
    6
    [0, 1, 2]
    [[0, 1, 2], [3, 4, 5], [6]]
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Generic, TypeVar, TypeVarTuple

import trio

from ..errors import BridgeClosedError, ConfigError

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def _check_name(function: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{function}(name={name!r}): name must be a non-empty string")
    return name


class _Outcome(Generic[T]):
    """The result of one call: set in the bridge's thread, read by the trio caller once
    ``done`` is set (the event is set through the trio token, in trio's thread)."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def unwrap(self, thread_name: str) -> T:
        if self.error is not None:
            error, self.error = self.error, None  # no reference cycle through the traceback
            error.add_note(f"(raised in the bridge thread {thread_name!r})")
            raise error
        return self.value  # type: ignore[return-value]  # T itself may include None


class _Bridge(abc.ABC):
    """What both bridges share: the thread, its trio token, and closing."""

    kind = "bridge"
    opener = "open_bridge"

    def __init__(self, name: str) -> None:
        self.name = name
        self.thread_name = f"haive-{self.kind}-bridge-{name}"
        self._token = trio.lowlevel.current_trio_token()
        self._closed = False
        self._exited = trio.Event()
        # A daemon thread, so that an interpreter torn down abnormally is not held up by it;
        # the normal path always joins it when the bridge closes.
        self._thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)

    @property
    def closed(self) -> bool:
        """Whether the bridge was closed (its ``async with`` block was left)."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise BridgeClosedError(
                f"{self.kind} bridge {self.name!r} (thread {self.thread_name!r}) is closed: "
                f"use it inside its `async with {self.opener}(...)` block"
            )

    def _closed_error(self) -> BridgeClosedError:
        return BridgeClosedError(
            f"{self.kind} bridge {self.name!r} (thread {self.thread_name!r}) closed before "
            "the call finished"
        )

    def _notify(self, outcome: _Outcome[Any]) -> None:
        """From the bridge's thread: wake the trio caller waiting on ``outcome``."""
        self._token.run_sync_soon(outcome.done.set)

    @abc.abstractmethod
    def _serve(self) -> None:
        """The thread's body; sets ``_exited`` (through the token) as its last act."""

    @abc.abstractmethod
    def _stop(self) -> None:
        """Ask the thread to finish (called once, from trio, after ``_closed`` is set)."""

    async def _close(self) -> None:
        self._closed = True
        if self._thread.ident is None:
            return  # never started
        self._stop()
        with trio.CancelScope(shield=True):
            await self._exited.wait()
        self._thread.join()  # it has signalled its exit: returns at once


class _ThreadCall(_Outcome[T]):
    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        super().__init__()
        self.fn = fn
        self.args = args


class PendingCall(Generic[T]):
    """A call handed to a :class:`ThreadBridge` with :meth:`ThreadBridge.submit`: it runs in
    the bridge's thread while the trio task goes on; :meth:`result` waits for it.

    A pending call nobody waits for still runs (in order, before the calls made after it)
    and its result or error is dropped; it cannot outlive its bridge, which finishes the
    running call and joins its thread when it closes.

    Example::

        >>> import trio
        >>> async def main():
        ...     async with open_thread_bridge(name="ahead") as bridge:
        ...         pending = bridge.submit(sum, [1, 2, 3])   # runs while we go on
        ...         return await pending.result()
        >>> trio.run(main)
        6
    """

    __slots__ = ("_call", "_thread_name")

    def __init__(self, call: _ThreadCall[T], thread_name: str) -> None:
        self._call = call
        self._thread_name = thread_name

    @property
    def done(self) -> bool:
        """Whether the call has returned (or raised)."""
        return self._call.done.is_set()

    async def result(self) -> T:
        """Wait for the call and return what it returned (or raise what it raised). Like
        :meth:`ThreadBridge.run`, a cancelled caller waits for the call to return and gets
        its result: the cancellation is seen at the caller's next checkpoint (a loop of
        ``submit``/``result`` needs one of its own, e.g.
        ``trio.lowlevel.checkpoint_if_cancelled()``)."""
        with trio.CancelScope(shield=True):
            await self._call.done.wait()
        return self._call.unwrap(self._thread_name)


class ThreadBridge(_Bridge):
    """One dedicated OS thread running blocking calls one at a time, in order.

    Opened by :func:`open_thread_bridge`, owned by the trio task that opened it. Calls from
    several trio tasks queue up and run one after another in the order they were made.

    Example::

        >>> import threading, trio
        >>> async def main():
        ...     async with open_thread_bridge(name="demo") as bridge:
        ...         return await bridge.run(lambda: threading.current_thread().name)
        >>> trio.run(main)
        'haive-thread-bridge-demo'
    """

    kind = "thread"
    opener = "open_thread_bridge"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._calls: queue.SimpleQueue[_ThreadCall[Any] | None] = queue.SimpleQueue()
        self._stopping = threading.Event()  # read in the thread: start no queued call

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts, abandon: bool = False) -> T:
        """Call ``fn(*args)`` in the bridge's thread and return what it returns.

        A cancelled caller waits for the call to return (its result is then returned and the
        cancellation is seen at the caller's next checkpoint), unless ``abandon=True``: then
        the caller is cancelled at once and the call finishes unobserved in the thread.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        call: _ThreadCall[T] = _ThreadCall(fn, args)
        self._calls.put(call)
        if abandon:
            await call.done.wait()
        else:
            with trio.CancelScope(shield=True):
                await call.done.wait()
        return call.unwrap(self.thread_name)

    def submit(self, fn: Callable[[*Ts], T], *args: *Ts) -> PendingCall[T]:
        """Queue ``fn(*args)`` for the bridge's thread and return at once, without a
        checkpoint; ``await pending.result()`` later. This lets a task overlap the call with
        its own work, e.g. a source fetching its next batch while the pipeline handles the
        current one (one crossing, no waiting on the thread hand-off)."""
        self._check_open()
        call: _ThreadCall[T] = _ThreadCall(fn, args)
        self._calls.put(call)
        return PendingCall(call, self.thread_name)

    def _serve(self) -> None:
        try:
            while (call := self._calls.get()) is not None:
                if self._stopping.is_set():
                    call.error = self._closed_error()
                else:
                    try:
                        call.value = call.fn(*call.args)
                    except BaseException as error:  # handed to the caller, raised there
                        call.error = error
                self._notify(call)
        finally:
            self._token.run_sync_soon(self._exited.set)

    def _stop(self) -> None:
        self._stopping.set()
        self._calls.put(None)


@asynccontextmanager
async def open_thread_bridge(*, name: str = "blocking") -> AsyncIterator[ThreadBridge]:
    """Open a :class:`ThreadBridge`: its thread starts now and is joined when the block is
    left (after the call it is running returns; calls still queued fail with
    :class:`~haive.dataflow.errors.BridgeClosedError`).

    Example::

        >>> import time, trio
        >>> async def main():
        ...     async with open_thread_bridge(name="sleeper") as bridge:
        ...         await bridge.run(time.sleep, 0.01)
        ...     return bridge.closed
        >>> trio.run(main)
        True
    """
    bridge = ThreadBridge(_check_name("open_thread_bridge", name))
    bridge._thread.start()
    try:
        yield bridge
    finally:
        await bridge._close()


class _AsyncioCall(_Outcome[T]):
    """One coroutine call, run as an asyncio task in the bridge's loop."""

    __slots__ = ("args", "bridge", "cancel_requested", "fn", "task")

    def __init__(
        self, bridge: AsyncioBridge, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
    ) -> None:
        super().__init__()
        self.bridge = bridge
        self.fn = fn
        self.args = args
        self.task: asyncio.Task[T] | None = None
        self.cancel_requested = False

    # The methods below run in the bridge's thread, in the order they were scheduled
    # (call_soon_threadsafe is first in, first out): start always runs before cancel.

    def start(self) -> None:
        if self.bridge._closing:
            self.error = self.bridge._closed_error()
            self.bridge._notify(self)
            return
        self.task = self.bridge._loop.create_task(self._invoke())
        self.task.add_done_callback(self._finished)

    async def _invoke(self) -> T:
        return await self.fn(*self.args)

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.task is not None:
            self.task.cancel()

    def _finished(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            if not self.cancel_requested:  # not the caller's doing: the loop is closing
                self.error = (
                    self.bridge._closed_error()
                    if self.bridge._closing
                    else asyncio.CancelledError()
                )
        elif (error := task.exception()) is not None:
            self.error = error
        else:
            self.value = task.result()
        self.bridge._notify(self)


class _StreamEnd:
    """The last message of a stream: the generator's error, or None when it was exhausted."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class BridgeStream(Generic[T]):
    """What an async generator in an :class:`AsyncioBridge` yields, delivered to trio.

    Made by :meth:`AsyncioBridge.stream`; an async context manager whose ``async for`` gives
    the items in order. At most ``max_buffered`` items are produced and not yet taken by
    trio: the generator is not resumed past that until trio takes one (backpressure). An
    error of the generator is raised by the ``async for``. Leaving the block cancels the
    generator's task and waits for it; a generator that swallows the cancellation (some
    asyncio libraries do) is not resumed after its current step.

    Example::

        >>> import trio
        >>> async def numbers():
        ...     for n in range(5):
        ...         yield n
        >>> async def main():
        ...     async with open_asyncio_bridge(name="numbers") as bridge:
        ...         async with bridge.stream(numbers, max_buffered=1) as stream:
        ...             return [n async for n in stream]
        >>> trio.run(main)
        [0, 1, 2, 3, 4]
    """

    def __init__(
        self,
        bridge: AsyncioBridge,
        agen_fn: Callable[..., AsyncIterator[T]],
        args: tuple[Any, ...],
        max_buffered: int,
    ) -> None:
        self._bridge = bridge
        self._agen_fn = agen_fn
        self._args = args
        # Items in the channel never exceed max_buffered (the permits below), plus the end.
        self._send, self._receive = trio.open_memory_channel[T | _StreamEnd](max_buffered + 1)
        # Created here, used only in the loop (asyncio primitives bind to a loop on first use).
        self._permits = asyncio.Semaphore(max_buffered)
        self._call: _AsyncioCall[None] | None = None
        self._ended = False
        # Set in the loop when the consumer leaves: the producer stops at its next step even
        # if the generator swallowed the cancellation (see _stop_producing).
        self._stopping = False

    async def __aenter__(self) -> BridgeStream[T]:
        self._call = await self._bridge._submit(self._produce, ())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._ended = True
        self._receive.close()
        if self._call is not None:
            await self._bridge._cancel_and_wait(self._call, cancel=self._stop_producing)

    def __aiter__(self) -> BridgeStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._ended:
            raise StopAsyncIteration
        message = await self._receive.receive()
        if isinstance(message, _StreamEnd):
            self._ended = True
            if message.error is not None:
                message.error.add_note(
                    f"(raised in the bridge thread {self._bridge.thread_name!r})"
                )
                raise message.error
            raise StopAsyncIteration
        with contextlib.suppress(RuntimeError):  # loop closed: nothing left to resume
            self._bridge._loop.call_soon_threadsafe(self._permits.release)
        return message

    def _stop_producing(self) -> None:
        """In the loop, when the consumer left: stop the producer at its next step.

        Cancelling its task is not enough: an asyncio library can swallow a cancellation
        (nats-py's pull ``fetch`` on Python 3.11 does, about one time in 25, when a reply
        is already queued as the cancellation arrives: ``asyncio.wait_for`` then returns the
        reply), and the generator then goes on as if nothing happened. The producer would
        fetch on until the permits ran out and wait for one forever, with the consumer
        waiting for it to end: a hang. So the flag is set with the cancellation, in the
        same callback, and the producer stops when the generator returns to it, whatever it did with the
        cancellation.
        """
        self._stopping = True
        if self._call is not None:
            self._call.cancel()

    async def _produce(self) -> None:
        """In the loop: pull the generator one permit at a time, hand each item to trio."""
        agen = self._agen_fn(*self._args)
        try:
            while not self._stopping:
                await self._permits.acquire()
                try:
                    item = await anext(agen)
                except StopAsyncIteration:
                    break
                if self._stopping:
                    break  # produced after a swallowed cancellation: nobody takes it
                self._deliver(item)
        except Exception as error:  # the consumer raises it; CancelledError means it left
            self._deliver(_StreamEnd(error))
            return
        finally:
            if isinstance(agen, AsyncGenerator):
                await agen.aclose()
        self._deliver(_StreamEnd(None))

    def _deliver(self, message: T | _StreamEnd) -> None:
        self._bridge._token.run_sync_soon(self._put, message)

    def _put(self, message: T | _StreamEnd) -> None:  # in trio's thread
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait(message)


class AsyncioBridge(_Bridge):
    """One asyncio event loop in one thread, for asyncio-only clients (nats-py, aiokafka).

    Opened by :func:`open_asyncio_bridge`, owned by the trio task that opened it. Create the
    client through :meth:`run` too (``await bridge.run(nats.connect, url)``) so it belongs to
    the bridge's loop.

    Example::

        >>> import asyncio, trio
        >>> async def main():
        ...     async with open_asyncio_bridge(name="demo") as bridge:
        ...         return await bridge.run(asyncio.sleep, 0, "slept in asyncio")
        >>> trio.run(main)
        'slept in asyncio'
    """

    kind = "asyncio"
    opener = "open_asyncio_bridge"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._loop = asyncio.new_event_loop()
        self._closing = False  # read in the loop: start no new task

    async def run(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """Await ``fn(*args)`` as a task of the bridge's loop and return its result.

        Cancelling the trio caller cancels the task and waits until it has finished (its
        ``finally`` blocks ran); the caller then sees ``trio.Cancelled``. An exception the
        task raises is raised here unchanged.
        """
        call = await self._submit(fn, args)
        try:
            await call.done.wait()
        except trio.Cancelled:
            await self._cancel_and_wait(call)
            raise
        return call.unwrap(self.thread_name)

    def stream(
        self,
        agen_fn: Callable[[*Ts], AsyncIterator[T]],
        *args: *Ts,
        max_buffered: int = 8,
    ) -> BridgeStream[T]:
        """Run ``agen_fn(*args)`` (an async generator) in the loop; ``async with`` the result
        and ``async for`` over it in trio (see :class:`BridgeStream`)."""
        if isinstance(max_buffered, bool) or not isinstance(max_buffered, int) or max_buffered < 1:
            raise ConfigError(
                f"AsyncioBridge.stream(max_buffered={max_buffered!r}): "
                "must be an integer >= 1 (items produced and not yet taken)"
            )
        self._check_open()
        return BridgeStream(self, agen_fn, args, max_buffered)

    async def _submit(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
    ) -> _AsyncioCall[T]:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        call: _AsyncioCall[T] = _AsyncioCall(self, fn, args)
        self._loop.call_soon_threadsafe(call.start)
        return call

    async def _cancel_and_wait(
        self, call: _AsyncioCall[Any], cancel: Callable[[], None] | None = None
    ) -> None:
        """Cancel ``call``'s task (with ``cancel`` in the loop if given, which must call
        ``call.cancel()``) and wait until it has finished."""
        with trio.CancelScope(shield=True):
            if not call.done.is_set():
                with contextlib.suppress(RuntimeError):  # loop closed: the call is done
                    self._loop.call_soon_threadsafe(cancel or call.cancel)
                await call.done.wait()
        call.error = None  # the caller was cancelled or left: its outcome is not wanted

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            self._token.run_sync_soon(self._exited.set)

    def _stop(self) -> None:
        def stop() -> None:  # in the loop, after every callback scheduled before it
            self._closing = True
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)


@asynccontextmanager
async def open_asyncio_bridge(*, name: str = "asyncio") -> AsyncIterator[AsyncioBridge]:
    """Open an :class:`AsyncioBridge`: its loop starts running in its thread now; when the
    block is left its pending tasks are cancelled (and awaited), the loop is closed and the
    thread joined.

    Example::

        >>> import asyncio, trio
        >>> async def main():
        ...     async with open_asyncio_bridge(name="demo") as bridge:
        ...         await bridge.run(asyncio.sleep, 0)
        ...     return bridge.closed
        >>> trio.run(main)
        True
    """
    bridge = AsyncioBridge(_check_name("open_asyncio_bridge", name))
    try:
        bridge._thread.start()
    except BaseException:
        bridge._loop.close()
        raise
    try:
        yield bridge
    finally:
        await bridge._close()
