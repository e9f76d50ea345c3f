"""Discovery through the haive.dataflow entry point, and the pipeline parts at work."""

from __future__ import annotations

import importlib.metadata

import trio
from haive_plugin_websocket import (
    ConnectionConfig,
    StreamingClient,
    WebSocketManager,
    WebSocketRoomSink,
    WebSocketSource,
    hookspecs,
)
from haive_plugin_websocket.hookspecs import room_verdicts

from haive.dataflow import StreamingPipeline, hookimpl
from haive.dataflow.builtins.sources import AsyncIterableSource
from haive.dataflow.plugins import build_plugin_manager, get_registry


def test_registered_through_the_entry_point():
    registry = get_registry()
    assert registry.get("transport", "websocket") is WebSocketManager
    assert registry.source("websocket") is WebSocketSource
    assert registry.sink("websocket_room") is WebSocketRoomSink
    entry_points = importlib.metadata.entry_points(group="haive.dataflow")
    assert any(
        ep.name == "websocket" and ep.value == "haive_plugin_websocket.plugin"
        for ep in entry_points
    )
    hook = registry.plugin_manager.hook.haive_websocket_authorize_room
    assert hook.spec is not None and "any ``False`` denies" in hook.spec.function.__doc__
    # The plugin owns its hook specs and its capability kind; the core names neither.
    assert hook.spec.namespace is hookspecs
    assert [k.name for k in registry.kinds_added_by("websocket")] == ["transport"]
    assert registry.manifest_problems("haive-plugin-websocket") == []


def test_room_verdicts_call_every_plugin():
    class Guard:
        @hookimpl
        def haive_websocket_authorize_room(self, client, room, action):
            return False if room == "admin" else None

    pm = build_plugin_manager()
    pm.register(Guard(), name="guard")
    assert room_verdicts(pm, client=None, room="admin", action="join") == [False]
    assert room_verdicts(pm, client=None, room="lobby", action="join") == []  # no opinion


def test_seed_names_resolve_from_haive_dataflow_streaming():
    from haive.dataflow.streaming import (
        ConnectionConfig as SeedConfig,
    )
    from haive.dataflow.streaming import (
        MessageHandler,
        MultiRoomWebSocket,
    )
    from haive.dataflow.streaming import (
        StreamingClient as SeedClient,
    )
    from haive.dataflow.streaming import (
        WebSocketManager as SeedManager,
    )

    assert SeedClient is StreamingClient and SeedConfig is ConnectionConfig
    assert SeedManager is WebSocketManager and issubclass(MultiRoomWebSocket, WebSocketManager)
    assert MessageHandler.__module__ == "haive_plugin_websocket.handlers"


async def test_pipeline_reads_from_clients_and_broadcasts_to_a_room(inbox):
    """Clients send readings -> pipeline doubles them -> the results go to a room."""
    with trio.fail_after(10):
        manager = WebSocketManager(port=0)
        source = WebSocketSource(manager, types=["reading"])
        pipeline = StreamingPipeline("ws-roundtrip")
        pipeline.set_source(source)
        pipeline.add_processor(
            lambda m: {"type": "doubled", "from": m.client_id, "value": m.data["value"] * 2}
        )
        pipeline.set_sink(WebSocketRoomSink(manager, "results"))
        async with manager.serving(), trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.execute)
            watcher = StreamingClient(ConnectionConfig(url=manager.url, heartbeat_interval=None))
            sender = StreamingClient(
                ConnectionConfig(url=manager.url, heartbeat_interval=None, client_id="s1")
            )
            box = inbox(watcher)
            async with watcher.connect(), sender.connect():
                await watcher.join("results")
                for value in range(10):
                    await sender.send_message({"type": "reading", "value": value})
                results = await box.wait_count("doubled", 10)
                assert [r["value"] for r in results] == [2 * v for v in range(10)]
                assert {r["from"] for r in results} == {"s1"}
            source.close()


async def test_room_sink_wraps_plain_items_and_keeps_history():
    async def numbers():
        for n in range(3):
            yield n

    manager = WebSocketManager(port=0, history_size=2)
    sink = WebSocketRoomSink(manager, "scores", message_type="score")
    pipeline = StreamingPipeline("to-room")
    pipeline.set_source(AsyncIterableSource(numbers()))
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.sent == 3
    assert manager.history("scores") == [
        {"type": "score", "data": 1, "room": "scores", "seq": 2},
        {"type": "score", "data": 2, "room": "scores", "seq": 3},
    ]
