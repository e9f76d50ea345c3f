"""RabbitMQ sink: persistent, mandatory publishes, each confirmed by the broker.

A batch is published in one crossing of the sink's
:class:`~haive.dataflow.runtime.bridge.AsyncioBridge`: every message goes out pipelined on
one channel in publisher-confirm mode (so in order), then the sink waits for all the
confirms. ``write_batch`` returns only when RabbitMQ confirmed every message (for a durable
queue and a persistent message: written to disk), so an at-least-once source acknowledges
nothing that is not stored.

Messages not confirmed (the connection lost, a broker restart, a nack, a timeout) are
published again after a pause (``retry``, a :class:`~haive.dataflow.runtime.retry.RetryPolicy`)
once the robust connection is back, from the first unconfirmed message of each routing key
on, so the order per routing key is kept. A message the broker could not route (no queue
bound: mandatory publishing makes the broker return it) is not retried: it is reported per
item (:class:`~haive.dataflow.io.sinks.RejectedItems` with
:class:`~haive_plugin_rabbitmq.connection.UnroutableError`), so the pipeline dead-letters it
with the reason instead of dropping it. Every message carries a unique ``message_id``, so a
consumer can drop the copies a retry may produce.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import aiormq.exceptions
import attrs
import trio
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sinks import RejectedItems, StreamSink
from haive.dataflow.runtime.bridge import AsyncioBridge, open_asyncio_bridge
from haive.dataflow.runtime.retry import RetryPolicy
from haive.dataflow.runtime.units import Duration, parse_duration

from .connection import (
    DEFAULT_URL,
    MessageTooLargeError,
    RabbitMQError,
    RabbitMQPublishError,
    UnroutableError,
    check_connect_options,
    check_name,
    check_url,
    close,
    connect,
    exchange_exists,
    not_found,
    queue_counts,
    redacted,
)
from .message import PayloadCodec, RabbitMessage
from .publishing import Outgoing, publish_all

DEFAULT_RETRY = RetryPolicy(attempts=8, backoff=0.1, max_backoff=5.0)
#: RabbitMQ's default ``max_message_size`` (3.8 to 3.13: 128 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024


@attrs.define
class RabbitMQSinkStats:
    """What a :class:`RabbitMQSink` did.

    Example::

        >>> RabbitMQSinkStats(published=3).published
        3
    """

    published: int = 0  # confirmed by the broker
    unroutable: int = 0  # returned by the broker (no queue bound), rejected per item
    retries: int = 0  # publish rounds after the first, summed over batches


class RabbitMQSink(StreamSink):
    """Publishes each item to ``exchange`` with ``routing_key`` (a string, or a function of
    the item); persistent, mandatory, confirmed.

    ``exchange=""`` is RabbitMQ's default exchange, which routes to the queue named by the
    routing key. The exchange (or, on the default exchange with a fixed routing key, the
    queue) must exist: :class:`~haive_plugin_rabbitmq.connection.UnknownExchangeError` /
    :class:`~haive_plugin_rabbitmq.connection.UnknownQueueError` at open. Items are encoded
    with ``codec`` (``"json"`` by default, ``"bytes"`` for bytes/str items); a
    :class:`~haive_plugin_rabbitmq.message.RabbitMessage` is republished as it came (its
    body bytes, headers, content type). ``headers``: a function of the item giving headers.
    An encoded item larger than ``max_message_size`` (RabbitMQ's default limit) is rejected
    per item with :class:`~haive_plugin_rabbitmq.connection.MessageTooLargeError`.

    Example::

        >>> import trio, uuid
        >>> from haive_plugin_rabbitmq import RabbitMQSource, delete_queues, queue_message_count
        >>> queue = f"doc-{uuid.uuid4().hex[:8]}"
        >>> async def main():
        ...     async with RabbitMQSource(queue, declare=True):  # declares the queue
        ...         pass
        ...     async with RabbitMQSink(routing_key=queue) as sink:
        ...         await sink.write_batch([{"region": "eu"}, {"region": "us"}])
        ...     count = await queue_message_count(queue)
        ...     await delete_queues(queue, f"{queue}.dead")
        ...     return sink.stats.published, count
        >>> trio.run(main)
        (2, 2)
    """

    PLUGIN_NAME = "rabbitmq"

    def __init__(
        self,
        exchange: str = "",
        *,
        routing_key: str | Callable[[Any], str],
        url: str = DEFAULT_URL,
        connect_options: Mapping[str, Any] | None = None,
        codec: str | Serializer = "json",
        headers: Callable[[Any], Mapping[str, Any]] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        confirm_timeout: Duration = "30s",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        owner = "RabbitMQSink"
        self.exchange = check_name(owner, "exchange", exchange, empty=True)
        if callable(routing_key):
            self.routing_key: str | Callable[[Any], str] = routing_key
        else:
            self.routing_key = check_name(owner, "routing_key", routing_key,
                                          empty=bool(exchange))
        self.url = check_url(owner, url)
        self.connect_options = check_connect_options(owner, connect_options)
        self.codec = PayloadCodec(codec)
        if headers is not None and not callable(headers):
            raise ConfigError(f"{owner}: headers must be a function of the item, got {headers!r}")
        self.headers = headers
        if not isinstance(retry, RetryPolicy):
            raise ConfigError(f"{owner}: retry must be a RetryPolicy, got {retry!r}")
        self.retry = retry
        self.confirm_timeout = parse_duration(confirm_timeout, what="confirm_timeout")
        if (
            isinstance(max_message_size, bool)
            or not isinstance(max_message_size, int)
            or max_message_size < 1
        ):
            raise ConfigError(
                f"{owner}: max_message_size must be an integer >= 1 (bytes), got "
                f"{max_message_size!r}"
            )
        self.max_message_size = max_message_size
        self.stats = RabbitMQSinkStats()
        self._exit = AsyncExitStack()
        self._bridge: AsyncioBridge | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._id_prefix = secrets.token_hex(8)
        self._next_id = 0

    def __repr__(self) -> str:
        key = self.routing_key if isinstance(self.routing_key, str) else "<function>"
        return f"RabbitMQSink({self.exchange!r}, routing_key={key!r}, url={redacted(self.url)!r})"

    async def open(self) -> None:
        try:
            await self._open()
        except BaseException:
            # A failed open leaves nothing behind: the bridge's thread and the connection
            # are closed here (``async with`` does not call aclose when open raises).
            with trio.CancelScope(shield=True):
                await self.aclose()
            raise

    async def _open(self) -> None:
        bridge = await self._exit.enter_async_context(open_asyncio_bridge(name="rabbitmq-sink"))
        self._bridge = bridge
        connection = await connect(bridge, self.url, self.connect_options, name=repr(self))
        self._connection = connection
        self._exit.push_async_callback(bridge.run, close, connection)
        try:
            if self.exchange:
                await bridge.run(exchange_exists, connection, self.exchange)
            elif isinstance(self.routing_key, str):
                await bridge.run(queue_counts, connection, self.routing_key)
        except aiormq.exceptions.ChannelNotFoundEntity as error:
            if self.exchange:
                raise not_found(error, "exchange", self.exchange, self.url) from error
            raise not_found(error, "queue", str(self.routing_key), self.url) from error
        self._channel = await bridge.run(_confirm_channel, connection)

    async def aclose(self) -> None:
        self._bridge = None
        self._channel = None
        self._connection = None
        await self._exit.aclose()

    def _message(self, item: Any) -> Outgoing:
        key = self.routing_key(item) if callable(self.routing_key) else self.routing_key
        if not isinstance(key, str) or len(key.encode()) > 255:
            raise ConfigError(
                f"RabbitMQSink: routing_key(item) must give a string of at most 255 bytes, "
                f"got {key!r}"
            )
        content_type = self.codec.content_type
        correlation_id = None
        if isinstance(item, RabbitMessage):
            body, headers = item.payload, dict(item.headers or {})
            content_type, correlation_id = item.content_type, item.correlation_id
        else:
            body, headers = self.codec.encode(item), {}
        if len(body) > self.max_message_size:
            raise MessageTooLargeError(
                f"message of {len(body)} bytes is larger than max_message_size="
                f"{self.max_message_size} (the broker's max_message_size, 128 MiB by "
                "default, would close the channel)"
            )
        if self.headers is not None:
            headers.update(self.headers(item))
        self._next_id += 1
        return Outgoing(
            exchange=self.exchange,
            routing_key=key,
            body=body,
            message_id=f"{self._id_prefix}-{self._next_id}",
            headers=headers or None,
            content_type=content_type,
            correlation_id=correlation_id,
        )

    async def write_batch(self, items: list[Any]) -> None:
        bridge, channel = self._bridge, self._channel
        if bridge is None or channel is None:
            raise RabbitMQError(f"{self!r} is not open: the pipeline opens it (or `async with`)")
        indexes: list[int] = []
        messages: list[Outgoing] = []
        rejected: dict[int, BaseException] = {}
        for index, item in enumerate(items):
            try:
                messages.append(self._message(item))
                indexes.append(index)
            except Exception as error:
                rejected[index] = error
        todo = list(zip(indexes, messages, strict=True))
        for attempt in range(1, self.retry.attempts + 1):
            if not todo:
                break
            outcomes = await bridge.run(
                publish_all, channel, [message for _, message in todo], self.confirm_timeout
            )
            first_error: BaseException | None = None
            unconfirmed_from: dict[tuple[str, str], int] = {}
            for position, ((index, message), outcome) in enumerate(
                zip(todo, outcomes, strict=True)
            ):
                if outcome is None:
                    self.stats.published += 1
                elif isinstance(outcome, UnroutableError):
                    self.stats.unroutable += 1
                    rejected[index] = outcome
                elif isinstance(outcome, aiormq.exceptions.ChannelNotFoundEntity):
                    raise not_found(outcome, "exchange", self.exchange, self.url) from outcome
                elif isinstance(outcome, aiormq.exceptions.ChannelPreconditionFailed):
                    raise RabbitMQPublishError(
                        f"RabbitMQ closed the channel on a publish to exchange "
                        f"{self.exchange or '(default)'!r} ({outcome}); a message larger than "
                        "the broker's max_message_size does this: lower max_message_size"
                    ) from outcome
                else:
                    first_error = first_error or outcome
                    unconfirmed_from.setdefault((message.exchange, message.routing_key),
                                                position)
            if not unconfirmed_from:
                break
            # Again from each routing key's first unconfirmed message (order per key).
            todo = [
                (index, message)
                for position, (index, message) in enumerate(todo)
                if position >= unconfirmed_from.get((message.exchange, message.routing_key),
                                                    len(todo))
                and index not in rejected
            ]
            if attempt == self.retry.attempts:
                raise RabbitMQPublishError(
                    f"{len(todo)} of {len(messages)} messages not confirmed by RabbitMQ on "
                    f"{redacted(self.url)} after {attempt} attempts (last error: "
                    f"{type(first_error).__name__}: {first_error})"
                ) from first_error
            self.stats.retries += 1
            await trio.sleep(self.retry.delay(attempt))
        if rejected:
            raise RejectedItems(rejected)


async def _confirm_channel(
    connection: AbstractRobustConnection,
) -> AbstractRobustChannel:  # in the bridge's loop
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    assert isinstance(channel, AbstractRobustChannel)
    return channel
