"""Configuration records of the WebSocket client and server (frozen, validated on creation).

Durations accept seconds or strings such as ``"250ms"`` / ``"5s"``; sizes accept bytes or
strings such as ``"1MiB"`` (the core's :func:`~haive.dataflow.runtime.units.parse_duration` and
:func:`~haive.dataflow.runtime.units.parse_size`). A bad value raises
:class:`~haive.dataflow.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import ssl as ssl_module
from typing import Any
from urllib.parse import urlsplit

import attrs

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import parse_duration, parse_size

#: Extensions of the haive wire protocol a peer may offer; each is used only when both
#: sides agreed on it during the opening handshake (see :mod:`.protocol`).
FEATURES: tuple[str, ...] = ("batch", "recovery", "msgpack")

QUEUE_POLICIES = ("block", "drop_oldest", "drop_newest")
SLOW_CONSUMER_POLICIES = ("drop_oldest", "drop_newest", "disconnect")


def compression_mode(value: object) -> str | None:
    """Normalise a compression option to what websockets understands.

    WebSocket compression is the permessage-deflate extension (the DEFLATE algorithm that
    gzip also uses), so ``"gzip"``, ``"deflate"`` and ``True`` all ask for it; ``None``,
    ``False`` and ``"none"`` turn it off.

    Example::

        >>> compression_mode("gzip"), compression_mode(None), compression_mode("none")
        ('deflate', None, None)
    """
    if value is None or value is False:
        return None
    if value is True:
        return "deflate"
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("gzip", "deflate", "permessage-deflate", "zlib"):
            return "deflate"
        if lowered in ("", "none", "off"):
            return None
    raise ConfigError(
        f"compression: expected 'deflate' (alias 'gzip'), True or None, got {value!r}"
    )


# One named converter per field: mypy's attrs plugin reads their types.
def _client_id_ttl(value: Any) -> float:
    return parse_duration(value, what="client_id_ttl")


def _close_timeout(value: Any) -> float:
    return parse_duration(value, what="close_timeout")


def _heartbeat_interval_or_none(value: Any) -> float | None:
    return None if value is None else parse_duration(value, what="heartbeat_interval")


def _heartbeat_timeout_or_none(value: Any) -> float | None:
    return None if value is None else parse_duration(value, what="heartbeat_timeout")


def _max_batch_bytes(value: Any) -> int:
    return parse_size(value, what="max_batch_bytes")


def _max_message_size(value: Any) -> int:
    return parse_size(value, what="max_message_size")


def _max_message_size_or_none(value: Any) -> int | None:
    return None if value is None else parse_size(value, what="max_message_size")


def _max_reconnect_interval(value: Any) -> float:
    return parse_duration(value, what="max_reconnect_interval")


def _open_timeout(value: Any) -> float:
    return parse_duration(value, what="open_timeout")


def _ping_interval_or_none(value: Any) -> float | None:
    return None if value is None else parse_duration(value, what="ping_interval")


def _ping_timeout_or_none(value: Any) -> float | None:
    return None if value is None else parse_duration(value, what="ping_timeout")


def _reconnect_interval(value: Any) -> float:
    return parse_duration(value, what="reconnect_interval")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{attribute.name}: must be > 0, got {value!r}")


def _positive_number(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{attribute.name}: expected messages per second (a number > 0) or None, got {value!r}"
        )
    _positive(instance, attribute, value)


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{attribute.name}: must be one of {choices}, got {value!r}")

    return check


def _features(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    out = tuple(value)
    unknown = [f for f in out if f not in FEATURES]
    if unknown:
        raise ConfigError(f"features: unknown {unknown}; known features are {FEATURES}")
    return out


def _check_url(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"url: expected a ws:// or wss:// URL with a host, got {value!r}")


def _check_ssl(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, ssl_module.SSLContext):
        raise ConfigError(f"ssl: expected an ssl.SSLContext or None, got {type(value).__name__}")


def _check_serializer(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in ("json", "msgpack"):
        raise ConfigError(f"serializer: must be 'json' or 'msgpack', got {value!r}")


@attrs.frozen
class ConnectionConfig:
    """How a :class:`~haive_plugin_websocket.StreamingClient` connects and stays connected.

    * ``reconnect_interval`` is the first backoff delay; each failed attempt doubles it
      (``backoff_factor``) up to ``max_reconnect_interval``, with random ``jitter`` (a
      fraction: 0.5 means each delay is drawn from [50 %, 100 %] of the nominal one).
      ``max_reconnect_attempts=None`` retries forever.
    * ``heartbeat_interval``: a ping is sent this often; no pong within
      ``heartbeat_timeout`` (default: the interval) means the peer is dead and the client
      reconnects. ``None`` disables the heartbeat.
    * Messages sent while disconnected wait in a queue of ``queue_size`` messages handled by
      ``queue_policy`` (``block`` the sender, ``drop_oldest``, ``drop_newest``).
    * ``compression``: permessage-deflate, negotiated (``"gzip"`` is accepted as an alias).
    * ``serializer``: ``json`` (text frames) or ``msgpack`` (binary frames).
    * ``features``: protocol extensions offered to the server, used only if it accepts them.
    * TLS (``wss://`` URLs): the server's certificate is verified against ``ca_file`` (a
      PEM bundle of the CAs to trust) if given, else the system's CA store; ``ssl`` (an
      :class:`ssl.SSLContext`) replaces both, e.g. for client certificates. An untrusted
      certificate makes the client give up with
      :class:`~haive_plugin_websocket.errors.TLSVerificationError`.

    Example::

        >>> config = ConnectionConfig(url="ws://localhost:8000/ws", reconnect_interval=5,
        ...                           max_reconnect_attempts=10, heartbeat_interval="30s",
        ...                           compression="gzip")
        >>> config.heartbeat_interval, config.compression
        (30.0, 'deflate')
        >>> ConnectionConfig(url="http://x")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: url: expected a ws:// or wss:// URL with a host, got 'http://x'
    """

    url: str = attrs.field(validator=_check_url)
    reconnect_interval: float = attrs.field(default=1.0, converter=_reconnect_interval)
    max_reconnect_interval: float = attrs.field(
        default=30.0, converter=_max_reconnect_interval
    )
    backoff_factor: float = attrs.field(default=2.0)
    jitter: float = attrs.field(default=0.5)
    max_reconnect_attempts: int | None = attrs.field(default=None)
    heartbeat_interval: float | None = attrs.field(
        default=30.0, converter=_heartbeat_interval_or_none
    )
    heartbeat_timeout: float | None = attrs.field(
        default=None, converter=_heartbeat_timeout_or_none
    )
    compression: str | None = attrs.field(default="deflate", converter=compression_mode)
    serializer: str = attrs.field(default="json", validator=_check_serializer)
    queue_size: int = attrs.field(default=10_000, validator=_positive)
    queue_policy: str = attrs.field(default="block", validator=_one_of(QUEUE_POLICIES))
    max_message_size: int = attrs.field(
        default=2**20, converter=_max_message_size, validator=_positive
    )
    max_batch_bytes: int = attrs.field(
        default=64 * 1024, converter=_max_batch_bytes, validator=_positive
    )
    open_timeout: float = attrs.field(default=10.0, converter=_open_timeout)
    close_timeout: float = attrs.field(default=2.0, converter=_close_timeout)
    token: str | None = None
    client_id: str | None = None
    features: tuple[str, ...] = attrs.field(default=("batch", "recovery"), converter=_features)
    ssl: ssl_module.SSLContext | None = attrs.field(default=None, validator=_check_ssl)
    ca_file: str | None = None

    def __attrs_post_init__(self) -> None:
        if urlsplit(self.url).scheme == "ws" and (self.ssl is not None or self.ca_file):
            raise ConfigError(
                f"ssl/ca_file configure TLS, but url {self.url!r} is ws://: use wss://"
            )
        if self.ssl is not None and self.ca_file:
            raise ConfigError("give either ssl (a context) or ca_file, not both")
        if self.ca_file:
            from .tls import client_ssl_context

            client_ssl_context(self.ca_file)  # a missing or unreadable file fails here
        if self.backoff_factor < 1:
            raise ConfigError(f"backoff_factor: must be >= 1, got {self.backoff_factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"jitter: must be within [0, 1], got {self.jitter!r}")
        if self.max_reconnect_attempts is not None and self.max_reconnect_attempts < 0:
            raise ConfigError(
                f"max_reconnect_attempts: must be >= 0 or None, got {self.max_reconnect_attempts!r}"
            )
        if self.heartbeat_interval is not None and self.heartbeat_interval <= 0:
            raise ConfigError("heartbeat_interval: must be > 0 (or None to disable)")

    @property
    def effective_heartbeat_timeout(self) -> float | None:
        """The pong deadline: ``heartbeat_timeout``, else the heartbeat interval."""
        if self.heartbeat_interval is None:
            return None
        return (
            self.heartbeat_timeout
            if self.heartbeat_timeout is not None
            else self.heartbeat_interval
        )

    @property
    def tls_context(self) -> ssl_module.SSLContext | None:
        """The client TLS context for a ``wss://`` URL (None for ``ws://``)."""
        if urlsplit(self.url).scheme != "wss":
            return None
        if self.ssl is not None:
            return self.ssl
        from .tls import client_ssl_context

        return client_ssl_context(self.ca_file)

    @property
    def offered_features(self) -> tuple[str, ...]:
        """Features to offer: the configured ones, plus ``msgpack`` for that serializer."""
        features = list(self.features)
        if self.serializer == "msgpack" and "msgpack" not in features:
            features.append("msgpack")
        return tuple(features)


@attrs.frozen
class ServerConfig:
    """Limits and policies of a :class:`~haive_plugin_websocket.WebSocketManager`.

    Its defaults are meant for a public port: every limit below is on unless turned off
    explicitly (``None``).

    * ``max_message_size`` (default 1 MiB, after decompression): a bigger incoming
      message closes the connection with 1009. ``None`` removes the limit.
    * ``outbound_queue``: messages waiting per connection; when a slow client lets it fill,
      ``slow_consumer`` decides: ``drop_oldest`` (default), ``drop_newest`` or
      ``disconnect`` (the connection is dropped; the client resumes with recovery).
    * ``history_size``: room messages kept per room for connection-state recovery;
      ``max_idle_rooms`` bounds how many rooms without members keep their history.
    * ``rate_limit`` (default 100 messages/s per connection) / ``rate_burst`` (default
      twice ``rate_limit``): a token bucket per connection, each message of a batch frame
      counting; excess messages are dropped with a ``rate_limited`` error frame, and after
      ``flood_close_after`` (default 1000) dropped messages the connection is closed with
      1008. ``rate_limit=None`` turns the limit off (trusted clients only).
    * ``client_id_ttl``: with authentication, how long a client id stays bound to its
      identity after its last connection closed (another identity asking for it meanwhile
      is refused with close code 4003); while connected it is always bound.
    * ``compression``: permessage-deflate offered to clients (negotiated). By default the
      server compresses each message on its own (it answers ``server_no_context_takeover``,
      which RFC 7692 lets a server impose): a room broadcast is then compressed once and
      the same frame goes to every member, and a connection keeps no compressor between
      messages (about 32 KB less each). ``deflate_context_takeover=True`` keeps one per
      connection instead (better ratios for a stream of small, similar messages to one
      client; a broadcast is then compressed per member).
    * ``features``: protocol extensions this server accepts when a client offers them.
    * ``keep_handshake_headers``: keep the opening handshake's HTTP headers on each
      connection (``client.ws.request.headers``) after ``on_connect`` callbacks ran; off by
      default, which saves about 4 KB per connection.
    * TLS: ``ssl`` (an :class:`ssl.SSLContext`), or ``certfile`` (a PEM certificate chain)
      with ``keyfile`` (its private key, if not inside ``certfile``) and ``key_password``;
      the server then speaks ``wss://``. Files are loaded (and checked) on creation.

    Example::

        >>> ServerConfig(port=0, max_message_size="64KiB", slow_consumer="disconnect").max_message_size
        65536
        >>> ServerConfig().rate_limit, ServerConfig().effective_rate_burst
        (100.0, 200.0)
        >>> ServerConfig(rate_limit=None, max_message_size=None).effective_rate_burst is None
        True
        >>> ServerConfig(slow_consumer="wait")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: slow_consumer: must be one of ('drop_oldest', 'drop_newest', 'disconnect'), got 'wait'
    """

    host: str = "127.0.0.1"
    port: int = 8765
    max_message_size: int | None = attrs.field(
        default=2**20, converter=_max_message_size_or_none, validator=_positive
    )
    outbound_queue: int = attrs.field(default=4096, validator=_positive)
    slow_consumer: str = attrs.field(
        default="drop_oldest", validator=_one_of(SLOW_CONSUMER_POLICIES)
    )
    history_size: int = attrs.field(default=1000)
    max_idle_rooms: int = attrs.field(default=1024)
    max_rooms_per_client: int = attrs.field(default=100, validator=_positive)
    rate_limit: float | None = attrs.field(default=100.0, validator=_positive_number)
    rate_burst: float | None = attrs.field(default=None, validator=_positive_number)
    flood_close_after: int = attrs.field(default=1000, validator=_positive)
    client_id_ttl: float = attrs.field(
        default=3600.0, converter=_client_id_ttl, validator=_positive
    )
    compression: str | None = attrs.field(default="deflate", converter=compression_mode)
    deflate_context_takeover: bool = False
    ping_interval: float | None = attrs.field(
        default=20.0, converter=_ping_interval_or_none
    )
    ping_timeout: float | None = attrs.field(
        default=20.0, converter=_ping_timeout_or_none
    )
    open_timeout: float = attrs.field(default=10.0, converter=_open_timeout)
    close_timeout: float = attrs.field(default=2.0, converter=_close_timeout)
    max_batch_bytes: int = attrs.field(
        default=64 * 1024, converter=_max_batch_bytes, validator=_positive
    )
    features: tuple[str, ...] = attrs.field(default=FEATURES, converter=_features)
    send_welcome: bool = True
    keep_handshake_headers: bool = False
    ssl: ssl_module.SSLContext | None = attrs.field(default=None, validator=_check_ssl)
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = attrs.field(default=None, repr=False)
    _tls: ssl_module.SSLContext | None = attrs.field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.keyfile and not self.certfile:
            raise ConfigError("keyfile: given without certfile (the certificate chain)")
        if self.ssl is not None and self.certfile:
            raise ConfigError("give either ssl (a context) or certfile/keyfile, not both")
        tls = self.ssl
        if self.certfile:
            from .tls import server_ssl_context

            tls = server_ssl_context(self.certfile, self.keyfile, password=self.key_password)
        object.__setattr__(self, "_tls", tls)
        if self.history_size < 0:
            raise ConfigError(f"history_size: must be >= 0, got {self.history_size!r}")
        if self.max_idle_rooms < 0:
            raise ConfigError(f"max_idle_rooms: must be >= 0, got {self.max_idle_rooms!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port: must be an int in [0, 65535], got {self.port!r}")
        if self.rate_burst is not None:
            if self.rate_limit is None:
                raise ConfigError(
                    f"rate_burst: {self.rate_burst!r} given, but rate_limit is None (no limit)"
                )
            if self.rate_burst < 1:
                raise ConfigError(
                    f"rate_burst: must be >= 1 message (or None for twice rate_limit), "
                    f"got {self.rate_burst!r}"
                )

    @property
    def effective_rate_burst(self) -> float | None:
        """The token bucket's size: ``rate_burst``, else twice ``rate_limit`` (None: no limit)."""
        if self.rate_limit is None:
            return None
        return float(self.rate_burst) if self.rate_burst is not None else 2.0 * self.rate_limit

    @property
    def tls_context(self) -> ssl_module.SSLContext | None:
        """The server TLS context (``ssl``, or the one built from ``certfile``), or None."""
        return self._tls
