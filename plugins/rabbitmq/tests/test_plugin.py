"""Discovery: the hooks, the metadata and `haive plugins` agree."""

from __future__ import annotations

import subprocess
import sys

from haive_plugin_rabbitmq import RabbitMQSink, RabbitMQSource

from haive.dataflow import get_registry


def test_registered() -> None:
    registry = get_registry()
    assert registry.source("rabbitmq") is RabbitMQSource
    assert registry.get("sink", "rabbitmq") is RabbitMQSink


def test_metadata_declares_what_the_hooks_register() -> None:
    assert get_registry().manifest_problems("haive-plugin-rabbitmq") == []


def test_streaming_facade_exports_the_plugin_names() -> None:
    from haive_plugin_rabbitmq import RabbitMessage

    from haive.dataflow.streaming import RabbitMessage as FacadeMessage
    from haive.dataflow.streaming import RabbitMQSource as FromFacade

    assert FromFacade is RabbitMQSource and FacadeMessage is RabbitMessage


def test_haive_plugins_lists_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli", "plugins"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "haive-plugin-rabbitmq" in out and "rabbitmq" in out


def test_importing_the_package_does_not_load_aio_pika() -> None:
    code = "import haive_plugin_rabbitmq, sys; print('aio_pika' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"
