"""Broker addresses, errors, and :class:`Session`: one paho client driven from a ThreadBridge.

paho-mqtt is a blocking client with its own network loop. The plugin never starts paho's
loop thread (``loop_start``): every call on a :class:`Session` (connect, read what arrived,
acknowledge, publish and wait for the confirmations) is made through the owning trio
task's :class:`~haive.dataflow.runtime.bridge.ThreadBridge`, one call per batch, and runs
paho's loop (``loop``, ``loop_read``) inside that call. paho is therefore used from one
thread only, and nothing reads the socket while the pipeline is busy: what the broker sends
meanwhile waits in the broker (QoS 1/2 are bounded by the receive maximum the source
announces) or in the kernel's socket buffer (QoS 0).
"""

from __future__ import annotations

import select
import time
import urllib.parse
from collections import deque
from typing import Any

import attrs
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.runtime.validation import invalid

from .client import Arrived, BufferedClient

DEFAULT_URL = "mqtt://127.0.0.1:1883"
SCHEMES = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}
#: CONNACK reason codes that mean the credentials were refused (MQTT 5, 3.2.2.2).
AUTH_REASONS = {0x86: "bad user name or password", 0x87: "not authorized",
                0x8C: "bad authentication method"}
NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5 session expiry interval meaning "never"


class MqttError(HaiveError):
    """Something went wrong talking to the MQTT broker."""


class MqttConnectError(MqttError):
    """The broker could not be reached, or refused the connection."""


class MqttAuthError(MqttConnectError):
    """The broker refused the credentials (bad user name or password, not authorized)."""


class MqttPublishError(MqttError):
    """Messages were not confirmed by the broker after every retry."""


@attrs.frozen
class Endpoint:
    """Where the broker is, parsed from ``mqtt://user:password@host:port`` (``mqtts://``
    for TLS).

    Example::

        >>> Endpoint.parse("MqttSource", "mqtt://ada:secret@broker:1884")
        Endpoint(host='broker', port=1884, username='ada', password='secret', tls=False)
        >>> Endpoint.parse("MqttSource", "http://broker")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: MqttSource(url='http://broker'): url must be mqtt://[user:password@]host[:port] (or mqtts:// for TLS), got 'http://broker'
    """

    host: str
    port: int
    username: str | None = attrs.field(default=None, repr=True)
    password: str | None = attrs.field(default=None, repr=True)
    tls: bool = False

    @classmethod
    def parse(cls, owner: str, url: object) -> Endpoint:
        allowed = "mqtt://[user:password@]host[:port] (or mqtts:// for TLS)"
        if not isinstance(url, str):
            raise ConfigError(invalid(owner, "url", url, allowed))
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError(invalid(owner, "url", url, allowed)) from None
        if parts.scheme not in SCHEMES or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(invalid(owner, "url", url, allowed))
        return cls(
            host=parts.hostname,
            port=port or SCHEMES[parts.scheme],
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
            tls=parts.scheme in ("mqtts", "ssl"),
        )

    def __str__(self) -> str:
        """The address without the password."""
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def check_client_id(owner: str, client_id: object) -> str:
    if not isinstance(client_id, str) or not client_id or len(client_id.encode()) > 65_535:
        raise ConfigError(invalid(owner, "client_id", client_id, "a non-empty string"))
    return client_id


def check_qos(owner: str, parameter: str, qos: object) -> int:
    if not isinstance(qos, int) or isinstance(qos, bool) or qos not in (0, 1, 2):
        raise ConfigError(invalid(owner, parameter, qos, "0, 1 or 2"))
    return qos


def new_properties(packet_type: int) -> Properties:
    """MQTT 5 properties for a packet of ``packet_type`` (paho's constructor is untyped)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def reason_text(reason: ReasonCode | int) -> str:
    value = reason.value if isinstance(reason, ReasonCode) else reason
    return f"{reason} (reason code 0x{value:02X})"


@attrs.define(eq=False)
class Outgoing:
    """A message to publish, and how far it got (read by the sink after each crossing)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None
    info: paho.MQTTMessageInfo | None = None
    confirmed: bool = False
    error: str | None = None  # the broker refused it (a PUBACK/PUBREC reason code >= 0x80)


class Session:
    """One paho MQTT 5 client and what arrived on it. Every method runs in the owner's
    ThreadBridge thread (paho is used from that thread only).

    ``receive_maximum`` is announced in CONNECT: the broker sends at most that many QoS 1/2
    messages not yet acknowledged (the source's in-flight bound). ``session_expiry`` > 0
    with ``clean_start=False`` keeps the session (subscriptions, unacknowledged and queued
    messages) in the broker while the client is away.

    Example::

        >>> s = Session(Endpoint("127.0.0.1", 1883), "doc", clean_start=True,
        ...             session_expiry=0, receive_maximum=10, keepalive=30,
        ...             manual_ack=False, connect_timeout=5.0)
        >>> s.connect()                      # a fresh session: none was present
        False
        >>> s.close()
    """

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        *,
        clean_start: bool,
        session_expiry: int,
        receive_maximum: int,
        keepalive: int,
        manual_ack: bool,
        connect_timeout: float,
        max_in_flight: int = 20,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.max_in_flight = max_in_flight
        client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                                protocol=paho.MQTTv5, manual_ack=manual_ack)
        client.max_queued_messages_set(0)  # bounded by the batches the sink hands over
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self.client = client
        self.received: deque[Arrived] = deque()
        self.generation = 0  # connections made so far; a message's ack is only valid in its own
        self.session_present = False
        self.max_packet_size: int | None = None  # the broker's, from CONNACK
        self._connack: ReasonCode | None = None
        self._confirmed: dict[int, ReasonCode] = {}
        self._lost: str | None = None

    # -- callbacks (inside paho's loop, in this thread) ------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self._connack = reason
        self.session_present = bool(flags.session_present)
        if properties is not None:
            size = getattr(properties, "MaximumPacketSize", None)
            self.max_packet_size = int(size) if size else None
            # Never more in flight than the broker's receive maximum (it disconnects a client
            # that sends more). paho does not apply it itself, and its public setter refuses
            # changes on an open connection; the window is only read when paho sends, which
            # happens after this callback, so setting the field here is safe (never to 0,
            # the one value paho treats differently).
            receive = getattr(properties, "ReceiveMaximum", None) or 65_535
            client._max_inflight_messages = max(1, min(self.max_in_flight, int(receive)))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self._lost = str(reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # Only the values are kept: paho's message object (a lock, a condition, a
        # properties object of dicts) is freed at once instead of surviving into the
        # garbage collector's older generations while a batch fills, which cost more CPU
        # than reading the message did.
        properties = message.properties
        attributes = vars(properties) if properties is not None else {}
        payload = message.payload
        self.received.append(Arrived(
            message.topic, payload if isinstance(payload, bytes) else bytes(payload),
            message.qos, bool(message.retain), bool(message.dup), message.mid,
            attributes.get("UserProperty"), attributes.get("ContentType"), time.time(),
        ))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self._confirmed[mid] = reason

    def _step(self, timeout: float) -> MQTTErrorCode:
        """One turn of paho's loop: a packet already read into the buffer is handled at
        once (``select`` would not see it), else wait up to ``timeout`` for the socket."""
        if self.client.buffered:
            rc = self.client.loop_read()
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self.client.want_write():
                rc = self.client.loop_write()
            return rc
        return self.client.loop(timeout)

    def _who(self) -> str:
        return f" of client id {self.client_id!r}" if self.client_id else ""

    # -- connecting -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    def connect(self) -> bool:
        """Connect and wait for CONNACK; returns whether the broker had a session for this
        client id. Raises MqttAuthError / MqttConnectError with the reason."""
        properties = new_properties(PacketTypes.CONNECT)
        if self.session_expiry:
            properties.SessionExpiryInterval = self.session_expiry
        properties.ReceiveMaximum = self.receive_maximum
        self._connack, self._lost = None, None
        try:
            if self.generation == 0:
                self.client.connect(self.endpoint.host, self.endpoint.port, self.keepalive,
                                    clean_start=self.clean_start, properties=properties)
            else:
                self.client.reconnect()
        except OSError as error:
            raise MqttConnectError(
                f"cannot connect to the MQTT broker at {self.endpoint}{self._who()}: "
                f"{type(error).__name__}: {error}"
            ) from error
        deadline = time.monotonic() + self.connect_timeout
        while self._connack is None:
            remaining = deadline - time.monotonic()
            rc = self._step(max(0.0, min(remaining, 0.1)))
            if self._connack is not None:
                break
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or remaining <= 0:
                self.client.disconnect()
                why = f"{paho.error_string(rc)}" if remaining > 0 else "no CONNACK in time"
                raise MqttConnectError(
                    f"the MQTT broker at {self.endpoint} did not accept the connection"
                    f"{self._who()} within {self.connect_timeout}s: {why}"
                )
        if self._connack.is_failure:
            code = self._connack.value
            self.client.disconnect()
            if code in AUTH_REASONS:
                raise MqttAuthError(
                    f"the MQTT broker at {self.endpoint} refused the credentials"
                    f"{self._who()}: {AUTH_REASONS[code]} ({reason_text(self._connack)}); "
                    "check the user name and password in the url"
                )
            raise MqttConnectError(
                f"the MQTT broker at {self.endpoint} refused the connection{self._who()}: "
                f"{reason_text(self._connack)}"
            )
        if self.generation:
            # Read on the lost connection and not taken yet: the broker sends the QoS 1/2
            # ones again on this one (same session), so they are dropped here, not doubled.
            kept = [arrived for arrived in self.received if arrived.qos == 0]
            self.received.clear()
            self.received.extend(kept)
        self.generation += 1
        return self.session_present

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        """Subscribe (retained messages only for a new subscription, so a resumed session
        does not get them again) and wait for SUBACK; a refused filter raises."""
        granted: list[list[ReasonCode]] = []

        def on_subscribe(client: paho.Client, userdata: Any, mid: int,
                         reasons: list[ReasonCode], properties: Properties | None) -> None:
            granted.append(reasons)

        self.client.on_subscribe = on_subscribe
        options = [(topic, SubscribeOptions(qos=qos, retainHandling=1))
                   for topic, qos in filters]
        rc, _ = self.client.subscribe(options)
        deadline = time.monotonic() + self.connect_timeout
        while not granted and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            if time.monotonic() > deadline:
                raise MqttConnectError(f"no SUBACK from {self.endpoint} for {filters}")
            rc = self._step(0.1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttConnectError(
                f"cannot subscribe to {[t for t, _ in filters]} on {self.endpoint}: "
                f"{paho.error_string(rc)}"
            )
        for (topic, _), reason in zip(filters, granted[0], strict=False):
            if reason.is_failure:
                raise MqttConnectError(
                    f"the MQTT broker at {self.endpoint} refused the subscription to "
                    f"{topic!r}: {reason_text(reason)}"
                )

    def close(self) -> None:
        """Disconnect cleanly (the session stays in the broker for ``session_expiry``)."""
        if self.client.is_connected():
            self.client.round_trip(min(self.connect_timeout, 5.0))  # the last acks arrived
            self.client.disconnect()
            self.client.loop(0)
        # The socket pair paho made to wake its select() is closed by paho's own loop thread
        # when it stops; that thread is never started here, so close them directly.
        self.client._reset_sockets()

    # -- reading ----------------------------------------------------------------------------
    def poll(self, count: int, wait: float) -> list[Arrived]:
        """At most ``count`` messages that arrived, with their receive times (waiting up to
        ``wait`` seconds when none is ready; never waiting to fill ``count``). Raises
        ConnectionError when the connection was lost and nothing is left to read."""
        received = self.received
        client = self.client
        deadline = time.monotonic() + wait
        while len(received) < count:
            before = len(received)
            rc = client.loop_read()
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and len(received) > before:
                continue
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if client.buffered:
                continue  # another packet (PUBACK, PINGRESP...) is already here
            if received:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            rc = client.loop(remaining)  # select, read, write, keepalive
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        client.loop_misc()  # keepalive PINGREQ when due
        if not received and not client.is_connected():
            raise ConnectionError(self._lost or "connection lost")
        return [received.popleft() for _ in range(min(count, len(received)))]

    def ack(self, messages: list[tuple[int, int, int]]) -> int:
        """PUBACK (QoS 1) / PUBREC (QoS 2) these (mid, qos, generation), in order; returns
        how many were sent. Acks of an earlier connection are not sent: the broker
        redelivers those messages on the new one (where they are acknowledged), so they
        come twice, never lost."""
        if not self.client.is_connected():
            return 0
        ack, current, sent = self.client.ack, self.generation, 0
        for mid, qos, generation in messages:
            if generation == current:
                ack(mid, qos)
                sent += 1
        self.client.loop_write()
        # A socket the broker closed is only noticed on writing (or reading): then these
        # acks went nowhere, and the broker sends the messages again.
        return sent if self.client.is_connected() else 0

    # -- publishing -------------------------------------------------------------------------
    def publish(self, messages: list[Outgoing], timeout: float) -> None:
        """Publish what was not handed to paho yet and wait until every message is
        confirmed (QoS 0: written to the socket; QoS 1: PUBACK; QoS 2: PUBCOMP), the
        connection is lost, or ``timeout`` passed. Outcomes are set on the messages.
        Unconfirmed QoS 1/2 messages stay with paho, which sends them again after a
        reconnect (with the DUP flag)."""
        client = self.client
        confirmed = self._confirmed
        for message in messages:
            if message.info is None or (message.qos == 0 and message.info.rc):
                message.info = client.publish(message.topic, message.payload, message.qos,
                                              message.retain, message.properties)
        pending = [m for m in messages if not m.confirmed and m.error is None]
        deadline = time.monotonic() + timeout
        while pending:
            still: list[Outgoing] = []
            for message in pending:
                info = message.info
                assert info is not None
                if message.qos == 0:
                    if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS and info.is_published():
                        message.confirmed = True
                    elif info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                        still.append(message)
                    continue
                reason = confirmed.pop(info.mid, None)
                if reason is None:
                    still.append(message)
                elif reason.is_failure:
                    message.error = reason_text(reason)
                else:
                    message.confirmed = True
            pending = still
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0 or not client.is_connected():
                break
            if client.want_write():
                client.loop_write()
            sock = client.socket()
            if sock is not None:
                readable = client.buffered or select.select(
                    [sock], [], [], min(remaining, 1.0))[0]
                if readable:
                    rc = client.loop_read()
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
            client.loop_misc()

