"""Plugin discovery: the pluggy manager and the registry of named capabilities.

Discovery follows pytest, tox and datasette:

* the core's own defaults are ordinary plugins, listed in :data:`DEFAULT_PLUGINS` and
  registered through the same hooks as third-party ones (the core's capability kinds too);
* third-party plugins are found through the ``haive.dataflow`` entry-point group;
* every plugin's ``haive_addhooks(pluginmanager)`` runs first, so a plugin adds the hook
  specs it owns (its own capability kinds, its own decisions) without the core naming them;
* ``HAIVE_DISABLE_PLUGINS=name1,name2`` blocks plugins by entry-point (or module) name;
* ``HAIVE_TRACE_PLUGINS=1`` prints every hook call and its result to stderr;
* ``check_pending()`` makes a misspelled ``haive_*`` hook implementation fail loudly.

The core calls hooks only through typed methods of :class:`Registry`; what a plugin
*declares* (for hints and listings) is read from its metadata by :mod:`._catalogue`.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import attrs
import pluggy

from ..errors import DuplicatePluginError, PluginError, UnknownPluginError
from . import catalogue as _catalogue
from . import hookspecs

if TYPE_CHECKING:
    import cattrs

    from ..cli.main import Command
    from ..io.serializers import Serializer
    from ..io.sinks import StreamSink
    from ..io.sources import DataSource
    from ..runtime.backpressure import BackpressureStrategy
    from ..runtime.nodes import Node
    from ..state.backend import StateBackend

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

DEFAULT_PLUGINS: tuple[str, ...] = (
    "haive.dataflow.builtins.kinds",
    "haive.dataflow.builtins.sources",
    "haive.dataflow.builtins.sinks",
    "haive.dataflow.builtins.processors",
    "haive.dataflow.builtins.backpressure",
    "haive.dataflow.builtins.serializers",
    "haive.dataflow.builtins.state",
    "haive.dataflow.cli.plugin",
)

T = TypeVar("T")


@attrs.frozen
class CapabilityKind(Generic[T]):
    """A kind of named capability: what it is called, what its members subclass, and the
    register hook spec whose implementations return them.

    The core registers its kinds (``source``, ``sink``...) through the
    ``haive_register_capability_kinds`` hook; a plugin adds a new kind the same way, after
    adding the module holding ``hook`` in ``haive_addhooks``. ``base`` is checked for every
    class the hook returns.

    Example::

        >>> from collections.abc import Iterable
        >>> from haive.dataflow.plugins.hookspecs import hookspec
        >>> class Codec:
        ...     PLUGIN_NAME = ""
        >>> @hookspec
        ... def haive_register_codecs() -> Iterable[type[Codec]]:
        ...     raise NotImplementedError
        >>> CODEC = CapabilityKind("codec", Codec, haive_register_codecs)
        >>> CODEC.name, CODEC.hook_name
        ('codec', 'haive_register_codecs')
    """

    name: str
    base: type[Any]
    hook: Callable[[], Iterable[type[T]]]

    @property
    def hook_name(self) -> str:
        """The hook's name, as implementations spell it."""
        return self.hook.__name__


@attrs.frozen
class Provided:
    """One registered capability: its kind, name, class and the plugin that provided it."""

    kind: str
    name: str
    cls: type[Any]
    plugin: str
    distribution: str | None


@attrs.frozen
class RegisteredKind:
    """A capability kind in the registry and the plugin that added it."""

    kind: CapabilityKind[Any]
    plugin: str
    distribution: str | None


def _trace_writer(message: str) -> None:
    sys.stderr.write(message)


def build_plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    """Create a plugin manager with the core specs, built-ins and installed plugins.

    Each plugin's ``haive_addhooks`` runs as soon as it is registered (also for plugins
    registered later, e.g. by tests), so specs a plugin owns are known before its hook
    implementations are checked.

    Example::

        >>> pm = build_plugin_manager()
        >>> "haive.dataflow.builtins.sources" in {n for n, _ in pm.list_name_plugin()}
        True
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.hook.haive_addhooks.call_historic(kwargs={"pluginmanager": pm})
    for name in _catalogue.disabled_plugins():
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if pm.is_blocked(module_name):
            continue
        pm.register(importlib.import_module(module_name), name=module_name)
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:  # a broken plugin must say which one it is
            raise PluginError(f"loading a haive.dataflow plugin failed: {exc!r}") from exc
    if os.environ.get("HAIVE_TRACE_PLUGINS"):
        pm.trace.root.setwriter(_trace_writer)
        pm.enable_tracing()
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    return pm


class Registry:
    """Named capabilities of every installed plugin, by kind, and typed calls of the hooks.

    Example::

        >>> from haive.dataflow.plugins.registry import get_registry
        >>> registry = get_registry()
        >>> registry.source("iterable").__name__
        'IterableSource'
        >>> "drop_oldest" in registry.names("backpressure")
        True
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.plugin_manager = pm
        self._distributions = {
            id(plugin): dist.project_name for plugin, dist in pm.list_plugin_distinfo()
        }
        self._kinds: dict[str, RegisteredKind] = {}
        self._by_kind: dict[str, dict[str, Provided]] = {}
        for impl in reversed(pm.hook.haive_register_capability_kinds.get_hookimpls()):
            for kind in _returned(impl):
                self._add_kind(kind, impl.plugin_name, self._distributions.get(id(impl.plugin)))
        for registered in list(self._kinds.values()):
            kind = registered.kind
            # Each implementation is called on its own so that every class is attributed to
            # the plugin that returned it: duplicate names can then name both providers.
            for impl in reversed(self._caller(kind).get_hookimpls()):
                dist = self._distributions.get(id(impl.plugin))
                for cls in _returned(impl):
                    self._add(kind, cls, impl.plugin_name, dist)

    # -- building -------------------------------------------------------------------------

    def _add_kind(self, kind: Any, plugin: str, dist: str | None) -> None:
        where = _describe(plugin, dist)
        if not isinstance(kind, CapabilityKind):
            raise PluginError(
                f"haive_register_capability_kinds of {where} returned {kind!r}; "
                "expected CapabilityKind objects"
            )
        existing = self._kinds.get(kind.name)
        if existing is not None and existing.kind != kind:
            raise DuplicatePluginError(
                f"capability kind {kind.name!r} is added twice: by "
                f"{_describe(existing.plugin, existing.distribution)} and by {where}"
            )
        self._kinds[kind.name] = RegisteredKind(kind, plugin, dist)
        self._by_kind.setdefault(kind.name, {})
        self._caller(kind)  # a kind whose hook spec was never added fails here, by name

    def _caller(self, kind: CapabilityKind[Any]) -> pluggy.HookCaller:
        # The hook is found from the spec function the kind holds, never from a string, and
        # must be that very spec: a kind cannot point at a hook some other module specified.
        caller: pluggy.HookCaller | None = getattr(self.plugin_manager.hook, kind.hook_name, None)
        if caller is None or caller.spec is None or caller.spec.function is not kind.hook:
            raise PluginError(
                f"capability kind {kind.name!r}: its hook {kind.hook_name} is not a registered "
                "hook spec; add the module defining it in the plugin's haive_addhooks"
            )
        return caller

    def _add(self, kind: CapabilityKind[Any], cls: Any, plugin: str, dist: str | None) -> None:
        if not isinstance(cls, type) or not issubclass(cls, kind.base):
            raise PluginError(
                f"{kind.hook_name} of {_describe(plugin, dist)} returned {cls!r}; {kind.name} "
                f"classes subclass {kind.base.__module__}.{kind.base.__qualname__}"
            )
        name = getattr(cls, "PLUGIN_NAME", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"{kind.name} class {cls.__module__}.{cls.__qualname__} from plugin {plugin!r} "
                "has no PLUGIN_NAME string attribute"
            )
        entries = self._by_kind[kind.name]
        existing = entries.get(name)
        if existing is not None and existing.cls is not cls:
            raise DuplicatePluginError(
                f"{kind.name} {name!r} is provided twice: by {existing.cls.__qualname__} from "
                f"{_describe(existing.plugin, existing.distribution)} and by "
                f"{cls.__qualname__} from {_describe(plugin, dist)}; uninstall one, or block "
                f"one with HAIVE_DISABLE_PLUGINS={existing.plugin}"
            )
        entries[name] = Provided(kind.name, name, cls, plugin, dist)

    # -- capabilities ---------------------------------------------------------------------

    def kinds(self) -> list[RegisteredKind]:
        """Every capability kind, in registration order (the core's first)."""
        return list(self._kinds.values())

    def names(self, kind: CapabilityKind[Any] | str) -> list[str]:
        """Sorted names registered for ``kind``."""
        return sorted(self._kind(kind))

    def provided(self) -> Iterator[Provided]:
        """Every registered capability, kind by kind and name by name."""
        for entries in self._by_kind.values():
            for name in sorted(entries):
                yield entries[name]

    @overload
    def get(self, kind: CapabilityKind[T], name: str) -> type[T]: ...

    @overload
    def get(self, kind: str, name: str) -> type[Any]: ...

    def get(self, kind: CapabilityKind[Any] | str, name: str) -> type[Any]:
        """The class registered as ``name`` for ``kind``; a clear error when there is none."""
        entries = self._kind(kind, name)
        try:
            return entries[name].cls
        except KeyError:
            kind_name = kind if isinstance(kind, str) else kind.name
            raise UnknownPluginError(self._unknown_message(kind_name, name)) from None

    def _kind(
        self, kind: CapabilityKind[Any] | str, name: str | None = None
    ) -> dict[str, Provided]:
        kind_name = kind if isinstance(kind, str) else kind.name
        try:
            return self._by_kind[kind_name]
        except KeyError:
            raise UnknownPluginError(self._unknown_kind_message(kind_name, name)) from None

    def _unknown_kind_message(self, kind: str, name: str | None) -> str:
        package = _catalogue.provider_of(kind, name) if name is not None else None
        if package is not None:
            return (
                f"no {kind} named {name!r} is installed: {name!r} is provided by {package}: "
                f"pip install {package}"
            )
        message = f"unknown capability kind {kind!r}; kinds are: {', '.join(self._by_kind)}"
        package = _catalogue.provider_of_kind(kind)
        if package is not None:
            message += f". Kind {kind!r} is added by {package}: pip install {package}"
        return message

    def _unknown_message(self, kind: str, name: str) -> str:
        installed = sorted(self._by_kind[kind])
        parts = [
            f"no {kind} named {name!r} is installed.",
            f"Installed {kind}s: {', '.join(installed) if installed else '(none)'}.",
        ]
        package = _catalogue.provider_of(kind, name)
        if package is not None:
            parts.append(f"{name!r} is provided by {package}: pip install {package}")
        else:
            close = difflib.get_close_matches(name, installed, n=1)
            if close:
                parts.append(f"Did you mean {close[0]!r}?")
            else:
                guess = difflib.get_close_matches(name, _catalogue.declared_names(kind), n=1)
                if guess:
                    package = _catalogue.provider_of(kind, guess[0])
                    parts.append(f"Did you mean {guess[0]!r} (pip install {package})?")
        return " ".join(parts)

    # Typed conveniences for the core's kinds, so call sites read as what they ask for. The
    # kinds are asked for by name: their CapabilityKind objects (and base classes) belong to
    # the layers above, registered by the built-in plugins, which check every class's base.
    def source(self, name: str) -> type[DataSource]:
        return self.get("source", name)

    def sink(self, name: str) -> type[StreamSink]:
        return self.get("sink", name)

    def processor(self, name: str) -> type[Node]:
        return self.get("processor", name)

    def backpressure(self, name: str) -> type[BackpressureStrategy]:
        return self.get("backpressure", name)

    def state_backend(self, name: str) -> type[StateBackend]:
        return self.get("state_backend", name)

    def serializer(self, name: str) -> type[Serializer]:
        return self.get("serializer", name)

    def cli_command(self, name: str) -> type[Command]:
        return self.get("cli_command", name)

    # -- the core's other hooks, typed (tox's manager wrappers) ---------------------------

    def configure_converter(self, converter: cattrs.Converter) -> None:
        """Let every plugin register its cattrs hooks on ``converter``."""
        self.plugin_manager.hook.haive_configure_converter(converter=converter)

    def run_services(self, pipeline: Any) -> list[AbstractAsyncContextManager[str | None]]:
        """Every plugin's service to run beside ``pipeline`` (plugins with none left out)."""
        results = self.plugin_manager.hook.haive_run_services(pipeline=pipeline)
        return [service for service in results if service is not None]

    # -- listing --------------------------------------------------------------------------

    def plugins(self) -> list[tuple[str, str | None, list[Provided]]]:
        """(plugin name, distribution, what it provides) for every registered plugin."""
        by_plugin: dict[str, list[Provided]] = {}
        dists: dict[str, str | None] = {}
        for name, _plugin in self.plugin_manager.list_name_plugin():
            by_plugin.setdefault(name, [])
        for item in self.provided():
            by_plugin.setdefault(item.plugin, []).append(item)
            dists[item.plugin] = item.distribution
        for plugin, dist in self.plugin_manager.list_plugin_distinfo():
            dists[self.plugin_manager.get_name(plugin) or ""] = dist.project_name
        return [(name, dists.get(name), items) for name, items in sorted(by_plugin.items())]

    def kinds_added_by(self, plugin: str) -> list[CapabilityKind[Any]]:
        """The capability kinds ``plugin`` registered."""
        return [k.kind for k in self._kinds.values() if k.plugin == plugin]

    def manifest_problems(self, distribution: str) -> list[str]:
        """Where ``distribution``'s declared metadata and its registrations disagree.

        Compares the ``haive.dataflow.provides`` and ``haive.dataflow.kinds`` entry points
        with what its plugins registered, and checks every ``haive.dataflow.exports`` entry
        imports. An empty list means ``haive plugins`` and the install hints tell the truth;
        a plugin's tests assert it.
        """
        manifest = next(
            (m for m in _catalogue.installed_manifests() if m.distribution == distribution), None
        )
        if manifest is None:
            return [f"{distribution} is not installed or has no {ENTRY_POINT_GROUP} entry point"]
        registered = {(p.kind, p.name) for p in self.provided() if p.distribution == distribution}
        kinds = {k.kind.name for k in self._kinds.values() if k.distribution == distribution}
        problems = [
            f"declares {kind} {name!r} but does not register it"
            for kind, name in sorted(manifest.provides - registered)
        ]
        problems += [
            f"registers {kind} {name!r} but does not declare it in {_catalogue.PROVIDES_GROUP}"
            for kind, name in sorted(registered - manifest.provides)
        ]
        problems += [f"declares kind {k!r} but does not add it" for k in manifest.kinds - kinds]
        problems += [
            f"adds kind {k!r} but does not declare it in {_catalogue.KINDS_GROUP}"
            for k in sorted(kinds - manifest.kinds)
        ]
        for name, target in sorted(manifest.exports.items()):
            module_name, _, attribute = (target or "").partition(":")
            try:
                getattr(importlib.import_module(module_name), attribute)
            except Exception as exc:
                problems.append(f"export {name} = {target!r} does not load: {exc!r}")
        return problems


def _returned(impl: pluggy.HookImpl) -> Iterable[Any]:
    """What one registration hook implementation returned: an iterable (None: nothing)."""
    result = impl.function()
    if result is None:
        return ()
    if not isinstance(result, Iterable) or isinstance(result, str | bytes):
        raise PluginError(
            f"{impl.function.__name__} of plugin {impl.plugin_name!r} returned {result!r}; "
            "expected an iterable (a list of classes)"
        )
    return result


def _describe(plugin: str, dist: str | None) -> str:
    return f"plugin {plugin!r}" + (f" (distribution {dist})" if dist else "")


_lock = threading.Lock()
_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry(build_plugin_manager())
        return _registry


def reset_registry() -> None:
    """Forget the process-wide registry and the plugin metadata read so far, so the next
    call rediscovers plugins (tests, REPLs)."""
    global _registry
    with _lock:
        _registry = None
        _catalogue.forget()
