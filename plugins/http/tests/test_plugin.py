"""Discovery: the hooks, the metadata and `haive plugins` agree; `haive run` serves the
webhook endpoint of a pipeline file (the plugin's haive_run_services)."""

from __future__ import annotations

import subprocess
import sys

from haive_plugin_http import HttpSink, WebhookSource

from haive.dataflow import get_registry
from haive.dataflow.plugins import get_registry as registry_of_plugins


def test_registered() -> None:
    registry = get_registry()
    assert registry.source("webhook") is WebhookSource
    assert registry.get("sink", "http") is HttpSink


def test_metadata_declares_what_the_hooks_register() -> None:
    assert get_registry().manifest_problems("haive-plugin-http") == []


def test_streaming_facade_exports_the_plugin_names() -> None:
    from haive.dataflow.streaming import HttpSink as SinkFromFacade
    from haive.dataflow.streaming import WebhookSource as SourceFromFacade

    assert (SourceFromFacade, SinkFromFacade) == (WebhookSource, HttpSink)


def test_haive_plugins_lists_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli", "plugins"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "haive-plugin-http" in out and "webhook" in out


def test_importing_the_package_loads_no_server_or_client() -> None:
    code = (
        "import haive_plugin_http, sys; "
        "print(any(m in sys.modules for m in ('hypercorn', 'starlette', 'httpx')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"


def test_run_services_serves_only_webhook_pipelines() -> None:
    from haive.dataflow.builtins.sources import IterableSource
    from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

    other = StreamingPipeline("other")
    other.set_source(IterableSource([1]))
    hooks = registry_of_plugins().run_services(other)
    assert all("haive_plugin_http" not in type(h).__module__ for h in hooks)
    webhook = StreamingPipeline("hooks")
    webhook.set_source(WebhookSource(port=0))
    assert len(registry_of_plugins().run_services(webhook)) == len(hooks) + 1
