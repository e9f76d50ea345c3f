"""librdkafka settings shared by the source and the sink, and the errors they map to.

Everything blocking here (:func:`check_topics`) runs in the caller's
:class:`~haive.dataflow.runtime.bridge.ThreadBridge`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration, parse_duration

from .errors import KafkaAuthenticationError, KafkaConnectionError, UnknownTopicError

#: What ``config=`` values may be (librdkafka takes strings, numbers, booleans).
ConfigValue = str | int | float | bool

#: librdkafka error codes meaning "the credentials or the TLS handshake were refused".
_AUTH_CODES = frozenset(
    code
    for code in (
        getattr(KafkaError, "_AUTHENTICATION", None),
        getattr(KafkaError, "SASL_AUTHENTICATION_FAILED", None),
        getattr(KafkaError, "TOPIC_AUTHORIZATION_FAILED", None),
        getattr(KafkaError, "GROUP_AUTHORIZATION_FAILED", None),
        getattr(KafkaError, "CLUSTER_AUTHORIZATION_FAILED", None),
        getattr(KafkaError, "_SSL", None),
    )
    if code is not None
)


def base_config(
    owner: str,
    bootstrap_servers: str,
    config: Mapping[str, ConfigValue] | None,
    owned: Iterable[str],
) -> dict[str, ConfigValue]:
    """``bootstrap.servers`` plus the user's librdkafka ``config``, refusing settings the
    caller sets itself (``owned``: they carry its delivery guarantee)."""
    if not isinstance(bootstrap_servers, str) or not bootstrap_servers.strip():
        raise ConfigError(
            f"{owner}: bootstrap_servers must be 'host:port[,host:port...]', "
            f"got {bootstrap_servers!r}"
        )
    settings: dict[str, ConfigValue] = {"bootstrap.servers": bootstrap_servers}
    for key, value in (config or {}).items():
        if not isinstance(key, str) or isinstance(value, bytes) or not isinstance(
            value, str | int | float | bool
        ):
            raise ConfigError(
                f"{owner}: config[{key!r}] = {value!r}: librdkafka settings are str keys with "
                "str, int, float or bool values"
            )
        if key in owned or key == "bootstrap.servers":
            what = "bootstrap_servers=" if key == "bootstrap.servers" else "its own arguments"
            raise ConfigError(
                f"{owner}: config[{key!r}] is set by {what} (it carries the delivery "
                f"guarantee); settings it owns: {', '.join(sorted(owned))}"
            )
        settings[key] = value
    return settings


def milliseconds(value: Duration, what: str) -> int:
    """A duration as whole milliseconds (librdkafka's unit), at least 1."""
    return max(1, round(parse_duration(value, what=what) * 1000))


def connection_error(error: KafkaException | KafkaError, servers: str, doing: str) -> Exception:
    """Our error for a client error while ``doing`` something with ``servers``."""
    kafka_error = error.args[0] if isinstance(error, KafkaException) and error.args else error
    code = kafka_error.code() if isinstance(kafka_error, KafkaError) else None
    text = kafka_error.str() if isinstance(kafka_error, KafkaError) else str(kafka_error)
    if code in _AUTH_CODES:
        return KafkaAuthenticationError(
            f"{doing}: the broker at {servers} refused the credentials: {text} (check "
            "sasl.username / sasl.password / sasl.mechanism / security.protocol in config=)"
        )
    return KafkaConnectionError(
        f"{doing}: no answer from the Kafka brokers at {servers}: {text} (is the broker up, "
        "and does it require authentication or TLS the client was not configured for?)"
    )


def check_topics(
    list_topics: Any, topics: Iterable[str], servers: str, owner: str, timeout: float
) -> Any:
    """Fetch metadata with ``list_topics`` (a client's method) and raise
    :class:`UnknownTopicError` naming any of ``topics`` the cluster does not have."""
    try:
        metadata = list_topics(timeout=timeout)
    except KafkaException as exc:
        raise connection_error(exc, servers, f"{owner}: fetching metadata") from exc
    missing = [topic for topic in topics if topic not in metadata.topics]
    if missing:
        known = sorted(name for name in metadata.topics if not name.startswith("__"))
        raise UnknownTopicError(
            f"{owner}: no topic {', '.join(map(repr, missing))} on {servers} (topics there: "
            f"{', '.join(known) or 'none'}); create it first, e.g. kafka-topics --create"
        )
    return metadata
