"""A server connection's incoming frames, queued without a trio memory channel.

websockets' trio ``Assembler`` queues a connection's data frames in a memory channel: about
1.7 KB per connection (the channel's state, its two ends, a deque and the waiting tasks'
ordered dicts) before the first message, and a deep chain of suspended calls while the
reader waits. :class:`InboundFrames` is the same ``Assembler`` (the same flow control,
fragment reassembly, UTF-8 decoding, cancellation and end of stream) over a deque created
with the first queued frame and one waiting task, and lets a reader wait for the next
message without starting to read it (:meth:`InboundFrames.wait`), so that an idle
connection's reader is suspended two calls deep.
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import trio
from websockets.exceptions import ConcurrencyError, TooManyFragments
from websockets.frames import BINARY, CONT, TEXT, Frame
from websockets.trio.messages import MAX_FRAGMENTS
from websockets.typing import Data

UTF8Decoder = codecs.getincrementaldecoder("utf-8")


class _Ready:
    """An awaitable that completes at once, without a checkpoint."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()


_READY = _Ready()


class InboundFrames:
    """websockets' ``Assembler`` without a memory channel: data frames in, messages out.

    ``put(frame)`` queues a frame (the connection's reading task); ``get()`` returns the next
    message, reassembled and decoded; ``close()`` ends the stream: what is queued is still
    returned, then ``get()`` raises EOFError. Reading is paused (``pause()``) once more than
    ``high`` frames are queued and resumed (``resume()``) at ``low`` or fewer.

    Example::

        >>> import trio
        >>> from websockets.frames import CONT, TEXT, Frame
        >>> async def main():
        ...     frames = InboundFrames(16)
        ...     frames.put(Frame(TEXT, b"hello", fin=False))
        ...     frames.put(Frame(CONT, b" world"))
        ...     await frames.wait()  # a frame is queued: returns at once
        ...     print(await frames.get())
        ...     frames.close()
        ...     try:
        ...         await frames.get()
        ...     except EOFError as exc:
        ...         print(exc)
        >>> trio.run(main)
        hello world
        stream of frames ended
    """

    __slots__ = (
        "_frames",
        "_waiter",
        "closed",
        "get_in_progress",
        "high",
        "low",
        "pause",
        "paused",
        "resume",
    )

    def __init__(
        self,
        high: int | None = None,
        low: int | None = None,
        pause: Callable[[], Any] = lambda: None,
        resume: Callable[[], Any] = lambda: None,
    ) -> None:
        # The same water marks as websockets' Assembler.
        if high is not None and low is None:
            low = high // 4
        if high is None and low is not None:
            high = low * 4
        if high is not None and low is not None:
            if low < 0:
                raise ValueError("low must be positive or equal to zero")
            if high < low:
                raise ValueError("high must be greater than or equal to low")
        self.high, self.low = high, low
        self.pause = pause
        self.resume = resume
        self.paused = False
        # Created with the first frame queued: an idle connection has none.
        self._frames: deque[Frame] | None = None
        # The one task waiting for a frame (get() calls are serialized).
        self._waiter: trio.lowlevel.Task | None = None
        self.get_in_progress = False
        self.closed = False

    # -- waiting -----------------------------------------------------------------------
    def wait(self) -> Awaitable[None]:
        """Await it: returns once a frame is queued or the stream ended; it takes nothing
        from the queue. Not a checkpoint when that is so already (the next ``get()`` is).

        A function returning what to await, not a coroutine: one frame less per idle
        connection.
        """
        if self._frames or self.closed:
            return _READY
        return self._suspend()  # type: ignore[no-any-return]

    def _suspend(self) -> Any:
        if self._waiter is not None:
            raise ConcurrencyError("get() or get_iter() is already running")
        self._waiter = trio.lowlevel.current_task()
        # Returned for the caller to await: a coroutine of our own around it would be one
        # more suspended frame per idle connection.
        return trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)

    async def _receive(self) -> Frame:
        # A trio channel's receive(): always a checkpoint; queued frames are returned
        # after close() too, then the end of the stream.
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            frames = self._frames
            if frames:
                frame = frames.popleft()
                if not frames:
                    self._frames = None  # drained: an idle connection keeps no deque
                await trio.lowlevel.cancel_shielded_checkpoint()
                return frame
            if self.closed:
                raise EOFError("stream of frames ended")
            await self._suspend()

    # -- the Assembler's interface -------------------------------------------------------
    async def get(self, decode: bool | None = None) -> Data:
        """The next message (see websockets' ``Assembler.get``); EOFError once ended."""
        if self.get_in_progress:
            raise ConcurrencyError("get() or get_iter() is already running")
        self.get_in_progress = True
        try:
            frame = await self._receive()
            self.maybe_resume()
            assert frame.opcode is TEXT or frame.opcode is BINARY
            if decode is None:
                decode = frame.opcode is TEXT
            frames = [frame]
            while not frame.fin:
                try:
                    frame = await self._receive()
                except trio.Cancelled:
                    # Put the fragments back: a later get() returns the whole message.
                    if self._frames is None:
                        self._frames = deque()
                    self._frames.extendleft(reversed(frames))
                    raise
                self.maybe_resume()
                assert frame.opcode is CONT
                if len(frames) >= MAX_FRAGMENTS:
                    raise TooManyFragments(MAX_FRAGMENTS)
                frames.append(frame)
        finally:
            self.get_in_progress = False
        data = b"".join(frame.data for frame in frames)
        return data.decode() if decode else data

    def drain(self) -> list[Data]:
        """Every message queued whole now, in order (text decoded): :meth:`get_nowait`
        until it returns None, in one call. A fragmented message, or a text frame that is
        not UTF-8, stops it: they are :meth:`get`'s (through the connection's ``recv()``)."""
        messages: list[Data] = []
        frames = self._frames
        if not frames or self.get_in_progress:
            return messages
        append = messages.append
        while frames and frames[0].fin:
            frame = frames.popleft()
            data = bytes(frame.data)  # the same object when it is bytes already
            if frame.opcode is TEXT:
                try:
                    append(data.decode())
                except UnicodeDecodeError:
                    # Left for get(): the connection's recv() closes with 1007 for it.
                    frames.appendleft(frame)
                    break
            else:
                append(data)
        if not frames:
            self._frames = None
        self.maybe_resume()
        return messages

    def get_nowait(self, decode: bool | None = None) -> Data | None:
        """The next message if it is queued whole (one final frame), else None; never waits.

        A reader that got a message with :meth:`get` takes the others that arrived with it
        here: one checkpoint per batch of received data instead of two per message.
        """
        frames = self._frames
        if not frames or self.get_in_progress:
            return None
        frame = frames[0]
        if not frame.fin:
            return None  # a fragmented message: get() reassembles it
        if decode is None:
            decode = frame.opcode is TEXT
        data = bytes(frame.data)  # the same object when it is bytes already
        message: Data = data
        if decode:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                return None  # left for get(): the connection's recv() closes with 1007
        frames.popleft()
        if not frames:
            self._frames = None
        self.maybe_resume()
        return message

    async def get_iter(self, decode: bool | None = None) -> AsyncIterator[Data]:
        """The next message frame by frame (see websockets' ``Assembler.get_iter``)."""
        if self.get_in_progress:
            raise ConcurrencyError("get() or get_iter() is already running")
        self.get_in_progress = True
        try:
            frame = await self._receive()
        except trio.Cancelled:
            self.get_in_progress = False
            raise
        self.maybe_resume()
        assert frame.opcode is TEXT or frame.opcode is BINARY
        if decode is None:
            decode = frame.opcode is TEXT
        if decode:
            decoder = UTF8Decoder()
            yield decoder.decode(frame.data, frame.fin)
        else:
            yield bytes(frame.data)
        while not frame.fin:
            # As in websockets: cancelled here, the stream is stuck (ConcurrencyError).
            frame = await self._receive()
            self.maybe_resume()
            assert frame.opcode is CONT
            if decode:
                yield decoder.decode(frame.data, frame.fin)
            else:
                yield bytes(frame.data)
        self.get_in_progress = False

    def put(self, frame: Frame) -> None:
        """Queue ``frame``; EOFError once the stream ended."""
        if self.closed:
            raise EOFError("stream of frames ended")
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        frames.append(frame)
        # A trio channel hands a frame straight to a waiting receiver: that frame is not
        # counted against the high water mark. (_wake and _maybe_pause, inline: this runs
        # per received frame.)
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)
            queued = len(frames) - 1
        else:
            queued = len(frames)
        high = self.high
        if high is not None and queued > high and not self.paused:
            self.paused = True
            self.pause()

    def maybe_pause(self) -> None:
        """Pause reading if more than ``high`` frames are queued."""
        self._maybe_pause(len(self._frames) if self._frames else 0)

    def _maybe_pause(self, queued: int) -> None:
        if self.high is not None and queued > self.high and not self.paused:
            self.paused = True
            self.pause()

    def maybe_resume(self) -> None:
        """Resume reading once ``low`` or fewer frames are queued."""
        if self.low is None:
            return
        queued = len(self._frames) if self._frames else 0
        if queued <= self.low and self.paused:
            self.paused = False
            self.resume()

    def close(self) -> None:
        """End the stream of frames: what is queued is still returned, then EOFError."""
        if self.closed:
            return
        self.closed = True
        self._wake()
        # Break the reference cycle connection -> frames -> bound methods -> connection.
        self.pause = lambda: None
        self.resume = lambda: None


__all__ = ["InboundFrames"]
