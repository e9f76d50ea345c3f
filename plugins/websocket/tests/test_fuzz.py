"""Fuzzing what a remote peer controls, against a live server over real sockets.

A :class:`~haive_plugin_websocket.WebSocketManager` with its default limits (and a small
``max_message_size``, so that oversized messages are cheap) serves in its own thread;
hypothesis drives peers (the ``websockets`` sync client) that negotiate random features and
send malformed JSON, every control message with wrong types in every field, unknown types,
forged protocol messages, batch frames, raw and MessagePack binary frames, invalid UTF-8
text frames, deeply nested and oversized messages. For every example:

* the peer gets an error frame (a known code, a message) or a close code that says why
  (1007 invalid UTF-8, 1009 too big), never 1011 (a crashed handler), and no traceback is
  logged;
* what it sent before and, if still connected, after the bad frames is all received by the
  server's handler, in order (nothing accepted is lost);
* a witness connection open the whole time still answers at once (nobody is stalled).

Examples are kept few (``max_examples``) so the module runs in seconds on a loaded machine.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import trio
from haive_plugin_websocket import WebSocketManager
from haive_plugin_websocket.protocol import ERROR_CODES, SERVER_TYPES
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

MAX_SIZE = 16 * 1024
WITNESS = "witness"  # the id of the connection that must never be stalled
TIMEOUT = 20.0  # generous: the machine running the tests may be loaded


class LiveServer:
    """A WebSocketManager serving in a thread of its own (its own trio loop)."""

    def __init__(self) -> None:
        self.records: dict[str, list[Any]] = defaultdict(list)
        self.manager = WebSocketManager(port=0, max_message_size=MAX_SIZE, close_timeout=1.0)
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self.failure: BaseException | None = None

        @self.manager.on_message("record")
        def record(client: Any, message: dict[str, Any]) -> None:
            self.records[client.client_id].append(message.get("n"))

        @self.manager.on_message("echo")
        def echo(client: Any, message: dict[str, Any]) -> dict[str, Any]:
            return message

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        try:
            async with self.manager.serving():
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # the test reports it: the server must never die
            self.failure = exc
            self._ready.set()
            raise

    @property
    def url(self) -> str:
        return self.manager.url

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(TIMEOUT) or self.failure is not None:
            raise RuntimeError(f"the server did not start: {self.failure!r}")

    def stop(self) -> None:
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(TIMEOUT)

    def wait_gone(self, client_id: str) -> None:
        """Wait until the server has finished with a closed connection (its handler ended)."""
        deadline = time.monotonic() + TIMEOUT
        while client_id in self.manager.clients:
            assert time.monotonic() < deadline, f"the server still holds {client_id}"
            time.sleep(0.002)

    def alive(self) -> bool:
        return self._thread.is_alive() and self.failure is None


class TracebackCatcher(logging.Handler):
    """Collects every log record that carries a traceback (a crash somewhere)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.crashes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None:
            self.crashes.append(self.format(record))

    def take(self) -> list[str]:
        crashes, self.crashes = self.crashes, []
        return crashes


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[LiveServer, ClientConnection, TracebackCatcher]]:
    catcher = TracebackCatcher()
    loggers = [logging.getLogger(name) for name in ("haive.websocket", "websockets")]
    for logger in loggers:
        logger.addHandler(catcher)
    server = LiveServer()
    server.start()
    try:
        with connect(
            server.url, open_timeout=TIMEOUT, additional_headers=[("X-Haive-Client-Id", WITNESS)]
        ) as witness:
            receive(witness)  # welcome
            yield server, witness, catcher
    finally:
        server.stop()
        for logger in loggers:
            logger.removeHandler(catcher)


def receive(ws: ClientConnection) -> Any:
    raw = ws.recv(timeout=TIMEOUT)
    return json.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, raw=False)


def roundtrip(ws: ClientConnection, request_id: str) -> list[Any]:
    """Send a ping and collect every message received until its pong (batches unpacked)."""
    ws.send(json.dumps({"type": "ping", "id": request_id}))
    seen: list[Any] = []
    while True:
        message = receive(ws)
        batch = message.get("messages") if message.get("type") == "batch" else [message]
        for one in batch:
            seen.append(one)
            if one.get("type") == "pong" and one.get("id") == request_id:
                return seen


# -- strategies --------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
PROTOCOL_TYPES = [
    "join",
    "leave",
    "members",
    "rooms",
    "publish",
    "direct",
    "ping",
    "batch",
    "echo",
    "welcome",
    "joined",
    "error",
    "binary",
    "gap",
]
FIELDS = ["room", "since", "epoch", "id", "message", "to", "echo", "messages", "client_id", "n"]
plausible = st.one_of(
    st.sampled_from(["fuzz", "lobby", "a" * 129, "bad room", "", "x\n", "team/1", WITNESS]),
    st.integers(min_value=-5, max_value=2**63),
    st.builds(lambda t: {"type": t}, st.sampled_from(PROTOCOL_TYPES)),
)
messages = st.builds(
    lambda mtype, fields: {"type": mtype, **fields},
    st.sampled_from(PROTOCOL_TYPES) | st.text(max_size=10) | json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values | plausible, max_size=4),
)


def _msgpack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return msgpack.packb({"type": "echo", "unpackable": True})


# What only MessagePack can carry: bytes values, and keys that are not strings (ints,
# bytes, arrays), sent in binary frames once msgpack is negotiated.
msgpack_values = st.recursive(
    json_values | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=4) | st.integers() | st.binary(max_size=4) | st.tuples(st.integers()),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)
msgpack_messages = st.builds(
    lambda mtype, fields, extra: {"type": mtype, **fields, **extra},
    st.sampled_from(PROTOCOL_TYPES),
    st.dictionaries(st.sampled_from(FIELDS), msgpack_values | plausible, max_size=4),
    st.dictionaries(st.integers() | st.tuples(st.integers()), msgpack_values, max_size=2),
)

frames = st.one_of(
    messages.map(lambda m: ("text", json.dumps(m))),
    st.lists(messages, max_size=8).map(
        lambda ms: ("text", json.dumps({"type": "batch", "messages": ms}))
    ),
    json_values.map(lambda v: ("text", json.dumps(v))),
    st.text(max_size=100).map(lambda t: ("text", t)),
    messages.map(lambda m: ("truncated", json.dumps(m)[:-1])),
    st.text(max_size=10).map(lambda t: ("unknown", json.dumps({"type": "zz-" + t}))),
    st.binary(max_size=100).map(lambda b: ("binary", b)),
    messages.map(lambda m: ("binary", _msgpack(m))),
    msgpack_messages.map(lambda m: ("binary", _msgpack(m))),
    st.builds(  # a relay to the witness (a JSON client) of what JSON cannot encode
        lambda kind, m: (
            "binary",
            _msgpack({"type": kind, "to": WITNESS, "room": "fuzz", "message": m, "echo": True}),
        ),
        st.sampled_from(["direct", "publish"]),
        msgpack_messages,
    ),
    st.binary(max_size=30).map(lambda b: ("bad_utf8", b"\xff" + b)),
    st.sampled_from([b"\xc0\xaf", b"\xed\xa0\x80", b"ok\xf8"]).map(lambda b: ("bad_utf8", b)),
    st.integers(min_value=MAX_SIZE + 1, max_value=4 * MAX_SIZE).map(lambda n: ("huge", n)),
    st.integers(min_value=1000, max_value=8_000).map(lambda d: ("text", "[" * d + "]" * d)),
    st.integers(min_value=100, max_value=5_000).map(
        lambda d: ("binary", b"\x91" * d + b"\x00")  # msgpack nested arrays
    ),
)
feature_sets = st.lists(
    st.sampled_from(["batch", "recovery", "msgpack", "bogus", ""]), max_size=4
).map(lambda fs: ", ".join(fs))


# -- the properties --------------------------------------------------------------------


def _send(ws: ClientConnection, kind: str, payload: Any) -> None:
    if kind in ("text", "truncated", "unknown"):
        ws.send(payload)
    elif kind == "binary":
        ws.send(payload, text=False)
    elif kind == "bad_utf8":
        ws.send(payload, text=True)  # bytes in a text frame: not valid UTF-8
    elif kind == "huge":
        ws.send(json.dumps({"type": "echo", "pad": "x" * payload}))


def _size(kind: str, payload: Any) -> int:
    if kind == "huge":
        return int(payload)
    return len(payload.encode() if isinstance(payload, str) else payload)


def _witness_answers(witness: ClientConnection) -> None:
    request_id = f"witness-{uuid.uuid4().hex}"
    roundtrip(witness, request_id)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(features=feature_sets, sent=st.lists(frames, min_size=1, max_size=6))
# What the fuzzer found (each crashed the sender's connection handler with 1011), and the
# limits, always tried:
@example(features="msgpack", sent=[("binary", b"\x81\x91\x01\x01")])  # map keyed by an array
@example(
    features="msgpack",  # bytes and an int key, relayed to a JSON client
    sent=[
        ("binary", _msgpack({"type": "direct", "to": WITNESS, "message": {"type": "n", 0: b"x"}}))
    ],
)
@example(features="batch", sent=[("huge", MAX_SIZE + 1)])
@example(features="", sent=[("bad_utf8", b"\xc0\xaf"), ("text", "{")])
def test_nothing_a_peer_sends_crashes_stalls_or_loses_data(live, features, sent):
    server, witness, catcher = live
    headers = [("X-Haive-Features", features)] if features else []
    with connect(
        server.url, additional_headers=headers, open_timeout=TIMEOUT, max_size=2**22
    ) as ws:
        welcome = receive(ws)
        assert welcome["type"] == "welcome"
        client_id = welcome["client_id"]
        for n in range(3):
            ws.send(json.dumps({"type": "record", "n": n}))
        roundtrip(ws, f"before-{uuid.uuid4().hex}")  # the server has taken these three
        replies: list[Any] = []
        closed: ConnectionClosed | None = None
        try:
            for kind, payload in sent:
                _send(ws, kind, payload)
            for n in range(3, 6):
                ws.send(json.dumps({"type": "record", "n": n}))
            replies = roundtrip(ws, f"after-{uuid.uuid4().hex}")
        except ConnectionClosed as exc:
            closed = exc
        except TimeoutError:
            pytest.fail(f"the server went silent after {sent!r:.400}")

    kinds = {kind for kind, _ in sent}
    recorded = server.records.pop(client_id, [])
    if closed is None:
        # Still connected: every record arrived, in order, around whatever was sent.
        assert recorded == list(range(6)), sent
    else:
        # Only a frame that must end the connection may end it, with the code saying why.
        code = closed.rcvd.code if closed.rcvd is not None else None
        allowed = (
            {1009} if any(_size(kind, payload) > MAX_SIZE for kind, payload in sent) else set()
        )
        if "bad_utf8" in kinds:
            allowed.add(1007)
        assert code in allowed, (code, sent)
        assert recorded[:3] == [0, 1, 2]  # what it acknowledged before is kept
    errors = [m for m in replies if isinstance(m, dict) and m.get("type") == "error"]
    for error in errors:
        assert error["code"] in ERROR_CODES and isinstance(error["message"], str)
        assert error["message"]
    assert not any(e["code"] == "rate_limited" for e in errors)
    if closed is None:
        codes = [e["code"] for e in errors]
        assert codes.count("malformed") >= sum(kind == "truncated" for kind, _ in sent)
        assert codes.count("unknown_type") >= sum(kind == "unknown" for kind, _ in sent)
    server.wait_gone(client_id)
    _witness_answers(witness)  # another client is served at once
    assert server.alive()
    assert not catcher.take()


@settings(max_examples=40, deadline=None, database=None)
@given(
    control=st.sampled_from(["join", "leave", "members", "rooms", "publish", "direct", "ping"]),
    field=st.sampled_from(FIELDS),
    value=json_values | plausible,
)
def test_every_control_message_with_a_wrong_field_gets_an_answer(live, control, field, value):
    # Each control message, one field replaced by a value of any type: the server answers
    # (a reply or an error frame naming the problem), never closes, never stays silent.
    server, witness, catcher = live
    with connect(server.url, open_timeout=TIMEOUT) as ws:
        client_id = receive(ws)["client_id"]  # welcome
        ws.send(json.dumps({"type": "join", "room": "fuzz"}))
        roundtrip(ws, f"joined-{uuid.uuid4().hex}")
        request: dict[str, Any] = {
            "type": control,
            "room": "fuzz",
            "to": "nobody",
            "message": {"type": "note"},
            "id": 1,
        }
        request[field] = value
        ws.send(json.dumps(request))
        done = f"done-{uuid.uuid4().hex}"
        replies = roundtrip(ws, done)
    answers = [m for m in replies if m.get("id") != done]
    inner = request["message"]
    relays_quietly = (
        control == "publish"
        and request["room"] == "fuzz"
        and type(inner) is dict
        and isinstance(inner.get("type"), str)
        and inner["type"] not in SERVER_TYPES
    )
    if relays_quietly:
        # a valid publish goes to the room's other members (none here), or back if echo
        assert all(m.get("type") != "error" for m in answers), answers
    else:
        assert answers, f"no answer to {request!r:.300}"
    for message in answers:
        if message.get("type") == "error":
            assert message["code"] in ERROR_CODES and message["message"]
    server.wait_gone(client_id)
    _witness_answers(witness)
    assert server.alive()
    assert not catcher.take()
