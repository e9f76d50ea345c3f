"""haive-dataflow hook module of haive-plugin-tracing (listed by ``haive plugins``).

The plugin implements no registration hook: it provides no source, sink or processor.
Pipeline runs reach it through its instrumentation factory,
:func:`haive_plugin_tracing.control.pipeline_instrumentation`, declared in the
``haive.dataflow.instrumentation`` entry-point group and loaded without the plugin registry.
Loading this module imports no OpenTelemetry.
"""

from __future__ import annotations
