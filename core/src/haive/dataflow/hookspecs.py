"""Every hook a haive-dataflow plugin can implement, in one place.

The architecture is "registration hooks": each capability kind has one argument-less
``haive_register_<kind>()`` hook returning the classes a plugin provides. Each class names
itself with a ``PLUGIN_NAME`` class attribute, which is the name users ask for
(``registry.source("jsonl")``). Two plugins returning the same name for one kind is an error
(:class:`haive.dataflow.errors.DuplicatePluginError`), never a silent override.

Hooks are plain synchronous functions (pluggy calls them synchronously). They return classes or
factories; the core instantiates them and awaits their methods inside its own nurseries.

Plugins are found through the ``haive.dataflow`` entry-point group::

    [project.entry-points."haive.dataflow"]
    websocket = "haive_plugin_websocket.plugin"

and implement hooks with :data:`haive.dataflow.hookimpl`::

    from haive.dataflow import hookimpl

    @hookimpl
    def haive_register_sources():
        return [MySource]

Hooks are grouped by lifecycle phase: start-up (converter), registration (one per kind),
and the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import cattrs

PROJECT_NAME = "haive.dataflow"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


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
def haive_register_sources() -> Iterable[type[Any]]:
    """Return the :class:`~haive.dataflow.sources.DataSource` classes this plugin provides.

    Called once when the registry is built. Each class has a unique ``PLUGIN_NAME``;
    ``registry.source(name)`` returns it.
    """
    raise NotImplementedError


@hookspec
def haive_register_sinks() -> Iterable[type[Any]]:
    """Return the :class:`~haive.dataflow.sinks.StreamSink` classes this plugin provides.

    Called once when the registry is built; ``registry.sink(name)`` returns one.
    """
    raise NotImplementedError


@hookspec
def haive_register_processors() -> Iterable[type[Any]]:
    """Return the processor classes (:class:`~haive.dataflow.nodes.Node` subclasses) provided.

    Called once when the registry is built; ``registry.processor(name)`` returns one.
    """
    raise NotImplementedError


@hookspec
def haive_register_backpressure_strategies() -> Iterable[type[Any]]:
    """Return :class:`~haive.dataflow.backpressure.BackpressureStrategy` classes.

    Called once when the registry is built. The core registers ``block``, ``drop_oldest``,
    ``drop_newest`` and ``sliding_window`` through this same hook.
    """
    raise NotImplementedError


@hookspec
def haive_register_state_backends() -> Iterable[type[Any]]:
    """Return state backend classes (key/value stores behind ``StateStore``).

    Called once when the registry is built. A backend class also declares the URL schemes it
    serves in ``URL_SCHEMES`` (e.g. ``("redis", "rediss")``) so ``StateStore(url)`` finds it.
    """
    raise NotImplementedError


@hookspec
def haive_register_alert_rules() -> Iterable[type[Any]]:
    """Return reusable alert rule classes (evaluated against a metrics snapshot).

    Called once when the registry is built; ``registry.alert_rule(name)`` returns one.
    """
    raise NotImplementedError


@hookspec
def haive_register_alert_notifiers() -> Iterable[type[Any]]:
    """Return alert notifier classes: where fired and resolved alerts are delivered.

    Called once when the registry is built (log, webhook, stream sink, ...).
    """
    raise NotImplementedError


@hookspec
def haive_register_transports() -> Iterable[type[Any]]:
    """Return transport classes (network endpoints such as WebSocket servers or Redis pub/sub).

    Called once when the registry is built; ``registry.transport(name)`` returns one.
    """
    raise NotImplementedError


@hookspec
def haive_register_serializers() -> Iterable[type[Any]]:
    """Return :class:`~haive.dataflow.serializers.Serializer` classes (``json``, ``msgpack``...).

    Called once when the registry is built; ``registry.serializer(name)`` returns one.
    """
    raise NotImplementedError


@hookspec
def haive_register_embedding_providers() -> Iterable[type[Any]]:
    """Return embedding provider classes: what turns texts into vectors for the AI processors.

    Called once when the registry is built; ``registry.get("embedding_provider", name)``
    returns one. A provider class is constructed with keyword options (``model=``, ``url=``,
    ...) and has ``async embed(texts) -> list of vectors``, one per text, in order.
    ``haive-contrib-ai`` registers ``sentence-transformers`` (its packaged all-MiniLM-L6-v2
    model, offline), ``openai`` (an OpenAI-compatible HTTP server given by URL) and ``hashing``.
    """
    raise NotImplementedError


@hookspec
def haive_streaming_exports() -> Mapping[str, str]:
    """Return public names this plugin adds to :mod:`haive.dataflow.streaming`.

    Called the first time an unknown attribute of ``haive.dataflow.streaming`` is looked up.
    Maps the exported name to ``"module:attribute"``; the module is imported only then, so a
    plugin costs nothing until its names are used.
    """
    raise NotImplementedError


# -- runtime decisions ------------------------------------------------------------------------


@hookspec
def haive_websocket_authorize_room(client: Any, room: str, action: str) -> bool | None:
    """Decide whether a WebSocket client may ``action`` (``"join"`` or ``"publish"``) ``room``.

    Called by haive-plugin-websocket's server for every room join and publish a client
    requests, after token authentication. ``client`` is a
    ``haive_plugin_websocket.ClientInfo`` (``client_id``, the ``identity`` the server's
    ``authenticate`` callback returned, negotiated ``features``). Return ``False`` to deny,
    ``True`` to allow, ``None`` for no opinion: any ``False`` denies. Called synchronously on
    the event loop, so it must not block; do I/O-bound checks in the server's async
    ``authorize_room`` callback instead.
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
def haive_register_cli_commands() -> Iterable[type[Any]]:
    """Return :class:`~haive.dataflow.cli.Command` classes that become ``haive NAME`` commands.

    Called once when the ``haive`` command line parser is built. Each class has a
    ``PLUGIN_NAME`` (the sub-command), ``add_arguments(parser)`` and ``run(args) -> int``.
    """
    raise NotImplementedError
