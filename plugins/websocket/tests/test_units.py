"""Protocol pieces and time-based client logic (virtual time: MockClock over memory streams)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing
from haive_plugin_websocket import (
    ConnectionConfig,
    ConnectionFailedError,
    MessageTooLargeError,
    ServerConfig,
    StreamingClient,
    reconnect_delay,
)
from haive_plugin_websocket.protocol import (
    JSON,
    MSGPACK,
    OutMessage,
    TokenBucket,
    encode_frames,
    parse_frame,
)
from haive_plugin_websocket.rooms import RoomHistory, RoomTable

from haive.dataflow.errors import ConfigError, SerializationError

# -- wire format ---------------------------------------------------------------------------


def test_batch_frames_respect_the_byte_budget_and_keep_order():
    items = [OutMessage({"type": "m", "n": n, "pad": "x" * 40}) for n in range(100)]
    frames = encode_frames(items, JSON, with_seq=False, batch=True, max_batch_bytes=1000)
    assert len(frames) > 1
    assert all(len(data) <= 1100 for _, data in frames)
    decoded = [
        m
        for _, data in frames
        for m in parse_frame(data.decode(), msgpack_frames=False, batch=True)
    ]
    assert [m["n"] for m in decoded] == list(range(100))


def test_msgpack_batches_round_trip_bytes_and_big_counts():
    items = [
        OutMessage({"type": "blob", "data": bytes([n % 256])}, seq=n + 1) for n in range(70_000)
    ]
    frames = encode_frames(items, MSGPACK, with_seq=True, batch=True, max_batch_bytes=10**9)
    assert len(frames) == 1 and frames[0][0] is False
    decoded = parse_frame(frames[0][1], msgpack_frames=True, batch=True)
    assert len(decoded) == 70_000
    assert decoded[-1] == {"type": "blob", "data": bytes([69_999 % 256]), "seq": 70_000}


def test_raw_binary_messages_travel_alone_in_order():
    items = [OutMessage({"type": "a"}), OutMessage(b"\x00\x01"), OutMessage({"type": "b"})]
    frames = encode_frames(items, JSON, with_seq=False, batch=True, max_batch_bytes=1000)
    assert frames == [(True, b'{"type":"a"}'), (False, b"\x00\x01"), (True, b'{"type":"b"}')]


def test_seq_is_spliced_into_the_encoded_json():
    out = OutMessage({"type": "t", "seq": "user value"}, seq=12)
    assert JSON.loads(out.encode(JSON, with_seq=True))["seq"] == 12
    assert JSON.loads(out.encode(JSON, with_seq=False))["seq"] == "user value"


def test_malformed_frames_raise_clear_errors():
    with pytest.raises(SerializationError, match="malformed"):
        parse_frame("{not json", msgpack_frames=False, batch=True)
    with pytest.raises(SerializationError, match="must be a list"):
        parse_frame('{"type":"batch","messages":3}', msgpack_frames=False, batch=True)
    with pytest.raises(SerializationError, match="msgpack"):
        parse_frame(b"\xc1", msgpack_frames=True, batch=True)


def test_token_bucket_refills_with_time():
    bucket = TokenBucket(rate=100, burst=10, now=0.0)
    assert bucket.take(25, now=0.0) == 10
    assert bucket.take(5, now=0.01) == 1
    assert bucket.take(100, now=10.0) == 10  # never more than the burst


# -- rooms -------------------------------------------------------------------------------------


def test_history_replays_exactly_what_was_missed_or_reports_the_gap():
    history = RoomHistory(maxlen=4)
    for seq in range(1, 11):
        history.append(OutMessage({"type": "m"}, seq))
    assert [m.seq for m in history.since(8).messages] == [9, 10]
    assert history.since(6).gap is False  # oldest kept is 7: nothing missed is gone
    replay = history.since(3)
    assert replay.gap and replay.oldest == 7 and [m.seq for m in replay.messages] == [7, 8, 9, 10]
    assert history.since(10).messages == [] and not history.since(10).gap
    assert history.since(99).gap  # a position this history never had (another server)


def test_empty_rooms_keep_history_up_to_a_bound():
    table = RoomTable(history_size=5, max_idle=2)
    for name in ("a", "b", "c"):
        table.get_or_create(name).record(OutMessage({"type": "m"}, 1))
    assert sorted(table.rooms) == ["b", "c"]


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ws://h/", "queue_policy": "wait"}, "queue_policy"),
        ({"url": "ws://h/", "compression": "brotli"}, "compression"),
        ({"url": "ws://h/", "features": ["batch", "zip"]}, "features"),
        ({"url": "ws://h/", "heartbeat_interval": "soon"}, "heartbeat_interval"),
        ({"url": "ws://h/", "jitter": 2}, "jitter"),
        ({"url": "ws://h/", "max_message_size": "lots"}, "max_message_size"),
    ],
)
def test_bad_client_config_names_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ConnectionConfig(**kwargs)


def test_bad_server_config_names_the_field():
    with pytest.raises(ConfigError, match="port"):
        ServerConfig(port=70000)
    with pytest.raises(ConfigError, match="rate_limit"):
        ServerConfig(rate_limit=0)


def test_backoff_is_exponential_capped_and_jittered():
    config = ConnectionConfig(
        url="ws://h/", reconnect_interval=0.5, max_reconnect_interval=10, jitter=0.5
    )
    rng = random.Random(7)
    for attempt in range(1, 12):
        nominal = min(10.0, 0.5 * 2 ** (attempt - 1))
        delays = {reconnect_delay(attempt, config, rng) for _ in range(50)}
        assert all(nominal * 0.5 <= d <= nominal for d in delays)
        assert len(delays) > 1  # jitter: clients dropped together spread out


# -- client queue ------------------------------------------------------------------------------


async def test_queue_while_disconnected_is_bounded_by_its_policy():
    client = StreamingClient(
        ConnectionConfig(url="ws://h/", queue_size=3, queue_policy="drop_oldest")
    )
    for n in range(5):
        await client.send_message({"type": "m", "n": n})
    assert client.queued == 3 and client.dropped == 2

    blocking = StreamingClient(ConnectionConfig(url="ws://h/", queue_size=2))
    blocking.send_message_nowait({"type": "m"})
    blocking.send_message_nowait({"type": "m"})
    with pytest.raises(trio.WouldBlock):
        blocking.send_message_nowait({"type": "m"})
    with trio.move_on_after(0.01) as scope:
        await blocking.send_message({"type": "m"})
    assert scope.cancelled_caught and blocking.queued == 2


async def test_bad_outgoing_messages_fail_in_the_caller_and_queue_nothing():
    client = StreamingClient(ConnectionConfig(url="ws://h/", max_message_size=100))
    with pytest.raises(MessageTooLargeError, match="exceeds max_message_size=100"):
        await client.send_message({"type": "big", "data": "x" * 200})
    with pytest.raises(SerializationError, match="cannot encode"):
        await client.send_message({"type": "t", "value": object()})
    with pytest.raises(ValueError, match="'type'"):
        await client.send_message({"kind": "no type"})
    with pytest.raises(TypeError):
        await client.send_message(["not", "a", "dict"])  # type: ignore[arg-type]
    assert client.queued == 0


# -- time-based client logic in virtual time -------------------------------------------------


def _recording(client: StreamingClient) -> list[Any]:
    events: list[Any] = []
    client.on_event("*")(events.append)
    return events


async def test_backoff_schedule_in_virtual_time(autojump_clock):
    attempts: list[float] = []

    async def refused() -> trio.abc.Stream:
        attempts.append(trio.current_time())
        raise ConnectionRefusedError("connection refused")

    config = ConnectionConfig(
        url="ws://peer.test/", reconnect_interval=1, max_reconnect_attempts=4, jitter=0
    )
    client = StreamingClient(config, open_stream=refused)
    events = _recording(client)
    start = trio.current_time()
    with pytest.raises(ConnectionFailedError, match="after 4 reconnect attempts"):
        async with client.connect():
            pass
    assert [round(t - start, 6) for t in attempts] == [0, 1, 3, 7, 15]
    assert [e.delay for e in events if e.kind == "reconnecting"] == [1, 2, 4, 8]
    assert events[-1].kind == "gave_up" and "ConnectionRefusedError" in events[-1].error


async def test_heartbeat_detects_a_silent_peer_in_virtual_time(autojump_clock, peers):
    async with trio.open_nursery() as nursery:

        async def open_stream() -> trio.abc.Stream:
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(peers.silent, theirs)
            return ours

        config = ConnectionConfig(
            url="ws://peer.test/",
            heartbeat_interval=30,
            heartbeat_timeout=10,
            reconnect_interval=2,
            jitter=0,
            compression=None,
        )
        client = StreamingClient(config, open_stream=open_stream)
        events = _recording(client)
        reconnected = trio.Event()
        client.on_event("reconnected")(lambda e: reconnected.set())
        start = trio.current_time()
        async with client.connect():
            await reconnected.wait()
        nursery.cancel_scope.cancel()
    kinds = [e.kind for e in events]
    assert kinds[:5] == [
        "connected",
        "heartbeat_timeout",
        "disconnected",
        "reconnecting",
        "reconnected",
    ]
    timeout = events[1]
    assert timeout.at - start == pytest.approx(40)  # ping at 30 s, no pong by 40 s
    assert events[4].at - timeout.at == pytest.approx(2)  # first backoff delay
    assert client.stats.heartbeat_timeouts == 1


async def test_a_peer_that_never_answers_the_handshake_times_out(autojump_clock):
    async with trio.open_nursery() as nursery:

        async def open_stream() -> trio.abc.Stream:
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(theirs.receive_some)  # reads the request, never answers
            return ours

        config = ConnectionConfig(
            url="ws://peer.test/",
            open_timeout=5,
            max_reconnect_attempts=1,
            reconnect_interval=1,
            jitter=0,
        )
        client = StreamingClient(config, open_stream=open_stream)
        start = trio.current_time()
        with pytest.raises(ConnectionFailedError, match="TimeoutError"):
            async with client.connect():
                pass
        assert trio.current_time() - start == pytest.approx(11)
        nursery.cancel_scope.cancel()


async def test_inbound_get_nowait_takes_whole_queued_messages_in_order_and_leaves_fragments():
    from haive_plugin_websocket._inbound import InboundFrames
    from websockets.frames import BINARY, CONT, TEXT, Frame

    resumed: list[bool] = []
    frames = InboundFrames(4, 1, resume=lambda: resumed.append(True))
    assert frames.get_nowait() is None  # nothing queued: None, never a wait
    for frame in (
        Frame(TEXT, b'{"n":1}'),
        Frame(BINARY, b"\x00"),
        Frame(TEXT, b"frag", fin=False),
        Frame(CONT, b"ment"),
        Frame(TEXT, b"after"),
        Frame(TEXT, b"last"),
    ):
        frames.put(frame)
    assert frames.paused  # more than 4 queued
    assert frames.get_nowait() == '{"n":1}'
    assert frames.get_nowait() == b"\x00"  # binary stays bytes
    assert frames.paused and not resumed
    assert frames.get_nowait() is None  # a fragmented message is get()'s to reassemble
    assert await frames.get() == "fragment"
    assert frames.paused  # two left, above the low water mark
    assert frames.get_nowait() == "after"
    assert resumed and not frames.paused  # drained to the low water mark
    assert frames.get_nowait(decode=False) == b"last"
    assert frames.get_nowait() is None


async def test_inbound_drain_stops_at_a_fragment_or_bad_utf8_and_leaves_them_to_get():
    from haive_plugin_websocket._inbound import InboundFrames
    from websockets.frames import BINARY, CONT, TEXT, Frame

    frames = InboundFrames()
    assert frames.drain() == []
    for frame in (
        Frame(TEXT, b"a"),
        Frame(BINARY, b"b"),
        Frame(TEXT, b"\xf8bad"),
        Frame(TEXT, b"c"),
    ):
        frames.put(frame)
    assert frames.drain() == ["a", b"b"]
    assert frames.get_nowait() is None  # not UTF-8: still queued, for get() to raise
    with pytest.raises(UnicodeDecodeError):
        await frames.get()
    frames.put(Frame(TEXT, b"d", fin=False))
    frames.put(Frame(CONT, b"e"))
    assert frames.drain() == ["c"]  # up to the fragmented message
    assert await frames.get() == "de"
