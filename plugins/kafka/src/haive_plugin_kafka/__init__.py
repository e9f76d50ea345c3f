"""haive-plugin-kafka: a Kafka consumer-group source and an idempotent sink (confluent-kafka).

Importing the package is cheap (discovery imports it): the names below load their module,
and with it confluent-kafka, on first use.

Example::

    >>> from haive.dataflow.plugins import get_registry
    >>> get_registry().source("kafka").__name__, get_registry().sink("kafka").__name__
    ('KafkaSource', 'KafkaSink')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        KafkaAuthenticationError,
        KafkaCommitError,
        KafkaConnectionError,
        KafkaDeliveryError,
        UnknownTopicError,
    )
    from .records import KafkaRecord, ValueCodec
    from .sink import KafkaSink
    from .source import KafkaSource, KafkaSourceStats

_LAZY = {
    "KafkaSource": ".source",
    "KafkaSourceStats": ".source",
    "KafkaSink": ".sink",
    "KafkaRecord": ".records",
    "ValueCodec": ".records",
    "KafkaConnectionError": ".errors",
    "KafkaAuthenticationError": ".errors",
    "KafkaCommitError": ".errors",
    "KafkaDeliveryError": ".errors",
    "UnknownTopicError": ".errors",
}

__all__ = [
    "KafkaAuthenticationError",
    "KafkaCommitError",
    "KafkaConnectionError",
    "KafkaDeliveryError",
    "KafkaRecord",
    "KafkaSink",
    "KafkaSource",
    "KafkaSourceStats",
    "UnknownTopicError",
    "ValueCodec",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'haive_plugin_kafka' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
