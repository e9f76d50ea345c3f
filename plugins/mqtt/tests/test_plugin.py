"""Discovery: the hooks, the metadata and `haive plugins` agree."""

from __future__ import annotations

import subprocess
import sys

from haive_plugin_mqtt import MqttSink, MqttSource

from haive.dataflow import get_registry


def test_registered() -> None:
    registry = get_registry()
    assert registry.source("mqtt") is MqttSource
    assert registry.get("sink", "mqtt") is MqttSink


def test_metadata_declares_what_the_hooks_register() -> None:
    assert get_registry().manifest_problems("haive-plugin-mqtt") == []


def test_streaming_facade_exports_the_plugin_names() -> None:
    from haive.dataflow.streaming import MqttSource as FromFacade

    assert FromFacade is MqttSource


def test_haive_plugins_lists_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli", "plugins"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "haive-plugin-mqtt" in out and "mqtt" in out


def test_importing_the_package_does_not_load_paho() -> None:
    code = "import haive_plugin_mqtt, sys; print('paho' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"
