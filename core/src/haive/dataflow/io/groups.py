"""Sources whose instances share one input as members of a named group.

A Redis Streams consumer group, a Kafka consumer group, a JetStream durable consumer, a
RabbitMQ queue: several processes run the same pipeline, and the broker hands each message
to one of them. ``haive worker`` (:mod:`haive.dataflow.cli.worker`) runs any such pipeline
as N processes; what it needs of the source is this module's two protocols, so the core
names no broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from .sources import DataSource


@runtime_checkable
class GroupMemberSource(Protocol):
    """A source that joins a named group of consumers sharing one input.

    Example::

        >>> class Member(DataSource):
        ...     group, consumer = "default", "me"
        ...     def join(self, group=None, consumer=None):
        ...         self.group = group or self.group
        ...         self.consumer = consumer or self.consumer
        ...     def membership(self):
        ...         return {"group": self.group, "consumer": self.consumer}
        ...     async def batches(self, chunk_size):
        ...         yield []
        >>> source = Member()
        >>> isinstance(source, GroupMemberSource)
        True
        >>> source.join(group="billing", consumer="worker-1")
        >>> source.membership()
        {'group': 'billing', 'consumer': 'worker-1'}
    """

    def join(self, group: str | None = None, consumer: str | None = None) -> None:
        """Set the group and/or this member's name; called before the source is opened.

        ``None`` keeps what the source was constructed with. A source that is already open
        raises :class:`~haive.dataflow.errors.ConfigError`.
        """

    def membership(self) -> dict[str, Any]:
        """What ``haive worker`` prints about this member when it stops: at least ``group``
        and ``consumer``, then the input's name and the source's delivery counters (values
        that orjson can encode)."""
        ...


@runtime_checkable
class RewindableGroup(Protocol):
    """A group member that can move its whole group back to an earlier position.

    ``haive worker --replay-from POSITION`` calls :meth:`rewind` once, before any worker
    starts, so the group reads again from ``POSITION`` (what a position is depends on the
    broker: a stream id for Redis, ``earliest`` for Kafka...).

    Example::

        >>> class Log(DataSource):
        ...     async def rewind(self, position):
        ...         self.position = position
        ...     async def batches(self, chunk_size):
        ...         yield []
        >>> isinstance(Log(), RewindableGroup)
        True
    """

    async def rewind(self, position: str) -> None:
        """Move the group's committed position back to ``position`` (no member running).

        Raises :class:`~haive.dataflow.errors.ConfigError` for a position this broker does
        not understand.
        """


@runtime_checkable
class StoppableSource(Protocol):
    """A source that can end its input on request, after handing over what it holds.

    ``haive worker`` calls :meth:`stop_reading` on the first SIGINT/SIGTERM instead of
    cancelling the run: the source reads nothing more, lets the items in flight be written
    and acknowledged (its next acknowledgment point), gives its share of the group back and
    ends its input, so the run ends normally. A second signal, or ``--grace`` seconds
    without the run ending, cancels it as for any other source.

    Example::

        >>> class Member(DataSource):
        ...     stopping = False
        ...     def stop_reading(self):
        ...         self.stopping = True
        ...     async def batches(self, chunk_size):
        ...         yield []
        >>> isinstance(Member(), StoppableSource)
        True
    """

    def stop_reading(self) -> None:
        """Read nothing more; end the input once what was read is acknowledged (no wait:
        called from a signal handler task)."""


@runtime_checkable
class WrappingSource(Protocol):
    """A source that wraps another one (checkpointing, rate limiting...) as ``inner``.

    Example::

        >>> class Wrapper(DataSource):
        ...     def __init__(self, inner):
        ...         self.inner = inner
        ...     async def batches(self, chunk_size):
        ...         yield []
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> numbers = IterableSource([1, 2])
        >>> [type(s).__name__ for s in layers(Wrapper(Wrapper(numbers)))]
        ['Wrapper', 'Wrapper', 'IterableSource']
    """

    inner: DataSource


def layers(source: DataSource | None) -> Iterator[DataSource]:
    """``source``, then each source it wraps (through :class:`WrappingSource` layers).

    Example::

        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> numbers = IterableSource([1])
        >>> [s is numbers for s in layers(numbers)]
        [True]
        >>> next((s for s in layers(numbers) if isinstance(s, GroupMemberSource)), None) is None
        True
    """
    seen: set[int] = set()
    while source is not None and id(source) not in seen:
        yield source
        seen.add(id(source))
        source = source.inner if isinstance(source, WrappingSource) else None
