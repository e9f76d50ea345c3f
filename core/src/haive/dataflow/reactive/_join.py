"""The join operators: two sources into one join node of :mod:`haive.dataflow.state`.

``join(left, right, make_node)`` runs both sources as tasks that put their batches, tagged
``"left"`` or ``"right"`` (:class:`~haive.dataflow.runtime.graph.TaggingProducer`), into
one bounded buffer, and runs a fresh node from ``make_node()`` on it, as a pipeline runs a
node: the same windows, watermarks, idle timers and end-of-input flush. Each run gets its
own node, so the observable stays cold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ..runtime.backpressure import BoundedBuffer, BufferProducer
from ..runtime.defaults import DEFAULT_BUFFER_SIZE
from ..runtime.graph import TaggingProducer
from ..runtime.nodes import Node, NodeContext
from ._runtime import Emit, Ready, open_nursery, start_run
from ._source import FunctionSource, Source, as_source, merge_roots

LEFT = "left"
RIGHT = "right"


async def _feed(
    source: Source[Any],
    producer: BufferProducer[Any],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await start_run(source, producer.put_batch, task_status=task_status)
    finally:
        producer.close()


def join(left: Any, right: Any, make_node: Callable[[], Node], what: str) -> Source[Any]:
    """A source of what ``make_node()`` emits when fed ``left``'s and ``right``'s items."""
    sources = [as_source(left, what), as_source(right, what)]

    async def run(emit: Emit, ready: Ready) -> None:
        node = make_node()
        inbox: BoundedBuffer[Any] = BoundedBuffer(
            DEFAULT_BUFFER_SIZE, "block", name=f"{node.name}.in"
        )
        producers = [TaggingProducer(inbox.open_producer(), tag) for tag in (LEFT, RIGHT)]
        ctx = NodeContext(node.name)
        await node.open()
        try:
            async with open_nursery() as nursery:
                for source, producer in zip(sources, producers, strict=True):
                    await nursery.start(_feed, source, producer)
                ready.started()
                await node.run(ctx, inbox, emit)
        finally:
            for producer in producers:
                producer.close()
            inbox.close_receiving()
            with trio.CancelScope(shield=True):
                await node.aclose()

    label = f"{what}({sources[0]._label}, {sources[1]._label})"
    return FunctionSource(run, label=label, roots=merge_roots(*sources))
