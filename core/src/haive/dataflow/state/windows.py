"""Windowed aggregation: tumbling, sliding and session windows over keyed items.

Windows are measured by time (``TumblingWindow("1s")``) or by count
(``TumblingWindow(count=100)``). Time is *event time* (read from each item, default
``item["timestamp"]`` / ``item.timestamp``) or *processing time* (trio's clock when the item
arrives). In event time the watermark is the largest timestamp seen minus
``allowed_lateness``; a window closes (is emitted) once the watermark passes its end, and an
event whose window already closed is *late*: counted in ``late_events`` and handed to
``on_late`` (by default the pipeline's dead letters, with the reason), never silently mixed
into a wrong window. At the end of the input every
open window is emitted. In processing time windows close on a timer.

The work is done per batch with dicts (items grouped by window and key first, then each
group folded into its window at once), so there is no per-item task switch and an
aggregator sees lists of items (``Sum`` sums a list at C speed).

Example: per-user event counts and value sums in 1-second event-time windows::

    >>> import trio
    >>> from haive.dataflow.runtime.nodes import NodeContext
    >>> node = WindowedAggregateNode(
    ...     name="per_user", window=TumblingWindow("1s"), key="user", timestamp="ts",
    ...     aggregate=Sum("value"))
    >>> events = [{"user": "a", "ts": 0.1, "value": 1}, {"user": "b", "ts": 0.5, "value": 2},
    ...           {"user": "a", "ts": 0.9, "value": 3}, {"user": "a", "ts": 1.2, "value": 4}]
    >>> async def main():
    ...     ctx = NodeContext("per_user")
    ...     return await node.process_batch(events, ctx) + await node.flush(ctx)
    >>> for result in trio.run(main):
    ...     print(result.key, result.start, result.end, result.count, result.value)
    a 0.0 1.0 2 4
    b 0.0 1.0 1 2
    a 1.0 2.0 1 4

The code lives in single-purpose modules, re-exported here so that every import from this
module keeps working: :mod:`.fields` (``FieldGetter``), :mod:`.aggregators` (``Aggregator``
and the built-ins), :mod:`.window_specs` (the window kinds, ``WindowResult``),
:mod:`._window_engines` (window state per kind) and :mod:`.window_node`
(``WindowedAggregateNode``).
"""

from __future__ import annotations

# The private names (``import _x as _x``) stay importable from here too: checkpoints pickled
# before the split name ``haive.dataflow.state.windows._Session``.
from ._window_engines import _CountSliding as _CountSliding
from ._window_engines import _CountTumbling as _CountTumbling
from ._window_engines import _Engine as _Engine
from ._window_engines import _engine as _engine
from ._window_engines import _merge_acc as _merge_acc
from ._window_engines import _Session as _Session
from ._window_engines import _Sessions as _Sessions
from ._window_engines import _TimeGrid as _TimeGrid
from .aggregators import (
    Aggregator,
    Collect,
    Count,
    Fold,
    Max,
    Mean,
    Min,
    Sum,
)
from .aggregators import _FieldAggregator as _FieldAggregator
from .fields import FieldGetter
from .fields import _identity as _identity
from .window_node import LateHandler, TimeMode, WindowedAggregateNode, WindowNode
from .window_node import _seconds as _seconds
from .window_specs import (
    SessionWindow,
    SlidingWindow,
    TumblingWindow,
    WindowResult,
    WindowSpec,
    window_results_by_key,
)
from .window_specs import _gap as _gap

__all__ = [
    "Aggregator",
    "Collect",
    "Count",
    "FieldGetter",
    "Fold",
    "LateHandler",
    "Max",
    "Mean",
    "Min",
    "SessionWindow",
    "SlidingWindow",
    "Sum",
    "TimeMode",
    "TumblingWindow",
    "WindowNode",
    "WindowResult",
    "WindowSpec",
    "WindowedAggregateNode",
    "window_results_by_key",
]
