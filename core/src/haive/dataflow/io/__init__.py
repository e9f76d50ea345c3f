"""Where items come from and go to: the base classes of sources and sinks, and serializers.

:class:`~haive.dataflow.io.sources.DataSource`, :class:`~haive.dataflow.io.sinks.StreamSink`
and :class:`~haive.dataflow.io.serializers.Serializer` are what plugins subclass; the core's
own sources and sinks are registered by :mod:`haive.dataflow.builtins`.

This package imports nothing on its own: import its modules (see ``docs/architecture.md``).
"""
