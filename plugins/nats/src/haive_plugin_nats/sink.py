"""JetStream sink: batched publishes, each confirmed by a JetStream publish ack.

A batch is published in one crossing of the sink's
:class:`~haive.dataflow.runtime.bridge.AsyncioBridge`: every message goes out pipelined on
one connection (so in order), then the sink waits for all the publish acks, which come to a
reply inbox of the sink's own (:class:`~haive_plugin_nats.publishing.AckedPublisher`: the
ack's subject names its message, no future or semaphore per message). ``write_batch``
returns only when JetStream confirmed every message (stored on its replicas), so an
at-least-once source acknowledges nothing that is not stored.

Messages not confirmed (the broker restarting, a timeout) are published again after a
pause (``retry``, a :class:`~haive.dataflow.runtime.retry.RetryPolicy`), from the first
unconfirmed message of each subject on, so order per subject is kept; every message
carries a ``Nats-Msg-Id`` header, so JetStream drops the copies it already stored (within
the stream's duplicate window, 2 minutes by default). A subject no stream stores fails at
once with :class:`~haive_plugin_nats.connection.UnknownStreamError`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import attrs
import nats.js.errors
import trio
from nats.aio.client import Client as NatsClient

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sinks import RejectedItems, StreamSink
from haive.dataflow.io.trace_headers import outgoing_trace_headers
from haive.dataflow.runtime.bridge import AsyncioBridge, open_asyncio_bridge
from haive.dataflow.runtime.retry import RetryPolicy
from haive.dataflow.runtime.units import Duration, parse_duration

from .connection import (
    DEFAULT_URL,
    NatsError,
    UnknownStreamError,
    check_connect_options,
    check_url,
    connect,
    redacted,
    stream_for_subject,
)
from .message import NatsMessage, PayloadCodec, user_headers
from .publishing import AckedPublisher
from .subjects import check_subject

DEFAULT_RETRY = RetryPolicy(attempts=8, backoff=0.1, max_backoff=5.0)


class NatsPublishError(NatsError):
    """Messages were not confirmed by JetStream after every retry."""


@attrs.define
class JetStreamSinkStats:
    """What a :class:`JetStreamSink` did."""

    published: int = 0  # confirmed by a publish ack
    duplicates: int = 0  # confirmed as duplicates of a copy already stored (retries)
    retries: int = 0  # publish rounds after the first, summed over batches


class JetStreamSink(StreamSink):
    """Publishes each item to ``subject`` (a string, or a function of the item) on JetStream.

    Items are encoded with ``codec`` (``"json"`` by default, ``"bytes"`` for bytes/str
    items); a :class:`~haive_plugin_nats.message.NatsMessage` is republished as it came
    (its payload and headers). ``headers``: a function of the item giving extra headers.

    Example::

        >>> import trio, uuid
        >>> from haive_plugin_nats import delete_stream, ensure_stream
        >>> name = f"DOC-{uuid.uuid4().hex[:8]}"
        >>> async def main():
        ...     await ensure_stream(name, [f"{name}.>"])
        ...     async with JetStreamSink(lambda item: f"{name}.{item['region']}") as sink:
        ...         await sink.write_batch([{"region": "eu"}, {"region": "us"}])
        ...     await delete_stream(name)
        ...     return sink.stats.published
        >>> trio.run(main)
        2
    """

    PLUGIN_NAME = "nats_jetstream"

    def __init__(
        self,
        subject: str | Callable[[Any], str],
        *,
        url: str = DEFAULT_URL,
        connect_options: Mapping[str, Any] | None = None,
        codec: str | Serializer = "json",
        headers: Callable[[Any], Mapping[str, str]] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        publish_timeout: Duration = "10s",
    ) -> None:
        owner = "JetStreamSink"
        if callable(subject):
            self.subject: str | Callable[[Any], str] = subject
        else:
            self.subject = check_subject(owner, "subject", subject, wildcards=False)
        self.url = check_url(owner, url)
        self.connect_options = check_connect_options(owner, connect_options)
        self.codec = PayloadCodec(codec)
        if headers is not None and not callable(headers):
            raise ConfigError(f"{owner}: headers must be a function of the item, got {headers!r}")
        self.headers = headers
        if not isinstance(retry, RetryPolicy):
            raise ConfigError(f"{owner}: retry must be a RetryPolicy, got {retry!r}")
        self.retry = retry
        self.publish_timeout = parse_duration(publish_timeout, what="publish_timeout")
        self.stats = JetStreamSinkStats()
        self._exit = AsyncExitStack()
        self._bridge: AsyncioBridge | None = None
        self._client: NatsClient | None = None
        self._publisher: AckedPublisher | None = None
        self._id_prefix = secrets.token_hex(8)
        self._next_id = 0

    def __repr__(self) -> str:
        subject = self.subject if isinstance(self.subject, str) else "<function>"
        return f"JetStreamSink({subject!r}, url={redacted(self.url)!r})"

    async def open(self) -> None:
        bridge = await self._exit.enter_async_context(open_asyncio_bridge(name="nats-sink"))
        self._bridge = bridge
        client = await connect(bridge, self.url, self.connect_options, name=repr(self))
        self._client = client
        self._publisher = AckedPublisher(client)
        self._exit.push_async_callback(bridge.run, client.close)
        if isinstance(self.subject, str):
            await stream_for_subject(bridge, client, self.subject, self.url)

    async def aclose(self) -> None:
        self._bridge = None
        self._client = None
        self._publisher = None
        await self._exit.aclose()

    def _message(self, item: Any) -> tuple[str, bytes, dict[str, str]]:
        subject = self.subject(item) if callable(self.subject) else self.subject
        if isinstance(item, NatsMessage):
            payload, headers = item.payload, user_headers(item.headers)
        else:
            payload, headers = self.codec.encode(item), {}
        if self.headers is not None:
            headers.update(self.headers(item))
        self._next_id += 1
        headers["Nats-Msg-Id"] = f"{self._id_prefix}-{self._next_id}"
        return subject, payload, headers

    async def write_batch(self, items: list[Any]) -> None:
        bridge, publisher = self._bridge, self._publisher
        if bridge is None or publisher is None:
            raise NatsError(f"{self!r} is not open: the pipeline opens it (or `async with`)")
        messages: list[tuple[str, bytes, dict[str, str]]] = []
        rejected: dict[int, BaseException] = {}
        trace = outgoing_trace_headers()
        for index, item in enumerate(items):
            try:
                message = self._message(item)
            except Exception as error:
                rejected[index] = error
                continue
            if trace is not None and (trace_headers := trace[index]) is not None:
                message[2].update(trace_headers)  # replaces a republished message's own
            messages.append(message)
        todo = messages
        for attempt in range(1, self.retry.attempts + 1):
            outcomes = await bridge.run(publisher.publish_all, todo, self.publish_timeout)
            confirmed, duplicates, first_error = 0, 0, None
            unconfirmed_from: dict[str, int] = {}
            for index, (message, outcome) in enumerate(zip(todo, outcomes, strict=True)):
                if isinstance(outcome, BaseException):
                    if isinstance(outcome, nats.js.errors.NoStreamResponseError):
                        raise UnknownStreamError(
                            f"no JetStream stream on {redacted(self.url)} stores subject "
                            f"{message[0]!r}: create one whose subjects match it"
                        ) from outcome
                    first_error = first_error or outcome
                    unconfirmed_from.setdefault(message[0], index)
                else:
                    confirmed += 1
                    duplicates += outcome
            self.stats.published += confirmed - duplicates
            self.stats.duplicates += duplicates
            if not unconfirmed_from:
                break
            # Again from each subject's first unconfirmed message (order per subject);
            # copies JetStream already stored are dropped by their Nats-Msg-Id.
            todo = [
                message
                for index, message in enumerate(todo)
                if index >= unconfirmed_from.get(message[0], len(todo))
            ]
            if attempt == self.retry.attempts:
                raise NatsPublishError(
                    f"{len(todo)} of {len(messages)} messages not confirmed by JetStream on "
                    f"{redacted(self.url)} after {attempt} attempts (last error: "
                    f"{type(first_error).__name__}: {first_error})"
                ) from first_error
            self.stats.retries += 1
            await trio.sleep(self.retry.delay(attempt))
        if rejected:
            raise RejectedItems(rejected)
