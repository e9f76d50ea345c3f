"""Webhook source: an HTTP server in the pipeline's worker, turning POSTs into events.

The server is Hypercorn's trio worker (``hypercorn.trio.serve``) serving a Starlette app,
run by :meth:`WebhookSource.serving` in a nursery of the task that enters it (``haive run``
enters it for you): no thread, no event loop of its own. It is not started by the
source's ``open``, because a nursery opened there would have to be closed by ``aclose``,
which the pipeline calls inside a shielded cancel scope nested in it (trio forbids
exiting a nursery from inside a scope opened after it). What the
endpoint checks and answers is in :mod:`haive_plugin_http.endpoint`.

**Backpressure.** Accepted events wait in a bounded buffer (``buffer_size`` events,
:class:`~haive_plugin_http.intake.Intake`) until the pipeline takes them; when it is full
the endpoint answers 429 with ``Retry-After``, so callers back off. Nothing queues
unbounded: a slow pipeline is felt by the senders.

**When the answer is 2xx.** ``ack="accepted"`` (default): 202 once the request's events are
in the buffer (an acceptance, not a write: a worker killed before the pipeline wrote them
loses them, as any in-memory queue would). ``ack="written"``: the source takes part in the
core's acknowledgment protocol (:attr:`DataSource.acknowledges`) and answers 200 only after
the pipeline wrote every event of the request (the sink's ``write_batch`` returned, or the
event went to the dead-letter sink, or was filtered out); a caller that got a 2xx never
loses its events, one that did not may retry (at least once, so duplicates are possible).

**Shutdown.** :meth:`WebhookSource.stop` stops accepting (new requests get 503, the listener
closes), lets the pipeline drain what was accepted and ends the source: the pipeline then
finishes, and in "written" mode answers the waiting requests before the server stops.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.routing import Route

from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.io.sources import DataSource
from haive.dataflow.io.trace_headers import TraceHeaderLog, trace_headers_of
from haive.dataflow.runtime.results import Result
from haive.dataflow.runtime.units import Duration
from haive.dataflow.runtime.validation import (
    BOOL,
    POSITIVE_INT,
    duration,
    integer,
    one_of,
    size,
)

from .auth import Authenticator, check_auth
from .endpoint import Endpoint
from .event import WebhookEvent
from .intake import Intake, Ticket

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

ACK_MODES = ("accepted", "written")
OWNER = "WebhookSource"
logger = logging.getLogger("haive_plugin_http.source")


class WebhookServerError(HaiveError):
    """The webhook server could not start (port taken, bad certificate...), or the source
    is used without it.

    Example::

        >>> import trio
        >>> trio.run(WebhookSource(port=0).open)
        Traceback (most recent call last):
        ...
        haive_plugin_http.source.WebhookServerError: WebhookSource(...) is not serving: run the pipeline inside `async with source.serving():` (`haive run` does it, unless HAIVE_NO_SERVICES is set)
    """


@attrs.define
class WebhookSourceStats:
    """What a :class:`WebhookSource` did, counted per :meth:`WebhookSource.serving`.

    Example::

        >>> stats = WebhookSourceStats()
        >>> stats.accepted, stats.refused_full
        (0, 0)
    """

    requests: int = 0
    accepted: int = 0  # events accepted into the buffer
    batches: int = 0  # batches the pipeline took from it (accepted / batches: their size)
    acknowledged: int = 0  # events the pipeline reported handled ("written" mode)
    refused_auth: int = 0
    refused_content_type: int = 0
    refused_too_large: int = 0
    refused_malformed: int = 0
    refused_full: int = 0  # 429: the buffer was full
    refused_stopping: int = 0
    answered_written: int = 0  # "written" mode: 200
    answered_failed: int = 0  # "written" mode: 422, some events failed in the pipeline
    answered_not_written: int = 0  # "written" mode: 503, the source stopped first
    answered_timeout: int = 0  # "written" mode: 504 after ack_timeout
    untraced_failures: int = 0  # failures reported by the pipeline for derived items
    dropped_on_close: int = 0  # accepted, still buffered when the source was cancelled


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _paths(value: object) -> tuple[str, ...]:
    paths = (value,) if isinstance(value, str) else value
    if (
        not isinstance(paths, Sequence)
        or not paths
        or not all(isinstance(p, str) and p.startswith("/") for p in paths)
    ):
        raise ConfigError(
            f"{OWNER}(path={value!r}): path must be a path starting with '/' or a list "
            f"of them, got {value!r}"
        )
    return tuple(paths)


def _content_types(value: object) -> tuple[str, ...]:
    types = (value,) if isinstance(value, str) else value
    if (
        not isinstance(types, Sequence)
        or not types
        or not all(isinstance(t, str) and t.count("/") == 1 for t in types)
    ):
        raise ConfigError(
            f"{OWNER}(content_types={value!r}): content_types must be media types such as "
            f"'application/json', got {value!r}"
        )
    return tuple(t.lower() for t in types)


def _file(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not os.path.isfile(value):
        raise ConfigError(f"{OWNER}({name}={value!r}): {name} must be an existing file")
    return os.fspath(value)


class WebhookSource(DataSource):
    """Receives webhooks on ``http://host:port/path`` (HTTPS with ``certfile``) as events.

    Every POST carries one event (a JSON value) or, as a JSON array, a batch of them
    (``split_arrays=False`` keeps arrays whole); each becomes a
    :class:`~haive_plugin_http.event.WebhookEvent` with the path, headers, query, peer
    address and receive time. ``auth`` is a :class:`~haive_plugin_http.auth.BearerToken` or
    :class:`~haive_plugin_http.auth.HmacSignature` (None: anyone who reaches the port).
    ``port=0`` takes a free port: :attr:`url` says which once the source is open.

    Example::

        >>> import httpx, trio
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
        >>> async def main():
        ...     source = WebhookSource(port=0, path="/hooks", ack="written")
        ...     pipeline = StreamingPipeline("hooks")
        ...     pipeline.set_source(source)
        ...     pipeline.add_processor(lambda event: event.data["n"] * 10)
        ...     sink = MemorySink()
        ...     pipeline.set_sink(sink)
        ...     async with source.serving(), trio.open_nursery() as nursery:
        ...         nursery.start_soon(pipeline.execute)
        ...         async with httpx.AsyncClient() as client:
        ...             one = await client.post(source.url, json={"n": 1})
        ...             two = await client.post(source.url, json=[{"n": 2}, {"n": 3}])
        ...         source.stop()
        ...     return one.status_code, two.json(), sink.items
        >>> trio.run(main)
        (200, {'written': 2}, [10, 20, 30])
    """

    PLUGIN_NAME = "webhook"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        path: str | Sequence[str] = "/webhook",
        auth: Authenticator | None = None,
        content_types: str | Sequence[str] = ("application/json",),
        split_arrays: bool = True,
        max_body_size: int | str = "1MB",
        buffer_size: int = 10_000,
        ack: str = "accepted",
        ack_every: int = 1_000,
        ack_timeout: Duration = "30s",
        retry_after: Duration = "1s",
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        graceful_timeout: Duration = "10s",
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ConfigError(f"{OWNER}(host={host!r}): host must be an address or host name")
        self.host = host
        self.port = integer(0, 65535).check(OWNER, "port", port)
        self.paths = _paths(path)
        self.auth = check_auth(OWNER, auth)
        self.content_types = _content_types(content_types)
        self.split_arrays = BOOL.check(OWNER, "split_arrays", split_arrays)
        self.max_body_size = size(OWNER, "max_body_size", max_body_size)
        self.buffer_size = POSITIVE_INT.check(OWNER, "buffer_size", buffer_size)
        self.ack = one_of(*ACK_MODES).check(OWNER, "ack", ack)
        self.ack_every = POSITIVE_INT.check(OWNER, "ack_every", ack_every)
        self.ack_timeout = duration(OWNER, "ack_timeout", ack_timeout)
        self.retry_after = duration(OWNER, "retry_after", retry_after)
        self.certfile = _file("certfile", certfile)
        self.keyfile = _file("keyfile", keyfile)
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError(
                f"{OWNER}(certfile={certfile!r}, keyfile={keyfile!r}): HTTPS needs both "
                "certfile and keyfile"
            )
        self.graceful_timeout = duration(OWNER, "graceful_timeout", graceful_timeout,
                                         positive=False)
        #: True in "written" mode: the pipeline calls :meth:`acknowledge` after writing.
        self.acknowledges = self.ack == "written"
        self.stats = WebhookSourceStats()
        #: Set once the server listens (then :attr:`url` is known).
        self.started = trio.Event()
        self.intake: Intake | None = None
        self._bound_port: int | None = None
        self._stopping = trio.Event()
        # "written" mode: the events yielded and not yet acknowledged, oldest first, and
        # each one's ticket and index in its request (failures are traced through it).
        self._unacked: deque[WebhookEvent] = deque()
        self._ticket_of: dict[int, Ticket] = {}
        #: Each yielded event's trace headers, kept only while tracing is on.
        self._trace_log = TraceHeaderLog()

    def __repr__(self) -> str:
        return (
            f"WebhookSource(host={self.host!r}, port={self.port!r}, path={self.paths!r}, "
            f"ack={self.ack!r})"
        )

    @property
    def url(self) -> str:
        """The first endpoint's URL (with the real port once open, for ``port=0``)."""
        scheme = "https" if self.certfile else "http"
        port = self._bound_port if self._bound_port is not None else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{port}{self.paths[0]}"

    def stop(self) -> None:
        """Stop accepting (503 from now on), let the pipeline drain what was accepted, and
        end the source; in "written" mode the waiting requests are answered when the
        pipeline wrote their events (the server stops when :meth:`serving` is left)."""
        if self.intake is not None:
            self.intake.close()

    # -- lifecycle ----------------------------------------------------------------------
    def _server_config(self) -> HypercornConfig:
        config = HypercornConfig()
        host = f"[{self.host}]" if ":" in self.host else self.host
        config.bind = [f"{host}:{self.port}"]
        config.graceful_timeout = self.graceful_timeout
        config.accesslog = None
        config.errorlog = logging.getLogger("haive_plugin_http.server")
        if self.certfile is not None:
            config.certfile = self.certfile
            config.keyfile = self.keyfile
        return config

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Run the HTTP server (in a nursery of the calling task) for the duration of the
        block; yields :attr:`url`. ``haive run`` enters it for you (the plugin's
        ``haive_run_services``); a program runs its pipeline inside it.

        Leaving the block stops accepting and ends the server after the graceful wait
        (``graceful_timeout``) for requests in flight.
        """
        if self.intake is not None:
            raise WebhookServerError(f"{self!r} is already serving")
        self.stats = WebhookSourceStats()
        self.intake = Intake(self.buffer_size)
        self._stopping = trio.Event()
        self.started = trio.Event()
        endpoint = Endpoint(self)
        app = Starlette(routes=[Route(p, endpoint.handle, methods=["POST"]) for p in self.paths])
        try:
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(self._serve, app, self._server_config())
                self._bound_port = int(str(binds[0]).rsplit(":", 1)[1])
                self.started.set()
                logger.info("webhook source listening on %s", self.url)
                try:
                    yield self.url
                finally:
                    self._stop_accepting()
                    self._stopping.set()  # Hypercorn: close the listener, finish requests
        except BaseExceptionGroup as group:
            refused = group.subgroup(OSError)
            if self.started.is_set() or refused is None:
                raise
            first = _first_leaf(refused)
            raise WebhookServerError(
                f"{self!r} cannot listen on {self.host}:{self.port}: {first}"
            ) from first
        finally:
            self.intake = None
            self._bound_port = None

    async def _serve(
        self, app: Starlette, config: HypercornConfig, *, task_status: Any
    ) -> None:
        # Starlette's __call__ takes plain MutableMappings where Hypercorn's ASGIFramework
        # type names its TypedDict scopes: the same ASGI protocol, typed apart.
        framework = cast("ASGIFramework", app)
        await serve(framework, config, shutdown_trigger=self._stopping.wait,
                    task_status=task_status)

    async def open(self) -> None:
        """Check the server runs (:meth:`serving`): the pipeline reads what it accepts."""
        if self.intake is None or not self.started.is_set():
            raise WebhookServerError(
                f"{self!r} is not serving: run the pipeline inside `async with "
                "source.serving():` (`haive run` does it, unless HAIVE_NO_SERVICES is set)"
            )
        if self.intake.closed:
            raise WebhookServerError(f"{self!r} was stopped; leave serving() and enter it again")
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """The pipeline ended: accept nothing more; requests waiting for a write that will
        not come are answered 503 (retry)."""
        self._stop_accepting()
        await trio.lowlevel.checkpoint()

    def _stop_accepting(self) -> None:
        reason = "the pipeline stopped before writing these events; retry"
        intake = self.intake
        if intake is not None:
            intake.close()
            self.stats.dropped_on_close += intake.abandon_all(reason)
        for event in self._unacked:
            ticket = self._ticket_of.get(id(event))
            if ticket is not None:
                ticket.abandon(reason)
        self._unacked.clear()
        self._ticket_of.clear()

    # -- reading ------------------------------------------------------------------------
    def want_trace_headers(self) -> bool:
        """Keep each request's ``traceparent``/``tracestate`` headers (tracing is on)."""
        self._trace_log.want()
        return True

    def take_trace_headers(self) -> Sequence[Mapping[str, str] | None] | None:
        return self._trace_log.take()

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        intake = self.intake
        if intake is None:
            raise WebhookServerError(f"{self!r} is not open: the pipeline opens it")
        written = self.acknowledges
        while True:
            taken = await intake.take(chunk_size)
            if taken is None:
                return  # stopped and drained: the pipeline acknowledges the rest at the end
            events, tickets = taken
            self.stats.batches += 1
            if written:
                self._track(events, tickets)
            if self._trace_log.wanted:
                self._trace_log.record([trace_headers_of(event.headers) for event in events])
            yield events
            if written and (len(self._unacked) >= self.ack_every or not intake.size):
                yield []  # nothing more ready (or enough held): ask for an acknowledgment

    def _track(self, events: list[WebhookEvent], tickets: list[tuple[Ticket, int]]) -> None:
        self._unacked.extend(events)
        ticket_of = self._ticket_of
        position = 0
        for ticket, count in tickets:
            for event in events[position : position + count]:
                ticket_of[id(event)] = ticket
            position += count

    # -- acknowledging ("written" mode) ---------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` events yielded are handled: answer their requests."""
        if count < 0 or count > len(self._unacked):
            raise ConfigError(
                f"acknowledge({count}): only {len(self._unacked)} events are unacknowledged"
            )
        unacked, ticket_of = self._unacked, self._ticket_of
        for _ in range(count):
            ticket = ticket_of.pop(id(unacked.popleft()), None)
            if ticket is not None:
                ticket.settle(1)
        self.stats.acknowledged += count
        await trio.lowlevel.checkpoint()

    async def reject(self, failed: list[Result]) -> None:
        """Events that failed in the pipeline (no dead-letter sink): their requests are
        answered 422 with the reason. A failure of a derived item cannot be traced to its
        request, so every request still waiting is answered 503 (retry): none is told its
        events were written when one of them may not have been."""
        for result in failed:
            reason = f"{result.node or 'pipeline'}: {type(result.error).__name__}: {result.error}"
            ticket = self._ticket_of.get(id(result.data))
            if ticket is not None and isinstance(result.data, WebhookEvent):
                ticket.failures.append((result.data.index, reason))
                continue
            self.stats.untraced_failures += 1
            for event in self._unacked:
                waiting = self._ticket_of.get(id(event))
                if waiting is not None and waiting.error is None:
                    waiting.error = (
                        f"an event of this batch failed ({reason}) and could not be traced "
                        "to its request; retry"
                    )
        await trio.lowlevel.checkpoint()
