"""MQTT topic names and topic filters: checked at construction, matched as the broker does."""

from __future__ import annotations

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.validation import invalid

MAX_TOPIC_BYTES = 65_535  # a topic is a UTF-8 string with a 16-bit length (MQTT 5, 1.5.4)


def check_topic(owner: str, parameter: str, topic: object, *, wildcards: bool) -> str:
    """``topic`` if it is a valid topic filter (``wildcards=True``: ``+`` one level, ``#``
    the rest, as the whole last level) or topic name (no wildcards), else ConfigError.

    Example::

        >>> check_topic("MqttSource", "topics", "sensors/+/temp", wildcards=True)
        'sensors/+/temp'
        >>> check_topic("MqttSink", "topic", "sensors/#", wildcards=False)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: MqttSink(topic='sensors/#'): topic must be a topic name without the wildcards '+' and '#', got 'sensors/#'
    """
    if not isinstance(topic, str) or not topic:
        raise ConfigError(invalid(owner, parameter, topic, "a non-empty topic string"))
    if "\x00" in topic or len(topic.encode()) > MAX_TOPIC_BYTES:
        raise ConfigError(
            invalid(owner, parameter, topic, f"at most {MAX_TOPIC_BYTES} UTF-8 bytes without NUL")
        )
    if not wildcards:
        if "+" in topic or "#" in topic:
            raise ConfigError(
                invalid(owner, parameter, topic, "a topic name without the wildcards '+' and '#'")
            )
        return topic
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#") or (
            level == "#" and index != len(levels) - 1
        ):
            raise ConfigError(
                invalid(owner, parameter, topic,
                        "a topic filter where '+' is a whole level and '#' the whole last level")
            )
    return topic


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (``$``-topics match no leading wildcard).

    Example::

        >>> matches("sensors/+/temp", "sensors/kitchen/temp"), matches("sensors/#", "sensors")
        (True, True)
        >>> matches("#", "$SYS/broker/uptime"), matches("a/+", "a/b/c")
        (False, False)
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    wanted = topic_filter.split("/")
    levels = topic.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(wanted) == len(levels)
