"""Progress and rate display for long command-line runs (file sources, replays, benchmarks).

:class:`ProgressReporter` is both a plain counter (``update(n)``, ``wrap(iterable)``) and a
pipeline monitor (``pipeline.add_monitor(ProgressReporter(total=...))``) that reads the run's
counters on its own schedule. On a terminal it redraws one line in place; otherwise (logs, CI)
it prints a full line at most every ``log_interval`` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TextIO, TypeVar

import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration, parse_duration

from .windows import CounterWindow, as_seconds

T = TypeVar("T")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:,.0f}"


class ProgressReporter:
    """Counts done items and shows progress, rate (over the last ``rate_window`` s) and ETA.

    Example::

        >>> import io
        >>> now = [0.0]
        >>> out = io.StringIO()
        >>> progress = ProgressReporter(total=1000, label="replay", stream=out, clock=lambda: now[0])
        >>> for _ in range(4):
        ...     now[0] += 1.0
        ...     progress.update(100)
        >>> progress.line()
        'replay  400/1,000 items  40.0%  100 items/s  ETA 0:06'
        >>> progress.close()
        >>> out.getvalue().splitlines()[-1]
        'replay  400/1,000 items  40.0%  100 items/s  elapsed 0:04'
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        label: str = "",
        unit: str = "items",
        stream: TextIO | None = None,
        interval: Duration = 0.5,
        log_interval: Duration = 10.0,
        rate_window: Duration = 5.0,
        clock: Callable[[], float] | None = None,
        tty: bool | None = None,
    ) -> None:
        if total is not None and (not isinstance(total, int) or total < 0):
            raise ConfigError(f"ProgressReporter: total must be an int >= 0 or None, got {total!r}")
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = parse_duration(interval, what="ProgressReporter interval")
        self.log_interval = parse_duration(log_interval, what="ProgressReporter log_interval")
        rate_window = as_seconds(rate_window, "ProgressReporter rate_window")
        self._clock = clock or time.monotonic
        isatty = getattr(self.stream, "isatty", None)
        self.tty = tty if tty is not None else bool(isatty and isatty())
        self.count = 0
        self.started = self._clock()
        self._window = CounterWindow(rate_window, width=1, resolution=rate_window / 20)
        self._window.update(self.started, (0,))
        self._last_draw = -float("inf")
        self._drawn = False
        self._closed = False

    # -- counting ------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        """``n`` more items are done; redraws when ``interval`` has passed."""
        self.set(self.count + n)

    def set(self, count: int) -> None:
        """``count`` items are done in all."""
        now = self._clock()
        self.count = count
        self._window.update(now, (count,))
        self._maybe_draw(now)

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, counting each."""
        for item in items:
            yield item
            self.update()

    # -- figures -------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self._clock() - self.started

    @property
    def rate(self) -> float:
        """Items per second over the recent window."""
        return self._window.rate(self._clock())[0]

    def line(self, *, final: bool = False) -> str:
        """The progress line as it would be shown now."""
        parts = [self.label] if self.label else []
        if self.total is not None:
            parts.append(f"{self.count:,}/{self.total:,} {self.unit}")
            share = self.count / self.total if self.total else 1.0
            parts.append(f"{share:.1%}")
        else:
            parts.append(f"{self.count:,} {self.unit}")
        elapsed = self.elapsed
        rate = self.count / elapsed if final and elapsed > 0 else self.rate
        parts.append(f"{_rate(rate)} {self.unit}/s")
        if final:
            parts.append(f"elapsed {_duration(elapsed)}")
        elif self.total is not None and rate > 0:
            parts.append(f"ETA {_duration(max(0, self.total - self.count) / rate)}")
        return "  ".join(parts)

    # -- drawing -------------------------------------------------------------------------
    def _maybe_draw(self, now: float) -> None:
        every = self.interval if self.tty else self.log_interval
        if now - self._last_draw >= every:
            self._last_draw = now
            self.draw()

    def draw(self) -> None:
        """Show the current line now."""
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Show the final line (total count, average rate, elapsed time)."""
        if self._closed:
            return
        self._closed = True
        text = self.line(final=True)
        self.stream.write(("\r" + text + "\x1b[K\n") if self.tty else text + "\n")
        self.stream.flush()

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- as a pipeline monitor -------------------------------------------------------------
    async def monitor(self, run: Any) -> None:
        """Pipeline monitor protocol: show the run's processed + failed items until it ends."""
        try:
            while True:
                self.set(run.processed + run.failed)
                await trio.sleep(self.interval)
        finally:
            self.count = run.processed + run.failed
            self.close()
