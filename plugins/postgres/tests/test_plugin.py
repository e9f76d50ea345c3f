"""Discovery: the hooks, the metadata and `haive plugins` agree."""

from __future__ import annotations

import subprocess
import sys

from haive_plugin_postgres import PostgresCdcSource, PostgresSink

from haive.dataflow import get_registry


def test_registered() -> None:
    registry = get_registry()
    assert registry.source("postgres_cdc") is PostgresCdcSource
    assert registry.get("sink", "postgres") is PostgresSink


def test_metadata_declares_what_the_hooks_register() -> None:
    assert get_registry().manifest_problems("haive-plugin-postgres") == []


def test_streaming_facade_exports_the_plugin_names() -> None:
    from haive.dataflow.streaming import PostgresCdcSource as FromFacade
    from haive.dataflow.streaming import PostgresSink as SinkFromFacade

    assert FromFacade is PostgresCdcSource and SinkFromFacade is PostgresSink


def test_haive_plugins_lists_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli", "plugins"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "haive-plugin-postgres" in out and "postgres_cdc" in out


def test_importing_the_package_does_not_load_psycopg() -> None:
    code = "import haive_plugin_postgres, sys; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"
