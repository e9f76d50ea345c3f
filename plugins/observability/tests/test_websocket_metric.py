"""WebSocket connections and room sizes from the websocket plugin's real server."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
from haive_plugin_observability import MetricsCollector, render
from haive_plugin_observability.dashboard import figures
from prometheus_client.parser import text_string_to_metric_families
from websockets.trio.client import connect

try:
    import haive_plugin_websocket as websocket_plugin
except ImportError:  # a separate distribution: skipped on a dev machine, a failure in CI
    websocket_plugin = None


@pytest.fixture(autouse=True)
def needs_the_websocket_plugin(require: Any) -> None:
    require(
        websocket_plugin is not None,
        "needs haive-plugin-websocket (pip install -e 'plugins/websocket')",
    )


async def recv_type(ws: Any, wanted: str) -> dict[str, Any]:
    with trio.fail_after(5):
        while True:
            message = orjson.loads(await ws.recv())
            if message.get("type") == wanted:
                return message


async def test_connections_and_rooms_are_reported() -> None:
    manager = websocket_plugin.WebSocketManager(port=0)
    metrics = MetricsCollector()
    metrics.watch_websocket(manager)
    all_gone = trio.Event()

    @manager.on_disconnect
    def gone(client: Any) -> None:
        if not manager.clients:
            all_gone.set()

    async with manager.serving():
        async with connect(manager.url) as a, connect(manager.url) as b, connect(manager.url) as c:
            for ws, room in ((a, "market_analysis"), (b, "market_analysis"), (c, "news")):
                await recv_type(ws, "welcome")
                await ws.send(orjson.dumps({"type": "join", "room": room}).decode())
                await recv_type(ws, "joined")
            snap = metrics.get_current()
            ws_snap = snap.websocket
            assert ws_snap.connections == 3
            assert dict(ws_snap.rooms) == {"market_analysis": 2, "news": 1}
            assert ws_snap.messages_received >= 3
            assert figures(snap)["extra"]["websocket"]["rooms"] == {"market_analysis": 2, "news": 1}
            text = render(snap).decode()
            values = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            assert values[("haive_websocket_connections", (("metric", "websocket"),))] == 3
            key = (
                "haive_websocket_room_members",
                (("metric", "websocket"), ("room", "market_analysis")),
            )
            assert values[key] == 2
        with trio.fail_after(5):
            await all_gone.wait()
        after = metrics.get_current().websocket
        assert after.connections == 0 and after.rooms == {}
