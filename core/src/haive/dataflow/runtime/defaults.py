"""Every default size of the buffering vocabulary, in one place, with why it is what it is.

The same two names run from the public API down to the buffer: ``buffer_size`` is how many
items a buffer holds, ``chunk_size`` the largest micro-batch a consumer takes from it in one
call. :class:`~haive.dataflow.runtime.config.StreamConfig` (the product description's names),
``EventPipeline``, the run settings both pipeline kinds derive from it, reactive
subscriptions and :class:`~haive.dataflow.runtime.backpressure.BoundedBuffer` all use these names and
take their defaults from here.

Example::

    >>> from haive.dataflow.runtime.config import StreamConfig
    >>> StreamConfig().buffer_size == DEFAULT_BUFFER_SIZE
    True
"""

from __future__ import annotations

from typing import Final

#: Items each buffer (a pipeline edge, a subscription, a source's queue) holds. Large enough
#: that a consumer catching up takes whole micro-batches instead of one item per task switch,
#: small enough that a full buffer of ~1 KB items stays about a megabyte per edge; a
#: ``max_memory_usage`` cap shrinks it further when items are big.
DEFAULT_BUFFER_SIZE: Final = 1024

#: The largest micro-batch taken at once (from a buffer, or asked of a source). Equal to the
#: buffer size, so a consumer that fell behind empties a full buffer in one call; lowering it
#: only bounds the latency one batch adds before the next node sees its first item.
DEFAULT_CHUNK_SIZE: Final = 1024

#: Failed results waiting to be handled, for both pipeline kinds. Failures are rarer than
#: items but are kept whole (item, error, node) for inspection: an EventPipeline keeps the
#: latest this many until ``failures()`` is called, so one ``send_batch`` of thousands of
#: bad events still reports each; a StreamingPipeline queues this many for its dead-letter
#: sink before the failing node waits (it never drops one).
DEFAULT_ERROR_BUFFER_SIZE: Final = 10_000

#: What a full buffer does by default: wait for room. The only strategy that loses nothing,
#: and the one an acknowledging source (at-least-once delivery) requires.
DEFAULT_BACKPRESSURE: Final = "block"

__all__ = [
    "DEFAULT_BACKPRESSURE",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_ERROR_BUFFER_SIZE",
]
