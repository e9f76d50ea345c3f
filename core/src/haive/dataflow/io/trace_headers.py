"""Trace context in message headers: what sources read and sinks write when tracing is on.

The core does not trace (a plugin does, through
:class:`~haive.dataflow.runtime.instrumentation.RunInstrumentation`), but sources and sinks
carry the W3C Trace Context headers (``traceparent``, ``tracestate``) with their messages.
Both sides cost nothing while tracing is off:

* a **source** that reads headers with its items keeps them only after the pipeline called
  its :meth:`~haive.dataflow.io.sources.DataSource.want_trace_headers`, in a
  :class:`TraceHeaderLog` (one entry per item of the batch it just yielded, ``None`` where an
  item came without); the pipeline takes them right after each batch
  (:meth:`~haive.dataflow.io.sources.DataSource.take_trace_headers`).
* a **sink** asks :func:`outgoing_trace_headers` once per ``write_batch``: ``None`` when
  tracing is off or nothing in the batch is sampled, else one mapping (or ``None``) per item
  of the batch, to add to that item's message headers (Kafka record headers, NATS headers,
  HTTP headers) or fields (a Redis stream entry, a WebSocket message).

Example: a sink's side::

    >>> outgoing_trace_headers() is None
    True
    >>> tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    >>> with sending_trace_headers([{"traceparent": tp}, None]):
    ...     outgoing_trace_headers()[0]["traceparent"] == tp
    True
    >>> trace_headers_of({b"traceparent": tp.encode(), b"other": b"x"}) == {"traceparent": tp}
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

#: The W3C Trace Context header names (https://www.w3.org/TR/trace-context/), lower case.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADER_NAMES = (TRACEPARENT, TRACESTATE)

#: One item's trace headers: ``{"traceparent": ..., "tracestate": ...}`` (tracestate optional).
TraceHeaders = Mapping[str, str]

_outgoing: ContextVar[Sequence[TraceHeaders | None] | None] = ContextVar(
    "haive_outgoing_trace_headers", default=None
)


def outgoing_trace_headers() -> Sequence[TraceHeaders | None] | None:
    """The trace headers to send with each item of the batch the current task is writing.

    For a sink's ``write_batch``: ``None`` (nothing to add) unless tracing is on and something
    in the batch is sampled; then a sequence as long as the batch, ``None`` for items to send
    without. Call it once per batch, not per item.
    """
    return _outgoing.get()


@contextmanager
def sending_trace_headers(headers: Sequence[TraceHeaders | None] | None) -> Iterator[None]:
    """Make ``headers`` what :func:`outgoing_trace_headers` returns inside the block (the
    pipeline wraps a sink's ``write_batch`` in it; a test or a sink used alone may too)."""
    token = _outgoing.set(headers)
    try:
        yield
    finally:
        _outgoing.reset(token)


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    return None


def trace_headers_of(headers: Mapping[Any, Any] | None) -> dict[str, str] | None:
    """The trace headers among ``headers`` (str or bytes names and values, any case), or
    ``None`` when there is no ``traceparent``."""
    if not headers:
        return None
    found: dict[str, str] = {}
    for name, value in headers.items():
        key = _text(name)
        if key is None:
            continue
        key = key.lower()
        if key in TRACE_HEADER_NAMES:
            text = _text(value)
            if text is not None:
                found[key] = text
    return found if TRACEPARENT in found else None


def trace_header_pairs(
    pairs: Sequence[tuple[Any, Any]] | None,
) -> dict[str, str] | None:
    """Like :func:`trace_headers_of` for headers given as ``(name, value)`` pairs (Kafka)."""
    if not pairs:
        return None
    return trace_headers_of(dict(pairs))


class TraceHeaderLog:
    """A source's record of its items' trace headers, for the batch it yielded last.

    Off until :meth:`want` (the pipeline's call, through the source's
    ``want_trace_headers``); a source then calls :meth:`record` with one entry per item of
    each batch before yielding it, and the pipeline :meth:`take` s it right after.

    Example::

        >>> log = TraceHeaderLog()
        >>> log.wanted
        False
        >>> log.want(); log.record([None, {"traceparent": "00-..."}]); log.take()
        [None, {'traceparent': '00-...'}]
        >>> log.take() is None
        True
    """

    __slots__ = ("_batch", "wanted")

    def __init__(self) -> None:
        self.wanted = False
        self._batch: list[TraceHeaders | None] | None = None

    def want(self) -> None:
        self.wanted = True

    def record(self, headers: list[TraceHeaders | None]) -> None:
        """The headers of the next batch's items, in order (``None`` for none)."""
        self._batch = headers

    def take(self) -> list[TraceHeaders | None] | None:
        batch, self._batch = self._batch, None
        return batch
