"""The runtime: the one engine every programming model runs on.

Settings and their checks (``units``, ``validation``, ``config``, ``convert``), messages
(``events``, ``results``), retry policies, bounded buffers and backpressure
(``backpressure``), adaptive concurrency, the memory governor, nodes (``nodes``), the graph
that runs them on trio (``graph``), result caching (``caching``) and the bridges that run
blocking and asyncio-only clients beside trio (``bridge``).

This package imports nothing on its own: import its modules. It uses only
:mod:`haive.dataflow.errors` and :mod:`haive.dataflow.plugins` (see ``docs/architecture.md``).
"""
