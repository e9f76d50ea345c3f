"""haive-plugin-mqtt: an MQTT source (persistent session, at-least-once) and sink.

The names are imported on first use (PEP 562), so plugin discovery does not load paho-mqtt.

Example::

    >>> from haive.dataflow.plugins import get_registry
    >>> get_registry().source("mqtt").__name__
    'MqttSource'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Every public name -> the module of this package defining it.
NAMES: dict[str, str] = {
    "DEFAULT_URL": "connection",
    "MqttAuthError": "connection",
    "MqttConnectError": "connection",
    "MqttError": "connection",
    "MqttMessage": "message",
    "MqttPublishError": "connection",
    "MqttSink": "sink",
    "MqttSinkStats": "sink",
    "MqttSource": "source",
    "MqttSourceStats": "source",
    "PayloadCodec": "message",
    "PayloadTooLargeError": "sink",
}

__all__ = sorted(NAMES)


def __getattr__(name: str) -> Any:
    module = NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'haive_plugin_mqtt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .connection import DEFAULT_URL as DEFAULT_URL
    from .connection import MqttAuthError as MqttAuthError
    from .connection import MqttConnectError as MqttConnectError
    from .connection import MqttError as MqttError
    from .connection import MqttPublishError as MqttPublishError
    from .message import MqttMessage as MqttMessage
    from .message import PayloadCodec as PayloadCodec
    from .sink import MqttSink as MqttSink
    from .sink import MqttSinkStats as MqttSinkStats
    from .sink import PayloadTooLargeError as PayloadTooLargeError
    from .source import MqttSource as MqttSource
    from .source import MqttSourceStats as MqttSourceStats
