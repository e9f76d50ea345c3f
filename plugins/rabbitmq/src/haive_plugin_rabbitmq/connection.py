"""Connecting to RabbitMQ through the core's asyncio bridge, passive checks, and the errors.

aio-pika is asyncio-only, so every call goes through one
:class:`~haive.dataflow.runtime.bridge.AsyncioBridge` per source or sink (its loop runs in
the bridge's thread; the plugin starts no thread or loop of its own). The connection is
aio-pika's *robust* one: after a broker restart it reconnects and restores the channel, its
``basic.qos`` and the consumer by itself. The first connection fails fast with an error that
says what to do: refused credentials (:class:`RabbitAuthError`), nothing answering or an
unknown virtual host (:class:`RabbitConnectError`); a queue or exchange that does not exist
is :class:`UnknownQueueError` / :class:`UnknownExchangeError` (checked with passive
declares, which create nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq.abc
import aiormq.exceptions
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url

from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.runtime.bridge import AsyncioBridge

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"

#: connect_robust options the plugin sets itself (the rest of ``connect_options`` passes through).
_OWN_OPTIONS = frozenset({"url", "host", "port", "login", "password", "virtualhost", "loop"})


class RabbitMQError(HaiveError):
    """RabbitMQ refused or failed an operation of this plugin; the base of its errors.

    Example::

        >>> issubclass(UnknownQueueError, RabbitMQError), issubclass(UnknownQueueError, LookupError)
        (True, True)
        >>> issubclass(RabbitMQAuthError, ConnectionError)
        True
    """


class RabbitMQConnectError(RabbitMQError, ConnectionError):
    """No RabbitMQ broker answered at the URL, or it refused the virtual host."""


class RabbitMQAuthError(RabbitMQConnectError):
    """The broker refused the credentials (user name or password in the URL)."""


class UnknownQueueError(RabbitMQError, LookupError):
    """The queue does not exist (and the source or sink was not asked to declare it)."""


class UnknownExchangeError(RabbitMQError, LookupError):
    """The exchange does not exist."""


class RabbitMQPublishError(RabbitMQError):
    """Messages were not confirmed by the broker after every retry."""


class UnroutableError(RabbitMQPublishError):
    """The broker returned a mandatory message: no queue is bound to its exchange and
    routing key (it would otherwise have been dropped silently)."""


class MessageTooLargeError(RabbitMQPublishError):
    """A message is larger than ``max_message_size`` (the broker would close the channel)."""


def redacted(url: str) -> str:
    """``url`` without its password, for messages.

    Example::

        >>> redacted("amqp://app:s3cret@10.0.0.5:5672/prod")
        'amqp://app:***@10.0.0.5:5672/prod'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(owner: str, url: object) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("amqp", "amqps"):
        raise ConfigError(f"{owner}: url must be an amqp:// or amqps:// URL, got {url!r}")
    return url


def check_connect_options(owner: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    clash = sorted(_OWN_OPTIONS & options.keys())
    if clash:
        raise ConfigError(
            f"{owner}: connect_options may not set {clash} (give the broker, user, password "
            "and virtual host in url)"
        )
    return options


def check_name(owner: str, name: str, value: object, *, empty: bool = False) -> str:
    """A queue, exchange or routing key: a string of at most 255 bytes (AMQP shortstr)."""
    if not isinstance(value, str) or (not value and not empty) or len(value.encode()) > 255:
        what = "a string" if empty else "a non-empty string"
        raise ConfigError(f"{owner}: {name} must be {what} of at most 255 bytes, got {value!r}")
    return value


async def connect(
    bridge: AsyncioBridge, url: str, options: Mapping[str, Any], *, name: str
) -> AbstractRobustConnection:
    """An aio-pika robust connection opened in ``bridge``'s loop, or a clear error."""
    # Reconnect every second after a broker restart (aio-pika's default is 5 s).
    settings = {
        "timeout": 10,
        "reconnect_interval": 1,
        "client_properties": {"connection_name": name},
        **options,
    }
    try:
        return await bridge.run(_connect, url, settings)
    except aiormq.exceptions.ProbableAuthenticationError as error:
        raise RabbitMQAuthError(
            f"RabbitMQ at {redacted(url)} refused the credentials ({error}); check the user "
            "and password in the URL (the guest user may only connect from localhost)"
        ) from error
    except aiormq.exceptions.ProtocolSyntaxError as error:  # Connection.Close instead of OpenOk
        raise RabbitMQConnectError(
            f"RabbitMQ at {redacted(url)} refused to open the connection, most often because "
            f"the virtual host {urlsplit(url).path[1:] or '/'!r} does not exist or the user "
            f"may not use it ({error})"
        ) from error
    except (aiormq.exceptions.AMQPConnectionError, OSError, TimeoutError) as error:
        raise RabbitMQConnectError(
            f"no RabbitMQ broker answered at {redacted(url)}: {type(error).__name__}: {error}"
        ) from error


async def _connect(url: str, settings: dict[str, Any]) -> AbstractRobustConnection:
    # connect_robust's own steps, so that a failed first connection is closed (its
    # callbacks run now, not in a loop already closed). fail_fast: the first connection
    # raises instead of retrying forever (a wrong URL or password is an error at once);
    # once connected, the robust connection reconnects.
    options = dict(settings)
    timeout = options.pop("timeout")
    # As connect_robust sorts them: some options go to the URL only, some to the class only.
    url_only = {key: options.pop(key) for key in ("ssl", "ssl_options") if key in options}
    class_only = {
        key: options.pop(key) for key in ("ssl_context", "client_properties") if key in options
    }
    connection = aio_pika.RobustConnection(
        make_url(url, fail_fast=True, **url_only, **options), **class_only, **options
    )
    try:
        await connection.connect(timeout=timeout)
    except BaseException:
        await connection.close()
        await asyncio.sleep(0)  # let the close callbacks it scheduled run
        raise
    return connection


async def close(connection: AbstractRobustConnection) -> None:  # in the bridge's loop
    await connection.close()
    # aio-pika runs close callbacks (of the connection, and of channels a 404 closed) as
    # tasks of their own: let them finish before the bridge closes the loop.
    for _ in range(3):
        await asyncio.sleep(0)


def not_found(error: aiormq.exceptions.ChannelNotFoundEntity, what: str, name: str,
              url: str) -> RabbitMQError:
    """The error for a passive declare answered with 404 NOT_FOUND."""
    if what == "queue":
        return UnknownQueueError(
            f"no queue {name!r} on {redacted(url)}: declare it (declare=True, or your "
            f"broker's definitions) or fix the name ({error})"
        )
    return UnknownExchangeError(
        f"no exchange {name!r} on {redacted(url)}: declare it (your broker's definitions, "
        f"or declare=True on the source) or fix the name ({error})"
    )


async def raw_channel(connection: AbstractRobustConnection) -> aiormq.abc.AbstractChannel:
    """A plain aiormq channel on ``connection`` (in the bridge's loop), for passive
    declares: a 404 closes it for good, where a robust channel would reopen itself."""
    transport = connection.transport
    if transport is None:
        raise aiormq.exceptions.ChannelInvalidStateError("the connection is not open")
    return await transport.connection.channel()


async def close_raw(channel: aiormq.abc.AbstractChannel) -> None:
    if not channel.is_closed:
        await channel.close()


async def queue_counts(
    connection: AbstractRobustConnection, queue: str
) -> tuple[int, int]:  # in the bridge's loop
    """``(ready messages, consumers)`` of ``queue`` by a passive declare on a channel of
    its own (a 404 closes the channel it came on)."""
    channel = await raw_channel(connection)
    try:
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0), int(ok.consumer_count or 0)
    finally:
        await close_raw(channel)


async def exchange_exists(
    connection: AbstractRobustConnection, exchange: str
) -> None:  # in the bridge's loop
    """Raise ``ChannelNotFoundEntity`` unless ``exchange`` exists (passive declare)."""
    if not exchange:
        return  # the default exchange always exists
    channel = await raw_channel(connection)
    try:
        await channel.exchange_declare(exchange, passive=True)
    finally:
        await close_raw(channel)


async def queue_message_count(
    queue: str, *, url: str = DEFAULT_URL, connect_options: Mapping[str, Any] | None = None
) -> int:
    """How many messages ``queue`` holds ready for delivery (a passive declare: the count
    RabbitMQ gives without the management plugin; unacknowledged deliveries not included).

    Example::

        >>> import trio
        >>> trio.run(lambda: queue_message_count("no-such-queue-here"))
        Traceback (most recent call last):
        ...
        haive_plugin_rabbitmq.connection.UnknownQueueError: no queue 'no-such-queue-here' ...
    """
    from haive.dataflow.runtime.bridge import open_asyncio_bridge

    url = check_url("queue_message_count", url)
    options = check_connect_options("queue_message_count", connect_options)
    async with open_asyncio_bridge(name="rabbitmq-admin") as bridge:
        connection = await connect(bridge, url, options, name="haive-admin")
        try:
            ready, _ = await bridge.run(queue_counts, connection, queue)
        except aiormq.exceptions.ChannelNotFoundEntity as error:
            raise not_found(error, "queue", queue, url) from None
        finally:
            await bridge.run(connection.close)
    return ready


async def delete_queues(
    *queues: str, url: str = DEFAULT_URL, connect_options: Mapping[str, Any] | None = None
) -> None:
    """Delete ``queues`` (those that exist), for examples and tests.

    Example::

        >>> import trio
        >>> trio.run(delete_queues, "no-such-queue-here")
    """
    from haive.dataflow.runtime.bridge import open_asyncio_bridge

    url = check_url("delete_queues", url)
    options = check_connect_options("delete_queues", connect_options)
    async with open_asyncio_bridge(name="rabbitmq-admin") as bridge:
        connection = await connect(bridge, url, options, name="haive-admin")
        try:
            await bridge.run(_delete_queues, connection, list(queues))
        finally:
            await bridge.run(connection.close)


async def _delete_queues(
    connection: AbstractRobustConnection, queues: list[str]
) -> None:  # in the bridge's loop
    channel = await raw_channel(connection)
    try:
        for queue in queues:
            await channel.queue_delete(queue)  # RabbitMQ: deleting a missing queue is fine
    finally:
        await close_raw(channel)


async def delete_exchange(
    exchange: str, *, url: str = DEFAULT_URL, connect_options: Mapping[str, Any] | None = None
) -> None:
    """Delete ``exchange`` if it exists, for examples and tests.

    Example::

        >>> import trio
        >>> trio.run(delete_exchange, "no-such-exchange-here")
    """
    from haive.dataflow.runtime.bridge import open_asyncio_bridge

    url = check_url("delete_exchange", url)
    options = check_connect_options("delete_exchange", connect_options)
    async with open_asyncio_bridge(name="rabbitmq-admin") as bridge:
        connection = await connect(bridge, url, options, name="haive-admin")
        try:
            await bridge.run(_delete_exchange, connection, exchange)
        finally:
            await bridge.run(connection.close)


async def _delete_exchange(
    connection: AbstractRobustConnection, exchange: str
) -> None:  # in the bridge's loop
    channel = await raw_channel(connection)
    try:
        await channel.exchange_delete(exchange)
    finally:
        await close_raw(channel)
