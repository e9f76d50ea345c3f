"""haive-dataflow hook implementations of haive-plugin-mqtt.

What it provides is also declared, for tools that do not import it, in ``pyproject.toml``
(``haive.dataflow.provides`` and ``.exports`` entry points).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from haive.dataflow import hookimpl


@hookimpl
def haive_register_sources() -> Iterable[type[Any]]:
    from .source import MqttSource

    return [MqttSource]


@hookimpl
def haive_register_sinks() -> Iterable[type[Any]]:
    from .sink import MqttSink

    return [MqttSink]
