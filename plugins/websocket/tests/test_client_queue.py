"""The client's queue while disconnected, end to end: its policy decides what the server gets."""

from __future__ import annotations

import pytest
import trio
from haive_plugin_websocket import ConnectionConfig, StreamingClient, WebSocketManager


@pytest.mark.parametrize(
    ("policy", "kept"), [("drop_oldest", [2, 3, 4]), ("drop_newest", [0, 1, 2])]
)
async def test_messages_queued_while_disconnected_follow_the_queue_policy(policy, kept):
    received: list[int] = []
    arrived = trio.Event()

    with trio.fail_after(30):
        manager = WebSocketManager(port=0)

        @manager.on_message("m")
        async def on_m(client, message):
            received.append(message["n"])
            if message["n"] == 99:
                arrived.set()

        async with manager.serving():
            client = StreamingClient(
                ConnectionConfig(
                    url=manager.url, queue_size=3, queue_policy=policy, heartbeat_interval=None
                )
            )
            for n in range(5):  # not connected yet: they wait in the bounded queue
                await client.send_message({"type": "m", "n": n})
            assert client.queued == 3 and client.dropped == 2
            async with client.connect():
                await client.flush()  # the queue goes out first, in order
                await client.send_message({"type": "m", "n": 99})  # nothing after it is lost
                await arrived.wait()
    assert received == [*kept, 99]


async def test_a_full_block_queue_holds_the_sender_until_the_writer_makes_room():
    received: list[int] = []
    arrived = trio.Event()

    with trio.fail_after(30):
        manager = WebSocketManager(port=0, rate_limit=None)

        @manager.on_message("m")
        def on_m(client, message):
            received.append(message["n"])
            if message["n"] == 9:
                arrived.set()

        async with manager.serving():
            client = StreamingClient(
                ConnectionConfig(url=manager.url, queue_size=3, heartbeat_interval=None)
            )
            for n in range(3):  # not connected yet: the queue fills up
                await client.send_message({"type": "m", "n": n})
            with pytest.raises(trio.WouldBlock):
                client.send_message_nowait({"type": "m", "n": 3})
            with trio.move_on_after(0.05) as waited:
                await client.send_message({"type": "m", "n": 3})
            assert waited.cancelled_caught and client.queued == 3  # held, nothing dropped
            async with client.connect():
                for n in range(3, 10):  # each waits for room whenever the queue is full
                    await client.send_message({"type": "m", "n": n})
                await arrived.wait()
            assert client.dropped == 0
    assert received == list(range(10))


async def test_an_async_handler_finishes_before_the_next_message_of_its_batch_frame():
    order: list[str] = []
    done = trio.Event()

    with trio.fail_after(30):
        manager = WebSocketManager(port=0)

        @manager.on_message("go")
        def go(session, message):
            for kind in ("a", "b", "c"):  # queued together: one batch frame
                session.send({"type": kind})

        async with manager.serving():
            client = StreamingClient(ConnectionConfig(url=manager.url, heartbeat_interval=None))
            client.on_message("a")(lambda message: order.append("a"))

            @client.on_message("b")
            async def on_b(message):
                order.append("b started")
                await trio.sleep(0.01)
                order.append("b done")

            @client.on_message("c")
            def on_c(message):
                order.append("c")
                done.set()

            async with client.connect():
                assert "batch" in client.features
                await client.send_message({"type": "go"})
                await done.wait()
    assert order == ["a", "b started", "b done", "c"]
