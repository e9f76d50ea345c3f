"""Publishing a batch with publisher confirms, in a bridge's loop.

Every message of the batch is written at once (aiormq sends them in order on the channel,
one after the other, so the order per routing key is the order of the batch), then the
confirms are awaited together: one round trip per batch, not per message. Messages are
persistent (delivery mode 2) and mandatory, so a message no queue is bound to receive is
returned by the broker and reported as
:class:`~haive_plugin_rabbitmq.connection.UnroutableError`, never dropped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiormq.exceptions
import attrs
from aio_pika.abc import AbstractChannel
from aiormq import spec

from .connection import UnroutableError

PERSISTENT = 2


@attrs.frozen
class Outgoing:
    """One message to publish (persistent and mandatory, as every message here).

    Example::

        >>> Outgoing(exchange="", routing_key="orders", body=b"{}", message_id="m-1").routing_key
        'orders'
    """

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: Mapping[str, Any] | None = None
    content_type: str | None = None
    correlation_id: str | None = None
    timestamp: float | None = None


def _properties(message: Outgoing, now: datetime) -> spec.Basic.Properties:
    stamp = (
        datetime.fromtimestamp(message.timestamp, UTC) if message.timestamp is not None else now
    )
    return spec.Basic.Properties(
        delivery_mode=PERSISTENT,
        message_id=message.message_id,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        headers=dict(message.headers) if message.headers else None,
        timestamp=stamp,
    )


async def publish_all(
    channel: AbstractChannel, messages: list[Outgoing], confirm_within: float
) -> list[BaseException | None]:  # in the bridge's loop
    """Publish ``messages`` pipelined and wait for their confirms: per message, None when
    the broker confirmed it, else the error (:class:`UnroutableError`, a nack, a lost
    connection, a timeout).

    A robust channel that is reconnecting is waited for, within ``confirm_within``.
    """
    try:
        async with asyncio.timeout(confirm_within):
            underlay = await channel.get_underlay_channel()
    except (aiormq.exceptions.AMQPError, ConnectionError, TimeoutError) as error:
        return [error] * len(messages)
    now = datetime.now(UTC)
    loop = asyncio.get_running_loop()
    # Tasks start in creation order and queue on the channel's lock in that order: the
    # frames go out in the order of the batch.
    tasks = [
        loop.create_task(
            underlay.basic_publish(
                message.body,
                exchange=message.exchange,
                routing_key=message.routing_key,
                properties=_properties(message, now),
                mandatory=True,
            )
        )
        for message in messages
    ]
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, timeout=confirm_within)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    outcomes: list[BaseException | None] = []
    for message, task in zip(messages, tasks, strict=True):
        if task.cancelled():
            outcomes.append(TimeoutError(f"no publisher confirm within {confirm_within}s"))
            continue
        failure = task.exception()
        if isinstance(failure, aiormq.exceptions.PublishError):
            frame = failure.frame
            text = getattr(frame, "reply_text", "") or "returned"
            outcomes.append(UnroutableError(
                f"{text}: no queue is bound to exchange {message.exchange or '(default)'!r} "
                f"with routing key {message.routing_key!r}"
            ))
        elif failure is not None:
            outcomes.append(failure)
        elif not isinstance(result := task.result(), spec.Basic.Ack):
            outcomes.append(RuntimeError(f"the broker did not confirm the message: {result!r}"))
        else:
            outcomes.append(None)
    return outcomes
