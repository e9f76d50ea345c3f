"""paho's MQTT client, tuned for being driven batch by batch from a ThreadBridge:
:class:`BufferedClient` (large socket reads; QoS 2 acknowledged after the write) and
:class:`Arrived` (what is kept of a received message)."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from typing import NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)  # Linux only


class Arrived(NamedTuple):
    """What the session keeps of a received message."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    duplicate: bool
    mid: int
    user_properties: list[tuple[str, str]] | None
    content_type: str | None
    received_at: float  # time.time() when read from the socket


class BufferedClient(paho.Client):
    """paho's client reading the socket 64 KiB at a time.

    paho reads every packet with at least three ``recv`` calls (one byte of packet type, the
    length bytes one by one, then the rest). Each releases and retakes the GIL, and with
    the pipeline's trio thread running beside the bridge thread every retake can wait for
    the other thread's switch interval: reading 20,000 small messages took 7 s that way
    against 1.5 s for a lone paho loop. Serving paho's small reads from one large read
    removes nearly all of those hand-offs. ``buffered`` says whether a whole read is
    waiting here, where ``select`` on the socket cannot see it.

    With ``manual_ack`` it also acknowledges QoS 2 messages at-least-once style: delivered
    on PUBLISH, PUBREC sent by :meth:`ack` after the write, PUBCOMP for every PUBREL (see
    ``_handle_publish``). Overrides paho's internal ``_sock_recv``, ``_sock_close``,
    ``_handle_publish``, ``_send_pubrec`` and ``_handle_pubrel`` (stable through paho-mqtt
    2.x, which the dependency pins; the plugin's tests run against the real broker).
    """

    READ_SIZE = 65_536
    _defer_pubrec = False
    _read_buffer = b""
    _read_position = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        buffer, position = self._read_buffer, self._read_position
        if position >= len(buffer):
            buffer = super()._sock_recv(self.READ_SIZE)  # BlockingIOError when empty
            if not buffer:
                return buffer  # the broker closed the connection
            position = 0
            if QUICKACK:
                self._quick_ack()
        end = position + bufsize
        self._read_buffer, self._read_position = buffer, end
        return buffer[position:end]

    def _quick_ack(self) -> None:
        sock = self._sock
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)

    def _handle_publish(self) -> MQTTErrorCode:
        """With ``manual_ack``, a QoS 2 message is delivered at once and its PUBREC waits
        for :meth:`ack` (paho sends the PUBREC on arrival and delivers at PUBREL). MQTT
        hands a QoS 2 message over with the PUBREC: sent on arrival, a worker dying before
        the write would lose it, and Mosquitto stops counting it against the receive
        maximum, so nothing would bound what the worker takes in."""
        if not self._manual_ack or (self._in_packet["command"] & 0x06) >> 1 != 2:
            return super()._handle_publish()
        self._defer_pubrec = True
        try:
            rc = super()._handle_publish()  # stores it in _in_messages, waiting for PUBREL
        finally:
            self._defer_pubrec = False
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._in_messages:
            _, message = self._in_messages.popitem(last=True)
            self._handle_on_message(message)
        return rc

    def _send_pubrec(self, mid: int) -> MQTTErrorCode:
        if self._defer_pubrec:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._send_pubrec(mid)

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        """QoS 1: PUBACK. QoS 2: PUBREC (the PUBCOMP answers the broker's PUBREL)."""
        if self._manual_ack and qos == 2:
            return super()._send_pubrec(mid)
        return super().ack(mid, qos)

    def _handle_pubrel(self) -> MQTTErrorCode:
        """Every PUBREL gets its PUBCOMP (MQTT 5, 4.3.3). With ``manual_ack`` paho sends it
        only for a message it holds, and this client holds none: its QoS 2 messages were
        delivered on PUBLISH and acknowledged (PUBREC) after the write, possibly by a
        worker that died since. Unanswered, each would keep a slot of the broker's receive
        maximum taken for good."""
        packet = self._in_packet["packet"]
        mid = struct.unpack("!H", packet[:2])[0] if len(packet) >= 2 else None
        known = mid in self._in_messages
        rc = super()._handle_pubrel()
        if mid is not None and not known and self._manual_ack and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return self._send_pubcomp(mid)
        return rc

    def round_trip(self, timeout: float) -> bool:
        """Send a PINGREQ and wait (reading) for its PINGRESP, at most ``timeout`` seconds:
        the broker handles a client's packets in order, so once it answers, everything
        sent before (the last acknowledgments) was handled. Closing a socket that still
        has unread data sends a TCP reset, and the broker may then drop what it had
        received and not yet read: acknowledged messages would come again."""
        if self._send_pingreq() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        deadline = time.monotonic() + timeout
        while self._ping_t and time.monotonic() < deadline:
            if self.buffered:
                rc = self.loop_read()
            else:
                rc = self.loop(max(0.0, min(0.1, deadline - time.monotonic())))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return False
        return not self._ping_t

    def _sock_close(self) -> None:
        self._read_buffer, self._read_position = b"", 0
        super()._sock_close()

    @property
    def buffered(self) -> bool:
        return self._read_position < len(self._read_buffer)
