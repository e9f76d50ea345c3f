"""Exceptions raised by haive-dataflow, each naming the thing that went wrong."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class HaiveError(Exception):
    """Base class of every error haive-dataflow raises on purpose."""


class PluginError(HaiveError):
    """A plugin could not be found, loaded or registered."""


class UnknownPluginError(PluginError, LookupError):
    """A capability was asked for by a name no installed plugin provides."""


class DuplicatePluginError(PluginError):
    """Two plugins claim the same name for the same capability kind."""


class MissingPluginError(PluginError, ImportError):
    """A public name belongs to a plugin distribution that is not installed (or is disabled).

    An ``ImportError``, not an ``AttributeError``: ``from haive.dataflow.streaming import X``
    turns an AttributeError from the module's ``__getattr__`` into a bare "cannot import
    name" and loses the message saying which package to install; any other error passes
    through unchanged.
    """


class ConfigError(HaiveError, ValueError):
    """Configuration is malformed: unknown keys, wrong types or out-of-range values."""


class NotPicklableError(ConfigError):
    """A function given to a process executor cannot be sent to worker processes."""


class UserCodeError(HaiveError):
    """The Python file given to ``haive run`` raised, or did not compile, while loading.

    The message is the user's own traceback: the frames of the haive CLI and of ``runpy``
    are left out, so the first frame shown is in the user's file.
    """


class UnknownSettingError(UnknownPluginError, ConfigError):
    """A setting names a plugin capability (backpressure strategy, serializer...) that no
    installed plugin provides; raised when the pipeline, node or buffer is built."""


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


class BridgeClosedError(ClosedError):
    """A thread or asyncio bridge (:mod:`haive.dataflow.runtime.bridge`) was used after it
    closed, or closed while a call was waiting to run; the message names its thread."""


@contextmanager
def unwrap_node_errors() -> Iterator[None]:
    """Re-raise a nursery's exception group as its single real failure, if it has one.

    Pipelines run nodes in a nursery, so a node failure arrives wrapped in an exception group;
    users should be able to ``except NodeError`` plainly. Groups with several failures are
    re-raised unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        node_errors = [leaf for leaf in leaves if isinstance(leaf, NodeError)]
        leaf: BaseException
        if len(node_errors) == 1:
            leaf = node_errors[0]
        elif len(leaves) == 1:
            leaf = leaves[0]
        else:
            raise
        leaf.__suppress_context__ = True
        raise leaf


def _leaves(group: BaseException) -> Iterable[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        for exc in group.exceptions:
            yield from _leaves(exc)
    else:
        yield group
