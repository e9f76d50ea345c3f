"""The programming models built on the runtime's graph of nodes.

:mod:`~haive.dataflow.pipelines.event_pipeline` (``EventPipeline``: send events, read what
they caused), :mod:`~haive.dataflow.pipelines.streaming_pipeline` (``StreamingPipeline``:
source, processors, sink, a result per item), :mod:`~haive.dataflow.pipelines.chain`
(``TransformationChain``: steps one after another, per value) and
:mod:`~haive.dataflow.pipelines.routing` (``EventRouter``: a node that picks successors).

This package imports nothing on its own: import its modules (see ``docs/architecture.md``).
"""
