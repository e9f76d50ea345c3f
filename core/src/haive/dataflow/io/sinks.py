"""The sink protocol: where a pipeline's outputs go."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import HaiveError
from ._resource import AsyncResource


class RejectedItems(HaiveError):
    """Raised by :meth:`StreamSink.write_batch` that wrote every item of the batch but some.

    ``errors`` maps the index (in the batch) of each item not written to the reason. The
    pipeline counts the others as delivered and treats the rejected ones like items a
    processor failed on (dead-letter sink, else the acknowledging source's ``reject``,
    and a failed result), so one bad item neither stops the pipeline nor comes back
    forever. A sink that cannot tell which items were written raises anything else: the
    pipeline stops and nothing of the batch is acknowledged.

    Example::

        >>> error = RejectedItems({1: ValueError("not encodable")})
        >>> error.errors[1]
        ValueError('not encodable')
        >>> str(error)
        'sink rejected 1 item(s), first: item 1: ValueError: not encodable'
    """

    def __init__(self, errors: Mapping[int, BaseException]) -> None:
        if not errors:
            raise ValueError("RejectedItems needs at least one rejected index")
        self.errors = dict(errors)
        index, error = min(self.errors.items())
        super().__init__(
            f"sink rejected {len(self.errors)} item(s), first: item {index}: "
            f"{type(error).__name__}: {error}"
        )


class StreamSink(AsyncResource):
    """Consumes outputs in batches. Subclasses implement :meth:`write_batch`.

    The pipeline calls ``open`` before the first batch and ``aclose`` after the last; when
    ``write_batch`` returns, the items count as delivered (at-least-once sources acknowledge
    them then), so a durable sink writes before it returns.

    Example::

        >>> import trio
        >>> class Printer(StreamSink):
        ...     PLUGIN_NAME = "printer"
        ...     async def write_batch(self, items):
        ...         print(*items)
        >>> trio.run(Printer().write, "hello")
        hello
    """

    PLUGIN_NAME: ClassVar[str] = ""

    async def open(self) -> None:
        """Acquire resources before the first batch."""

    async def aclose(self) -> None:
        """Flush and release resources."""

    @abc.abstractmethod
    async def write_batch(self, items: list[Any]) -> None:
        """Deliver ``items``; must not keep a reference to the list after returning.

        Raise :class:`RejectedItems` after writing all items but some that can never be
        written (an item that does not encode); anything else raised means the batch is
        not known to be written.
        """

    async def write(self, item: Any) -> None:
        """Deliver one item."""
        await self.write_batch([item])
