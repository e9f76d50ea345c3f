"""haive-plugin-rabbitmq: a RabbitMQ queue source (manual acks after write) and an exchange
sink (publisher confirms).

The names are imported on first use (PEP 562), so plugin discovery does not load aio-pika.

Example::

    >>> from haive.dataflow.plugins import get_registry
    >>> get_registry().source("rabbitmq").__name__
    'RabbitMQSource'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Every public name -> the module of this package defining it.
NAMES: dict[str, str] = {
    "DEFAULT_URL": "connection",
    "MessageTooLargeError": "connection",
    "PayloadCodec": "message",
    "RabbitMQAuthError": "connection",
    "RabbitMQConnectError": "connection",
    "RabbitMQError": "connection",
    "RabbitMQPublishError": "connection",
    "RabbitMQSink": "sink",
    "RabbitMQSinkStats": "sink",
    "RabbitMQSource": "source",
    "RabbitMQSourceStats": "source",
    "RabbitMessage": "message",
    "UnknownExchangeError": "connection",
    "UnknownQueueError": "connection",
    "UnroutableError": "connection",
    "delete_exchange": "connection",
    "delete_queues": "connection",
    "queue_message_count": "connection",
}

__all__ = sorted(NAMES)


def __getattr__(name: str) -> Any:
    module = NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'haive_plugin_rabbitmq' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .connection import DEFAULT_URL as DEFAULT_URL
    from .connection import MessageTooLargeError as MessageTooLargeError
    from .connection import RabbitMQAuthError as RabbitMQAuthError
    from .connection import RabbitMQConnectError as RabbitMQConnectError
    from .connection import RabbitMQError as RabbitMQError
    from .connection import RabbitMQPublishError as RabbitMQPublishError
    from .connection import UnknownExchangeError as UnknownExchangeError
    from .connection import UnknownQueueError as UnknownQueueError
    from .connection import UnroutableError as UnroutableError
    from .connection import delete_exchange as delete_exchange
    from .connection import delete_queues as delete_queues
    from .connection import queue_message_count as queue_message_count
    from .message import PayloadCodec as PayloadCodec
    from .message import RabbitMessage as RabbitMessage
    from .sink import RabbitMQSink as RabbitMQSink
    from .sink import RabbitMQSinkStats as RabbitMQSinkStats
    from .source import RabbitMQSource as RabbitMQSource
    from .source import RabbitMQSourceStats as RabbitMQSourceStats
