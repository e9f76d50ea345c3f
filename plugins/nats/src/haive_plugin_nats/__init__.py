"""haive-plugin-nats: a NATS JetStream source (durable pull consumer, at-least-once) and sink.

The names are imported on first use (PEP 562), so plugin discovery does not load nats-py.

Example::

    >>> from haive.dataflow.plugins import get_registry
    >>> get_registry().source("nats_jetstream").__name__
    'JetStreamSource'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Every public name -> the module of this package defining it.
NAMES: dict[str, str] = {
    "DEFAULT_URL": "connection",
    "JetStreamSink": "sink",
    "JetStreamSinkStats": "sink",
    "JetStreamSource": "source",
    "JetStreamSourceStats": "source",
    "NatsAuthError": "connection",
    "NatsConnectError": "connection",
    "NatsError": "connection",
    "NatsMessage": "message",
    "NatsPublishError": "sink",
    "PayloadCodec": "message",
    "UnknownStreamError": "connection",
    "delete_stream": "connection",
    "ensure_stream": "connection",
}

__all__ = sorted(NAMES)


def __getattr__(name: str) -> Any:
    module = NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'haive_plugin_nats' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .connection import DEFAULT_URL as DEFAULT_URL
    from .connection import NatsAuthError as NatsAuthError
    from .connection import NatsConnectError as NatsConnectError
    from .connection import NatsError as NatsError
    from .connection import UnknownStreamError as UnknownStreamError
    from .connection import delete_stream as delete_stream
    from .connection import ensure_stream as ensure_stream
    from .message import NatsMessage as NatsMessage
    from .message import PayloadCodec as PayloadCodec
    from .sink import JetStreamSink as JetStreamSink
    from .sink import JetStreamSinkStats as JetStreamSinkStats
    from .sink import NatsPublishError as NatsPublishError
    from .source import JetStreamSource as JetStreamSource
    from .source import JetStreamSourceStats as JetStreamSourceStats
