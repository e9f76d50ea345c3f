"""Every hook the core calls, in one place; plugins add their own with ``haive_addhooks``.

The architecture is "registration hooks": each capability kind (:class:`CapabilityKind`) has
one argument-less ``haive_register_<kind>()`` hook returning the classes a plugin provides,
typed by the base class they subclass. Each class names itself with a ``PLUGIN_NAME`` class
attribute, which is the name users ask for (``registry.source("jsonl")``). Two plugins
returning the same name for one kind is an error
(:class:`haive.dataflow.errors.DuplicatePluginError`), never a silent override.

The core specifies the kinds it has base classes for (source, sink, processor, backpressure,
state_backend, serializer, cli_command). A plugin that brings a new kind, or a hook of its
own (a decision its code asks other plugins for), owns the spec: it adds its spec module in
:func:`haive_addhooks` and returns its :class:`CapabilityKind` from
:func:`haive_register_capability_kinds`, as pytest plugins do with ``pytest_addhooks``.

Hooks are plain synchronous functions (pluggy calls them synchronously). They return classes or
factories; the core instantiates them and awaits their methods inside its own nurseries. The
core calls them through typed methods of :class:`haive.dataflow.plugins.registry.Registry`.

Plugins are found through the ``haive.dataflow`` entry-point group::

    [project.entry-points."haive.dataflow"]
    kafka = "acme_kafka.plugin"

and implement hooks with :data:`haive.dataflow.hookimpl`::

    from haive.dataflow import hookimpl

    @hookimpl
    def haive_register_sources():
        return [MySource]

Hooks are grouped by lifecycle phase: discovery (hook specs, kinds), start-up (converter),
registration (one per kind), and the command line.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import cattrs

    from ..cli.main import Command
    from ..io.serializers import Serializer
    from ..io.sinks import StreamSink
    from ..io.sources import DataSource
    from ..runtime.backpressure import BackpressureStrategy
    from ..runtime.nodes import Node
    from ..state.backend import StateBackend
    from .registry import CapabilityKind

PROJECT_NAME = "haive.dataflow"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- discovery ------------------------------------------------------------------------------


@hookspec(historic=True)
def haive_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add the hook specs this plugin owns: ``pluginmanager.add_hookspecs(my_hookspecs)``.

    Called first, for every plugin as soon as it is registered (a historic hook, like
    pytest's ``pytest_addhooks``), before any other hook and before unknown hook
    implementations are refused. A plugin that defines a capability kind or asks other
    plugins for decisions keeps those specs in a module of its own and adds it here; the
    core never names them. Returns nothing.
    """


@hookspec
def haive_register_capability_kinds() -> Iterable[CapabilityKind[Any]]:
    """Return the :class:`~haive.dataflow.plugins.registry.CapabilityKind` objects this plugin adds.

    Called once when the registry is built, before any ``haive_register_<kind>`` hook. A
    kind names itself, the base class its members subclass, and its register hook spec
    (added in :func:`haive_addhooks`). The core's own kinds are registered the same way
    (``haive.dataflow.builtins.kinds``); two plugins adding one kind name is an error.
    """
    raise NotImplementedError


# -- start-up -------------------------------------------------------------------------------


@hookspec
def haive_configure_converter(converter: cattrs.Converter) -> None:
    """Register cattrs structure/unstructure hooks on the core's private converter.

    Called once, when the plugin manager is first built, after every plugin is loaded and
    before any config or stored state is (un)structured. Plugins whose config or state records
    need custom handling (tagged unions, custom scalar types) add hooks here; never on cattrs'
    global converter. Returns nothing.
    """


# -- registration: one hook per capability kind --------------------------------------------


@hookspec
def haive_register_sources() -> Iterable[type[DataSource]]:
    """Return the :class:`~haive.dataflow.io.sources.DataSource` classes this plugin provides.

    Called once when the registry is built. Each class has a unique ``PLUGIN_NAME``;
    ``registry.source(name)`` returns it.
    """
    raise NotImplementedError


@hookspec
def haive_register_sinks() -> Iterable[type[StreamSink]]:
    """Return the :class:`~haive.dataflow.io.sinks.StreamSink` classes this plugin provides.

    Called once when the registry is built; ``registry.sink(name)`` returns one.
    """
    raise NotImplementedError


@hookspec
def haive_register_processors() -> Iterable[type[Node]]:
    """Return the processor classes (:class:`~haive.dataflow.runtime.nodes.Node` subclasses) provided.

    Called once when the registry is built; ``registry.processor(name)`` returns one.
    """
    raise NotImplementedError


@hookspec
def haive_register_backpressure_strategies() -> Iterable[type[BackpressureStrategy]]:
    """Return :class:`~haive.dataflow.runtime.backpressure.BackpressureStrategy` classes.

    Called once when the registry is built. The core registers ``block``, ``drop_oldest``,
    ``drop_newest`` and ``sliding_window`` through this same hook.
    """
    raise NotImplementedError


@hookspec
def haive_register_state_backends() -> Iterable[type[StateBackend]]:
    """Return :class:`~haive.dataflow.state.backend.StateBackend` classes (key/value stores
    behind ``StateStore``).

    Called once when the registry is built. A backend class also declares the URL schemes it
    serves in ``URL_SCHEMES`` (e.g. ``("redis", "rediss")``) so ``StateStore(url)`` finds it.
    """
    raise NotImplementedError


@hookspec
def haive_register_serializers() -> Iterable[type[Serializer]]:
    """Return :class:`~haive.dataflow.io.serializers.Serializer` classes (``json``, ``msgpack``...).

    Called once when the registry is built; ``registry.serializer(name)`` returns one.
    """
    raise NotImplementedError


# -- command line ---------------------------------------------------------------------------


@hookspec
def haive_run_services(pipeline: Any) -> AbstractAsyncContextManager[str | None] | None:
    """Return an async context manager to run beside a pipeline that ``haive run`` or
    ``haive demo`` starts, or ``None``.

    Called once per command, before the pipeline starts. The command enters every returned
    context manager (so a plugin can serve a dashboard in its own nursery) and prints what
    each yields (an address such as ``http://127.0.0.1:8765/``); it exits them after the
    pipeline ends, also on Ctrl-C. ``HAIVE_NO_SERVICES=1`` skips them all.
    """
    raise NotImplementedError


@hookspec
def haive_register_cli_commands() -> Iterable[type[Command]]:
    """Return :class:`~haive.dataflow.cli.main.Command` classes that become ``haive NAME`` commands.

    Called once when the ``haive`` command line parser is built. Each class has a
    ``PLUGIN_NAME`` (the sub-command), ``add_arguments(parser)`` and ``run(args) -> int``.
    """
    raise NotImplementedError
