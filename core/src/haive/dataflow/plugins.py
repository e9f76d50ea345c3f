"""Plugin discovery: the pluggy manager and the registry of named capabilities.

Discovery follows tox and datasette:

* the core's own defaults are ordinary plugins, listed in :data:`DEFAULT_PLUGINS` and
  registered through the same hooks as third-party ones;
* third-party plugins are found through the ``haive.dataflow`` entry-point group;
* ``HAIVE_DISABLE_PLUGINS=name1,name2`` blocks plugins by entry-point (or module) name;
* ``HAIVE_TRACE_PLUGINS=1`` prints every hook call and its result to stderr;
* ``check_pending()`` makes a misspelled ``haive_*`` hook implementation fail loudly.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import attrs
import pluggy

from . import hookspecs
from ._catalogue import provider_of
from .errors import DuplicatePluginError, PluginError, UnknownPluginError

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

DEFAULT_PLUGINS: tuple[str, ...] = (
    "haive.dataflow.builtins.sources",
    "haive.dataflow.builtins.sinks",
    "haive.dataflow.builtins.processors",
    "haive.dataflow.builtins.backpressure",
    "haive.dataflow.builtins.serializers",
    "haive.dataflow.builtins.state",
    "haive.dataflow.builtins.commands",
)

#: Capability kinds, each served by the ``haive_register_<hook>`` hook named beside it.
KINDS: dict[str, str] = {
    "source": "haive_register_sources",
    "sink": "haive_register_sinks",
    "processor": "haive_register_processors",
    "backpressure": "haive_register_backpressure_strategies",
    "state_backend": "haive_register_state_backends",
    "alert_rule": "haive_register_alert_rules",
    "alert_notifier": "haive_register_alert_notifiers",
    "transport": "haive_register_transports",
    "serializer": "haive_register_serializers",
    "embedding_provider": "haive_register_embedding_providers",
    "cli_command": "haive_register_cli_commands",
}

T = TypeVar("T")


@attrs.frozen
class Provided:
    """One registered capability: its kind, name, class and the plugin that provided it."""

    kind: str
    name: str
    cls: type[Any]
    plugin: str
    distribution: str | None


def _trace_writer(message: str) -> None:
    sys.stderr.write(message)


def build_plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    """Create a plugin manager with the core specs, built-ins and installed plugins.

    Example::

        >>> pm = build_plugin_manager()
        >>> "haive.dataflow.builtins.sources" in {n for n, _ in pm.list_name_plugin()}
        True
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in _disabled_plugins():
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


def _disabled_plugins() -> list[str]:
    raw = os.environ.get("HAIVE_DISABLE_PLUGINS", "")
    return [name.strip() for name in raw.split(",") if name.strip()]


class Registry:
    """Named capabilities of every installed plugin, by kind.

    Example::

        >>> from haive.dataflow.plugins import get_registry
        >>> registry = get_registry()
        >>> registry.source("iterable").__name__
        'IterableSource'
        >>> "drop_oldest" in registry.names("backpressure")
        True
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.plugin_manager = pm
        self._by_kind: dict[str, dict[str, Provided]] = {kind: {} for kind in KINDS}
        distributions = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
        for kind, hook_name in KINDS.items():
            hook = getattr(pm.hook, hook_name)
            # Each implementation is called on its own so that every class is attributed to
            # the plugin that returned it: duplicate names can then name both providers.
            for impl in reversed(hook.get_hookimpls()):
                dist = distributions.get(id(impl.plugin))
                dist_name = dist.project_name if dist is not None else None
                for cls in impl.function() or ():
                    self._add(kind, cls, impl.plugin_name, dist_name)

    def _add(self, kind: str, cls: type[Any], plugin: str, dist: str | None) -> None:
        name = getattr(cls, "PLUGIN_NAME", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"{kind} class {cls.__module__}.{cls.__qualname__} from plugin {plugin!r} "
                "has no PLUGIN_NAME string attribute"
            )
        existing = self._by_kind[kind].get(name)
        if existing is not None and existing.cls is not cls:
            raise DuplicatePluginError(
                f"{kind} {name!r} is provided twice: by {existing.cls.__qualname__} from "
                f"{_describe(existing.plugin, existing.distribution)} and by "
                f"{cls.__qualname__} from {_describe(plugin, dist)}; uninstall one, or block "
                f"one with HAIVE_DISABLE_PLUGINS={existing.plugin}"
            )
        self._by_kind[kind][name] = Provided(kind, name, cls, plugin, dist)

    def names(self, kind: str) -> list[str]:
        """Sorted names registered for ``kind``."""
        return sorted(self._kind(kind))

    def provided(self) -> Iterator[Provided]:
        """Every registered capability, kind by kind and name by name."""
        for kind in KINDS:
            for name in sorted(self._by_kind[kind]):
                yield self._by_kind[kind][name]

    def get(self, kind: str, name: str) -> type[Any]:
        """The class registered as ``name`` for ``kind``; a clear error when there is none."""
        entries = self._kind(kind)
        try:
            return entries[name].cls
        except KeyError:
            raise UnknownPluginError(self._unknown_message(kind, name)) from None

    def _kind(self, kind: str) -> dict[str, Provided]:
        try:
            return self._by_kind[kind]
        except KeyError:
            raise UnknownPluginError(
                f"unknown capability kind {kind!r}; kinds are: {', '.join(KINDS)}"
            ) from None

    def _unknown_message(self, kind: str, name: str) -> str:
        installed = sorted(self._by_kind[kind])
        parts = [
            f"no {kind} named {name!r} is installed.",
            f"Installed {kind}s: {', '.join(installed) if installed else '(none)'}.",
        ]
        package = provider_of(kind, name)
        if package is not None:
            parts.append(f"{name!r} is provided by {package}: pip install {package}")
        else:
            close = difflib.get_close_matches(name, installed, n=1)
            if close:
                parts.append(f"Did you mean {close[0]!r}?")
            else:
                guess = difflib.get_close_matches(name, _catalogue_names(kind), n=1)
                if guess:
                    package = provider_of(kind, guess[0])
                    parts.append(f"Did you mean {guess[0]!r} (pip install {package})?")
        return " ".join(parts)

    # Typed conveniences, one per kind, so call sites read as what they ask for.
    def source(self, name: str) -> type[Any]:
        return self.get("source", name)

    def sink(self, name: str) -> type[Any]:
        return self.get("sink", name)

    def processor(self, name: str) -> type[Any]:
        return self.get("processor", name)

    def backpressure(self, name: str) -> type[Any]:
        return self.get("backpressure", name)

    def state_backend(self, name: str) -> type[Any]:
        return self.get("state_backend", name)

    def alert_rule(self, name: str) -> type[Any]:
        return self.get("alert_rule", name)

    def alert_notifier(self, name: str) -> type[Any]:
        return self.get("alert_notifier", name)

    def transport(self, name: str) -> type[Any]:
        return self.get("transport", name)

    def serializer(self, name: str) -> type[Any]:
        return self.get("serializer", name)

    def cli_command(self, name: str) -> type[Any]:
        return self.get("cli_command", name)

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


def _catalogue_names(kind: str) -> list[str]:
    from ._catalogue import CAPABILITIES

    return [name for (k, name) in CAPABILITIES if k == kind]


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
    """Forget the process-wide registry so the next call rediscovers plugins (tests, REPLs)."""
    global _registry
    with _lock:
        _registry = None


def iter_hook_results(hook_name: str) -> Iterable[Any]:
    """Call hook ``hook_name`` on every plugin and chain the results."""
    hook = getattr(get_registry().plugin_manager.hook, hook_name)
    for result in hook():
        yield from result
