"""Per-node figures of a running pipeline: topology, rates, buffer fill, backpressure.

Read from the core's counters (``PipelineRun.node_stats()``, ``buffers()``, ``read``,
``processed``) on the console's own schedule, so watching costs nothing per item.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs

#: A buffer at least this full, or one whose producers blocked since the last sample, is
#: under backpressure.
BACKPRESSURE_FILL = 0.8


@attrs.frozen
class NodePoint:
    """One point of a node's chart.

    Example::

        >>> NodePoint(time=1.0, rate_in=10.0, rate_out=9.0, error_rate=0.1, fill=0.5).to_dict()["rate_out"]
        9.0
    """

    time: float
    rate_in: float
    rate_out: float
    error_rate: float
    fill: float

    def to_dict(self) -> dict[str, float]:
        return attrs.asdict(self)


def topology(pipeline: Any, run: Any | None) -> dict[str, Any]:
    """Nodes, edges and buffers of a :class:`~haive.dataflow.StreamingPipeline`.

    The source and sink are nodes too (``source:<Class>``, ``sink:<Class>``); each edge names
    the buffer between its ends (``<node>.in``, ``output``).

    Example::

        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> from haive.dataflow import TransformNode
        >>> p = StreamingPipeline("t"); p.set_source(IterableSource([]))
        >>> p.add_processor(TransformNode(name="parse", transform_fn=abs))
        >>> t = topology(p, None)
        >>> [n["name"] for n in t["nodes"]], t["edges"][0]
        (['source:IterableSource', 'parse', 'sink:results'], {'source': 'source:IterableSource', 'target': 'parse', 'buffer': 'parse.in'})
    """
    source = getattr(pipeline, "source", None)
    sink = getattr(pipeline, "sink", None)
    source_name = f"source:{type(source).__name__}" if source is not None else "source:none"
    sink_name = f"sink:{type(sink).__name__}" if sink is not None else "sink:results"
    names = [node.name for node in pipeline.nodes]
    if run is not None:
        names = list(run.node_stats())
    nodes = [{"name": source_name, "kind": "source"}]
    nodes += [{"name": name, "kind": "processor"} for name in names]
    nodes.append({"name": sink_name, "kind": "sink"})
    edges = []
    chain = [source_name, *names, sink_name]
    for left, right in itertools.pairwise(chain):
        buffer = "output" if right == sink_name else f"{right}.in"
        edges.append({"source": left, "target": right, "buffer": buffer})
    buffers = [buffer_figures(buf) for buf in run.buffers()] if run is not None else []
    return {"nodes": nodes, "edges": edges, "buffers": buffers}


def buffer_figures(buffer: Any) -> dict[str, Any]:
    stats = buffer.stats
    capacity = int(buffer.buffer_size)
    depth = len(buffer)
    return {
        "name": buffer.name,
        "depth": depth,
        "capacity": capacity,
        "fill": depth / capacity if capacity else 0.0,
        "strategy": getattr(buffer.strategy, "PLUGIN_NAME", type(buffer.strategy).__name__),
        "dropped": stats.dropped,
        "blocked_count": stats.blocked_count,
        "blocked_seconds": stats.blocked_seconds,
    }


class NodeTracker:
    """Rates and charts of a pipeline's nodes, from cumulative counters sampled by
    :meth:`sample` (``history`` points per node).

    Example::

        >>> from haive.dataflow import StreamingPipeline
        >>> tracker = NodeTracker(StreamingPipeline("t"))
        >>> tracker.figures(None)["nodes"][0]["name"]
        'source:none'
    """

    def __init__(self, pipeline: Any, *, history: int = 300) -> None:
        self.pipeline = pipeline
        self.history: dict[str, deque[NodePoint]] = {}
        self._history_size = history
        self._previous: dict[str, tuple[float, int, int, int, int]] = {}
        self._last: dict[str, dict[str, Any]] = {}

    def _counters(self, run: Any) -> dict[str, tuple[int, int, int, int]]:
        """``name -> (items_in, items_out, errors, blocked_count)`` for every node."""
        topo = topology(self.pipeline, run)
        inboxes = {buf.name: buf for buf in run.buffers()}
        names = [n["name"] for n in topo["nodes"]]
        counters: dict[str, tuple[int, int, int, int]] = {}
        stats = run.node_stats()
        for name in names[1:-1]:
            st = stats[name]
            inbox = inboxes.get(f"{name}.in")
            blocked = inbox.stats.blocked_count if inbox is not None else 0
            counters[name] = (st.items_in, st.items_out, st.errors, blocked)
        output = inboxes.get("output")
        first_inbox = inboxes.get(f"{names[1]}.in") if len(names) > 2 else output
        source_blocked = first_inbox.stats.blocked_count if first_inbox is not None else 0
        counters[names[0]] = (run.read, run.read, 0, source_blocked)
        sink_blocked = output.stats.blocked_count if output is not None else 0
        counters[names[-1]] = (run.processed, run.processed, 0, sink_blocked)
        return counters

    def sample(self, run: Any, now: float) -> None:
        """Read ``run``'s counters at ``now`` (seconds) and append a chart point per node."""
        topo = topology(self.pipeline, run)
        fills = {b["name"]: b["fill"] for b in topo["buffers"]}
        for name, (items_in, items_out, errors, blocked) in self._counters(run).items():
            prev = self._previous.get(name)
            self._previous[name] = (now, items_in, items_out, errors, blocked)
            if prev is None or now <= prev[0]:
                continue
            dt = now - prev[0]
            d_in, d_out, d_err = items_in - prev[1], items_out - prev[2], errors - prev[3]
            fill = fills.get(
                f"{name}.in", fills.get("output", 0.0) if name.startswith("sink:") else 0.0
            )
            point = NodePoint(
                time=now,
                rate_in=d_in / dt,
                rate_out=d_out / dt,
                error_rate=d_err / d_in if d_in > 0 else 0.0,
                fill=fill,
            )
            self.history.setdefault(name, deque(maxlen=self._history_size)).append(point)
            self._last[name] = {"blocked_since_last": blocked > prev[4]}

    def figures(self, run: Any | None, latency: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Topology with each node's figures: counters, rates, error rate, latency
        percentiles (ms, from ``latency``: node name -> ``{"p50":..}``), buffer fill and
        ``state`` (``ok``, ``backpressure`` or ``errors``)."""
        topo = topology(self.pipeline, run)
        counters = self._counters(run) if run is not None else {}
        buffers = {b["name"]: b for b in topo["buffers"]}
        for node in topo["nodes"]:
            name = node["name"]
            items_in, items_out, errors, _ = counters.get(name, (0, 0, 0, 0))
            points = self.history.get(name)
            last = points[-1] if points else None
            inbox_name = "output" if node["kind"] == "sink" else f"{name}.in"
            inbox = buffers.get(inbox_name) if node["kind"] != "source" else None
            fill = inbox["fill"] if inbox is not None else 0.0
            blocked = self._last.get(name, {}).get("blocked_since_last", False)
            backpressure = fill >= BACKPRESSURE_FILL or bool(blocked)
            error_rate = last.error_rate if last is not None else 0.0
            node.update(
                items_in=items_in,
                items_out=items_out,
                errors=errors,
                rate_in=last.rate_in if last is not None else 0.0,
                rate_out=last.rate_out if last is not None else 0.0,
                error_rate=error_rate,
                buffer=inbox,
                fill=fill,
                backpressure=backpressure,
                latency_ms=dict((latency or {}).get(name) or {}) or None,
                state="errors" if error_rate > 0 else "backpressure" if backpressure else "ok",
            )
        return topo
