"""Safe defaults for a public port, with real peers over real sockets: a per-connection
rate limit and message-size limit on unless turned off, and outbound drops visible while
the slow client is still connected."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from haive_plugin_websocket import ConnectionConfig, ServerConfig, StreamingClient, WebSocketManager
from haive_plugin_websocket.protocol import JSON
from trio_websocket import ConnectionClosed as TWConnectionClosed
from trio_websocket import open_websocket_url

from haive.dataflow.errors import ConfigError

PEER = Path(__file__).with_name("asyncio_peer.py")


def client_for(manager: WebSocketManager, **options: Any) -> StreamingClient:
    options.setdefault("heartbeat_interval", None)
    return StreamingClient(ConnectionConfig(url=manager.url, **options))


def test_the_defaults_limit_rate_and_size_and_only_none_turns_them_off():
    config = ServerConfig()
    assert (config.rate_limit, config.effective_rate_burst) == (100.0, 200.0)
    assert config.flood_close_after == 1000 and config.max_message_size == 2**20
    assert ServerConfig(rate_limit=1000).effective_rate_burst == 2000.0
    assert ServerConfig(rate_limit=10, rate_burst=15).effective_rate_burst == 15.0
    off = ServerConfig(rate_limit=None, max_message_size=None)
    assert off.effective_rate_burst is None and off.max_message_size is None
    with pytest.raises(ConfigError, match=r"rate_burst: 50 given, but rate_limit is None"):
        ServerConfig(rate_limit=None, rate_burst=50)
    with pytest.raises(ConfigError, match=r"rate_burst: must be >= 1 message"):
        ServerConfig(rate_burst=0.5)
    with pytest.raises(ConfigError, match=r"rate_limit: must be > 0, got 0"):
        ServerConfig(rate_limit=0)
    with pytest.raises(ConfigError, match=r"rate_limit: expected messages per second"):
        ServerConfig(rate_limit="fast")


async def test_by_default_a_flooding_peer_is_throttled_then_closed(inbox):
    with trio.fail_after(30):
        manager = WebSocketManager(port=0, close_timeout=0.5)  # the defaults

        @manager.on_message("echo")
        def echo(client, message):
            return message

        async with manager.serving():
            good = client_for(manager)
            good_box = inbox(good)
            async with good.connect(), open_websocket_url(manager.url) as flooder:
                started = trio.current_time()
                for n in range(3000):
                    try:
                        await flooder.send_message(f'{{"type": "echo", "n": {n}}}')
                    except TWConnectionClosed:
                        break
                replies: list[dict[str, Any]] = []
                with pytest.raises(TWConnectionClosed) as closed:
                    while True:
                        replies.append(JSON.loads(await flooder.get_message()))
                assert closed.value.reason.code == 1008
                assert closed.value.reason.reason == "rate limit exceeded"
                errors = [r for r in replies if r["type"] == "error"]
                assert errors and errors[0]["code"] == "rate_limited"
                assert "more than 100 messages/s" in errors[0]["message"]
                echoed = len([r for r in replies if r["type"] == "echo"])
                # the burst of 200, plus what 100/s refilled meanwhile (however slow the machine)
                assert 200 <= echoed <= 200 + 100 * (trio.current_time() - started) + 1
                await good.send_message({"type": "echo", "n": "fine"})
                assert (await good_box.wait_count("echo", 1))[0]["n"] == "fine"
        assert manager.stats.flood_disconnects == 1


async def test_rate_limit_none_lets_a_trusted_client_send_as_fast_as_it_can(inbox):
    with trio.fail_after(30):
        manager = WebSocketManager(port=0, rate_limit=None)
        received: list[int] = []
        done = trio.Event()

        @manager.on_message("m")
        def count(client, message):
            received.append(message["n"])
            if len(received) == 2000:
                done.set()

        async with manager.serving(), open_websocket_url(manager.url) as peer:
            for n in range(2000):
                await peer.send_message(f'{{"type": "m", "n": {n}}}')
            await done.wait()
        assert received == list(range(2000))
        assert manager.stats.errors["rate_limited"] == 0


async def test_by_default_a_message_over_1_mib_closes_with_1009_even_compressed():
    # The websockets asyncio client in another process, with permessage-deflate: 2 MiB of
    # zeros are a few KB on the wire; the limit applies to the decompressed size.
    with trio.fail_after(30):
        manager = WebSocketManager(port=0, close_timeout=0.5)
        async with manager.serving():
            result = await trio.run_process(
                [sys.executable, str(PEER), manager.url, "--send-zeros", str(2 * 2**20)],
                capture_stdout=True,
                capture_stderr=True,
            )
            lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
            assert lines[0]["recv"]["type"] == "welcome"
            assert lines[-1]["closed"] == 1009
            # just under the limit is fine
            result = await trio.run_process(
                [
                    sys.executable,
                    str(PEER),
                    manager.url,
                    "--send-zeros",
                    str(2**20 - 64),
                    "--send",
                    '{"type": "ping", "id": 1}',
                    "--read",
                    "3",
                ],
                capture_stdout=True,
                capture_stderr=True,
            )
            lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
            replies = [line["recv"] for line in lines if "recv" in line]
            # the ping, then the zeros: not JSON, so an error frame, and the connection stays
            assert replies[1] == {"type": "pong", "id": 1}
            assert replies[2]["type"] == "error" and replies[2]["code"] == "malformed"
            assert lines[-1] == {"open": True}
        assert manager.stats.errors["too_big"] == 1


async def test_outbound_drops_are_visible_while_the_slow_client_is_connected(inbox):
    payload = os.urandom(32 * 1024).hex()  # incompressible
    with trio.fail_after(30):
        manager = WebSocketManager(port=0, outbound_queue=8, compression=None)
        async with manager.serving():
            async with open_websocket_url(manager.url, message_queue_size=1) as slow:
                welcome = JSON.loads(await slow.get_message())
                slow_id = welcome["client_id"]
                await slow.send_message('{"type": "join", "room": "feed"}')
                while JSON.loads(await slow.get_message())["type"] != "joined":
                    pass
                # the slow peer reads nothing more: its socket buffers fill, then its queue
                for n in range(400):
                    await manager.broadcast_to_room(
                        "feed", {"type": "blob", "n": n, "data": payload}
                    )
                    if manager.stats.dropped_outbound:
                        break
                    await trio.sleep(0.001)
                assert slow_id in manager.clients  # still connected
                live = manager.connection_stats()[slow_id]
                assert live["dropped"] > 0 and live["queued"] <= 8 and live["rooms"] == ["feed"]
                assert manager.stats.dropped_outbound == live["dropped"]
                assert manager.stats.snapshot()["dropped_outbound"] == live["dropped"]
            # and the totals stay right after it left
            assert manager.stats.dropped_outbound >= live["dropped"]
