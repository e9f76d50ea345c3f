"""Dead letters: records that failed, written to a dead-letter topic with the reason.

Used by :class:`~haive_plugin_kafka.source.KafkaSource` for records it cannot decode and for
items a processor failed on for good (the core's ``DataSource.reject``). A dead letter
keeps the original key, value and headers and adds ``haive.reason``, ``haive.node``,
``haive.topic``, ``haive.partition``, ``haive.offset`` and ``haive.group`` headers. The
writes are confirmed by the broker (acks=all, idempotent producer) before the source
acknowledges the records, so a failure is never committed without its dead letter.
All calls run in the source's thread bridge.
"""

from __future__ import annotations

from typing import Any

import attrs
from confluent_kafka import KafkaError, Producer

from .errors import KafkaDeliveryError

Headers = list[tuple[str, str | bytes | None]]


@attrs.frozen(slots=True)
class DeadLetter:
    """One record for the dead-letter topic (built in trio, produced in the bridge thread).

    Example::

        >>> letter = DeadLetter("orders.dead", b"k", b"{bad", [("haive.reason", b"bad json")])
        >>> letter.topic
        'orders.dead'
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


def origin_headers(
    message: Any, reason: str, node: str | None, group: str
) -> Headers:
    """The original headers of ``message`` plus where it came from and why it failed."""
    headers: Headers = list(message.headers() or [])
    headers += [
        ("haive.reason", reason.encode()),
        ("haive.node", (node or "").encode()),
        ("haive.topic", message.topic().encode()),
        ("haive.partition", str(message.partition()).encode()),
        ("haive.offset", str(message.offset()).encode()),
        ("haive.group", group.encode()),
    ]
    return headers


class DeadLetterWriter:
    """Produces dead letters and waits until the broker confirmed every one.

    Its ``producer`` is made by the source when it opens (in its bridge thread).
    """

    def __init__(self, producer: Producer, delivery_timeout: float) -> None:
        self.producer = producer
        self.delivery_timeout = delivery_timeout
        self.written = 0

    def write(self, letters: list[DeadLetter]) -> None:
        """Produce ``letters`` and flush; raises :class:`KafkaDeliveryError` if any was not
        confirmed (in the bridge thread: it blocks up to the delivery timeout)."""
        errors: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is not None:
                errors.append(error)

        for letter in letters:
            while True:
                try:
                    self.producer.produce(
                        letter.topic,
                        value=letter.value,
                        key=letter.key,
                        headers=letter.headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:  # local queue full: serve deliveries, then again
                    self.producer.poll(0.1)
        left = self.producer.flush(self.delivery_timeout + 5)
        if errors or left:
            topics = sorted({letter.topic for letter in letters})
            why = errors[0].str() if errors else f"{left} not confirmed in time"
            raise KafkaDeliveryError(
                f"dead letters to {', '.join(topics)} not written ({why}); the failed records "
                "stay uncommitted and are read again"
            )
        self.written += len(letters)
