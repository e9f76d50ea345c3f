"""Exceptions raised by haive-dataflow, each naming the thing that went wrong."""

from __future__ import annotations


class HaiveError(Exception):
    """Base class of every error haive-dataflow raises on purpose."""


class PluginError(HaiveError):
    """A plugin could not be found, loaded or registered."""


class UnknownPluginError(PluginError, LookupError):
    """A capability was asked for by a name no installed plugin provides."""


class DuplicatePluginError(PluginError):
    """Two plugins claim the same name for the same capability kind."""


class MissingPluginError(PluginError, AttributeError):
    """A public name belongs to a plugin distribution that is not installed."""


class ConfigError(HaiveError, ValueError):
    """Configuration is malformed: unknown keys, wrong types or out-of-range values."""


class GraphError(HaiveError, ValueError):
    """A pipeline graph is invalid: unknown or duplicate names, cycles, dangling nodes."""


class NodeError(HaiveError):
    """A node raised while processing an item; ``node`` names it and ``__cause__`` is the error."""

    def __init__(self, node: str, error: BaseException) -> None:
        super().__init__(f"node {node!r} failed: {type(error).__name__}: {error}")
        self.node = node
        self.error = error


class SerializationError(HaiveError, ValueError):
    """Bytes could not be decoded, or a value could not be encoded, by a serializer."""


class InvalidMessageError(HaiveError, ValueError):
    """A decoded message does not have the shape its type requires."""


class ClosedError(HaiveError):
    """An operation was attempted on a buffer, pipeline or stream that is closed."""
