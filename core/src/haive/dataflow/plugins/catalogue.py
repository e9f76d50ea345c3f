"""What plugin distributions declare they provide, read from package metadata, never imported.

A plugin declares, in its own ``pyproject.toml``, beside the entry point that loads it::

    [project.entry-points."haive.dataflow"]
    kafka = "acme_kafka.plugin"

    # (kind, name) of each capability it registers -> the class
    [project.entry-points."haive.dataflow.provides"]
    "source:kafka" = "acme_kafka.source:KafkaSource"

    # capability kinds it adds -> their base class
    [project.entry-points."haive.dataflow.kinds"]
    topic_codec = "acme_kafka.codecs:TopicCodec"

    # public names it adds to haive.dataflow.streaming -> where they live
    [project.entry-points."haive.dataflow.exports"]
    KafkaSource = "acme_kafka.source:KafkaSource"

Installed distributions are read from their metadata (``importlib.metadata``; nothing is
imported). A distribution that is *not* installed has no metadata to read, so the hints
"``X`` is provided by P: pip install P" for first-party plugins come from the first-party
plugin directory: ``plugin_directory.json`` beside this module, data generated from the
plugins' own ``pyproject.toml`` files by ``tools/plugin_directory.py`` (a test keeps it in
sync). An installed distribution's own metadata always wins over the directory.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping
from importlib import metadata, resources
from typing import Any

import attrs

PLUGIN_GROUP = "haive.dataflow"
PROVIDES_GROUP = "haive.dataflow.provides"
KINDS_GROUP = "haive.dataflow.kinds"
EXPORTS_GROUP = "haive.dataflow.exports"

DIRECTORY_FILE = "plugin_directory.json"


@attrs.frozen
class PluginManifest:
    """What one plugin distribution declares: the capabilities, kinds and names it adds.

    ``provides`` holds ``(kind, name)`` pairs, ``kinds`` the capability kinds it adds, and
    ``exports`` maps each public name of ``haive.dataflow.streaming`` to ``"module:attr"``
    (``None`` in the first-party directory, which only says who provides a name).

    Example::

        >>> manifest = PluginManifest(
        ...     distribution="acme-kafka",
        ...     plugins=("kafka",),
        ...     provides=frozenset({("source", "kafka")}),
        ... )
        >>> manifest.declares("source", "kafka"), manifest.installed
        (True, False)
    """

    distribution: str
    plugins: tuple[str, ...] = ()
    provides: frozenset[tuple[str, str]] = frozenset()
    kinds: frozenset[str] = frozenset()
    exports: Mapping[str, str | None] = attrs.field(factory=dict)
    modules: tuple[str, ...] = ()
    installed: bool = False

    def declares(self, kind: str, name: str) -> bool:
        """Whether this distribution says it provides ``name`` of ``kind``."""
        return (kind, name) in self.provides

    def blocked_by(self, disabled: Iterable[str]) -> bool:
        """Whether ``HAIVE_DISABLE_PLUGINS`` (entry-point or module names) blocks it."""
        blocked = set(disabled)
        return bool(blocked & {*self.plugins, *self.modules})


def split_capability(entry_name: str, distribution: str) -> tuple[str, str]:
    kind, sep, name = entry_name.partition(":")
    if not sep or not kind or not name:
        from ..errors import PluginError

        raise PluginError(
            f"{distribution}: entry point {entry_name!r} in group {PROVIDES_GROUP!r} must be "
            "named 'kind:name', e.g. 'source:kafka'"
        )
    return kind, name


@functools.cache
def installed_manifests() -> tuple[PluginManifest, ...]:
    """The manifest of every installed distribution with a ``haive.dataflow`` entry point."""
    by_dist: dict[str, dict[str, list[metadata.EntryPoint]]] = {}
    groups = (PLUGIN_GROUP, PROVIDES_GROUP, KINDS_GROUP, EXPORTS_GROUP)
    # One pass over the installed distributions' metadata for all four groups.
    seen: set[str] = set()
    for distribution in metadata.distributions():
        name = distribution.name
        if name in seen:  # the first on sys.path wins, as for imports
            continue
        seen.add(name)
        for entry in distribution.entry_points:
            if entry.group in groups:
                by_dist.setdefault(name, {}).setdefault(entry.group, []).append(entry)
    manifests = []
    for dist, entries in sorted(by_dist.items()):
        plugins = entries.get(PLUGIN_GROUP, [])
        if not plugins:
            continue  # metadata without a plugin to load declares nothing that can work
        manifests.append(
            PluginManifest(
                distribution=dist,
                plugins=tuple(e.name for e in plugins),
                provides=frozenset(
                    split_capability(e.name, dist) for e in entries.get(PROVIDES_GROUP, [])
                ),
                kinds=frozenset(e.name for e in entries.get(KINDS_GROUP, [])),
                exports={e.name: e.value for e in entries.get(EXPORTS_GROUP, [])},
                modules=tuple(e.value for e in plugins),
                installed=True,
            )
        )
    return tuple(manifests)


@functools.cache
def directory_manifests() -> tuple[PluginManifest, ...]:
    """The first-party plugin directory shipped with the core (data, see the module doc)."""
    text = resources.files(__package__ or "haive.dataflow.plugins").joinpath(DIRECTORY_FILE).read_text()
    return tuple(manifest_from_json(item) for item in json.loads(text)["plugins"])


def manifest_from_json(item: Mapping[str, Any]) -> PluginManifest:
    """A directory entry (``manifest_to_json``'s output) back as a :class:`PluginManifest`."""
    return PluginManifest(
        distribution=str(item["distribution"]),
        plugins=tuple(item.get("plugins", ())),
        provides=frozenset(
            (kind, name) for kind, names in item.get("provides", {}).items() for name in names
        ),
        kinds=frozenset(item.get("kinds", ())),
        exports=dict.fromkeys(item.get("exports", ()), None),
    )


def manifest_to_json(manifest: PluginManifest) -> dict[str, object]:
    """A manifest as a directory entry: sorted, so the generated file diffs cleanly."""
    provides: dict[str, list[str]] = {}
    for kind, name in sorted(manifest.provides):
        provides.setdefault(kind, []).append(name)
    return {
        "distribution": manifest.distribution,
        "plugins": sorted(manifest.plugins),
        "provides": provides,
        "kinds": sorted(manifest.kinds),
        "exports": sorted(manifest.exports),
    }


def manifests() -> list[PluginManifest]:
    """Installed manifests, then directory entries for distributions that are not installed."""
    installed = list(installed_manifests())
    seen = {m.distribution for m in installed}
    return installed + [m for m in directory_manifests() if m.distribution not in seen]


def provider_of(kind: str, name: str) -> str | None:
    """The distribution that declares ``name`` of ``kind``, if any.

    Example::

        >>> provider_of("source", "no-such-source-anywhere") is None
        True
    """
    for manifest in manifests():
        if manifest.declares(kind, name):
            return manifest.distribution
    return None


def provider_of_kind(kind: str) -> str | None:
    """The distribution that declares it adds capability kind ``kind``, if any."""
    for manifest in manifests():
        if kind in manifest.kinds:
            return manifest.distribution
    return None


def declared_names(kind: str) -> list[str]:
    """Every name of ``kind`` some known distribution declares (installed or not)."""
    return sorted({n for m in manifests() for k, n in m.provides if k == kind})


def exporter_of(name: str) -> PluginManifest | None:
    """The manifest that declares public name ``name`` of ``haive.dataflow.streaming``."""
    for manifest in manifests():
        if name in manifest.exports:
            return manifest
    return None


def disabled_plugins() -> list[str]:
    """Plugin names (entry-point or module) blocked by ``HAIVE_DISABLE_PLUGINS``."""
    raw = os.environ.get("HAIVE_DISABLE_PLUGINS", "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def loaded_exports() -> dict[str, str]:
    """Public name -> ``"module:attr"`` declared by every installed plugin not blocked."""
    disabled = disabled_plugins()
    exports: dict[str, str] = {}
    for manifest in installed_manifests():
        if manifest.blocked_by(disabled):
            continue
        for name, target in manifest.exports.items():
            if target is not None:
                exports[name] = target
    return exports


def forget() -> None:
    """Drop the installed metadata read so far, so the next lookup reads it again (after
    installs, in tests); the directory is data shipped with the core and does not change."""
    installed_manifests.cache_clear()


def install_hint(package: str) -> str:
    """How to get ``package``'s plugin working: install it, or un-block it if it is disabled.

    Example::

        >>> install_hint("acme-kafka")
        'acme-kafka is not installed: pip install acme-kafka'
    """
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return f"{package} is not installed: pip install {package}"
    disabled = os.environ.get("HAIVE_DISABLE_PLUGINS", "").strip()
    if disabled:
        return f"{package} is installed but not loaded: HAIVE_DISABLE_PLUGINS={disabled} blocks it"
    return f"{package} is installed but did not register it; see `haive plugins`"
