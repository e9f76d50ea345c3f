"""The plugin system: hook specs, the registry of named capabilities, plugin metadata.

What a plugin author imports: :data:`hookimpl` and :data:`hookspec` (from
:mod:`~haive.dataflow.plugins.hookspecs`), :class:`CapabilityKind`, :class:`Registry` and
:func:`get_registry` (from :mod:`~haive.dataflow.plugins.registry`). What plugins declare in
their metadata is read by :mod:`~haive.dataflow.plugins.catalogue`.

This is the lowest layer but one: it imports only :mod:`haive.dataflow.errors` (see
``docs/architecture.md``).
"""

from __future__ import annotations

from .hookspecs import hookimpl, hookspec
from .registry import (
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    CapabilityKind,
    Provided,
    RegisteredKind,
    Registry,
    build_plugin_manager,
    get_registry,
    reset_registry,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "CapabilityKind",
    "Provided",
    "RegisteredKind",
    "Registry",
    "build_plugin_manager",
    "get_registry",
    "hookimpl",
    "hookspec",
    "reset_registry",
]
