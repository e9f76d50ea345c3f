"""The core knows no plugin: plugins declare what they provide in their own metadata, add
their own hook specs and capability kinds, and the core's hints come from that metadata (or,
for first-party plugins that are not installed, from the generated directory)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from collections.abc import Iterable
from pathlib import Path

import pytest

from haive.dataflow import hookimpl
from haive.dataflow.errors import DuplicatePluginError, PluginError, UnknownPluginError
from haive.dataflow.plugins import (
    CapabilityKind,
    Registry,
    build_plugin_manager,
    get_registry,
    hookspecs,
    reset_registry,
)
from haive.dataflow.plugins import catalogue as _catalogue
from haive.dataflow.plugins.hookspecs import hookspec

ROOT = Path(__file__).resolve().parent.parent
CORE_SRC = ROOT / "core" / "src"


def _load_directory_tool() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "plugin_directory", ROOT / "tools" / "plugin_directory.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


directory_tool = _load_directory_tool()
FIRST_PARTY = [m.distribution for m in directory_tool.first_party_manifests()]


def test_core_python_source_names_no_other_distribution():
    """`grep -rn "haive-plugin\\|haive_plugin\\|haive-contrib\\|haive_contrib" core/src
    --include=*.py` finds nothing."""
    pattern = re.compile(r"haive-plugin|haive_plugin|haive-contrib|haive_contrib")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(CORE_SRC.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def test_the_first_party_directory_is_generated_from_the_plugins_manifests():
    assert directory_tool.main(["--check"]) == 0, "run: python tools/plugin_directory.py"
    in_repo = {m.distribution: m for m in directory_tool.first_party_manifests()}
    shipped = {m.distribution: m for m in _catalogue.directory_manifests()}
    assert set(shipped) == set(in_repo) and len(in_repo) >= 6
    for name, manifest in in_repo.items():
        assert shipped[name].provides == manifest.provides, name
        assert shipped[name].kinds == manifest.kinds, name
        assert set(shipped[name].exports) == set(manifest.exports), name


def test_the_directory_check_fails_when_a_manifest_changes(tmp_path, monkeypatch):
    stale = tmp_path / "plugin_directory.json"
    stale.write_text(directory_tool.DIRECTORY.read_text().replace('"encrypted"', '"old"'))
    monkeypatch.setattr(directory_tool, "DIRECTORY", stale)
    assert directory_tool.main(["--check"]) == 1


@pytest.mark.parametrize("distribution", FIRST_PARTY)
def test_each_first_party_plugin_declares_exactly_what_it_registers(distribution):
    installed = {m.distribution for m in _catalogue.installed_manifests()}
    if distribution not in installed:
        pytest.skip(f"{distribution} is not installed here")
    assert get_registry().manifest_problems(distribution) == []


def test_installed_metadata_describes_the_plugins_in_haive_plugins():
    registry = get_registry()
    for manifest in _catalogue.installed_manifests():
        for plugin in manifest.plugins:
            provided = {
                (p.kind, p.name)
                for name, _, items in registry.plugins()
                if name == plugin
                for p in items
            }
            assert provided == set(manifest.provides), plugin


def test_plugin_owned_hook_specs_are_not_the_cores():
    core_specs = {name for name in dir(hookspecs) if name.startswith("haive_")}
    assert "haive_websocket_authorize_room" not in core_specs
    assert "haive_register_embedding_providers" not in core_specs
    assert "haive_register_transports" not in core_specs
    assert {"haive_addhooks", "haive_register_capability_kinds"} <= core_specs
    pm = build_plugin_manager(load_entrypoints=False)
    assert not hasattr(pm.hook, "haive_websocket_authorize_room")


def test_a_name_of_an_uninstalled_first_party_plugin_says_what_to_install(monkeypatch):
    # The registry without entry points: as if no plugin were installed.
    registry = Registry(build_plugin_manager(load_entrypoints=False))
    with pytest.raises(UnknownPluginError) as info:
        registry.get("embedding_provider", "hashing")
    assert "'hashing' is provided by haive-contrib-ai: pip install haive-contrib-ai" in str(
        info.value
    )
    with pytest.raises(
        UnknownPluginError, match="Kind 'alert_rule' is added by haive-plugin-observability"
    ):
        registry.names("alert_rule")


def test_installed_metadata_wins_over_the_directory(tmp_path, monkeypatch):
    """An installed distribution declaring a name is used (and imported) from its own
    metadata, even where the directory says another distribution provides it."""
    (tmp_path / "acme_thing.py").write_text("class Thing:\n    pass\n")
    (tmp_path / "acme_thing_plugin.py").write_text("")
    dist = tmp_path / "acme_thing-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-thing\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[haive.dataflow]\nthing = acme_thing_plugin\n\n"
        "[haive.dataflow.exports]\nAcmeThing = acme_thing:Thing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    other = _catalogue.PluginManifest("someone-else", exports={"AcmeThing": None})
    directory = _catalogue.directory_manifests()
    monkeypatch.setattr(_catalogue, "directory_manifests", lambda: (*directory, other))
    reset_registry()
    try:
        from haive.dataflow import streaming

        assert streaming.AcmeThing.__module__ == "acme_thing"
        assert _catalogue.exporter_of("AcmeThing").distribution == "acme-thing"
        monkeypatch.setenv("HAIVE_DISABLE_PLUGINS", "thing")
        del streaming.AcmeThing
        with pytest.raises(
            ImportError,
            match="provided by the plugin acme-thing; acme-thing is installed but not loaded",
        ):
            streaming.AcmeThing
    finally:
        monkeypatch.undo()
        reset_registry()


def test_resolving_a_plugin_name_reads_metadata_without_building_the_registry():
    code = (
        "import sys\n"
        "from haive.dataflow.plugins import registry\n"
        "from haive.dataflow.streaming import RedisStreamSource\n"
        "print(registry._registry is None, 'haive_plugin_websocket' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stderr


# -- capability kinds ----------------------------------------------------------------------


class Codec:
    """Base class of the test kind."""

    PLUGIN_NAME = ""


class CsvCodec(Codec):
    PLUGIN_NAME = "csv"


@hookspec
def haive_register_codecs() -> Iterable[type[Codec]]:
    """Return codec classes."""
    raise NotImplementedError


@hookspec
def haive_codec_preference(kind: str) -> str | None:
    """A decision the codec plugin asks the others for."""
    raise NotImplementedError


CODEC = CapabilityKind("codec", Codec, haive_register_codecs)


def codec_specs() -> types.ModuleType:
    module = types.ModuleType("codec_specs")
    module.haive_register_codecs = haive_register_codecs
    module.haive_codec_preference = haive_codec_preference
    return module


def codec_plugin(*classes: type, kinds: tuple[CapabilityKind, ...] = (CODEC,)) -> types.ModuleType:
    specs = codec_specs()
    module = types.ModuleType("codec_plugin")
    module.haive_addhooks = hookimpl(lambda pluginmanager: pluginmanager.add_hookspecs(specs))
    module.haive_register_capability_kinds = hookimpl(lambda: list(kinds))
    module.haive_register_codecs = hookimpl(lambda: list(classes))
    module.haive_codec_preference = hookimpl(lambda kind: "csv")
    return module


def test_a_plugin_adds_a_kind_and_a_hook_of_its_own():
    pm = build_plugin_manager(load_entrypoints=False)
    pm.register(codec_plugin(CsvCodec), name="codecs")
    registry = Registry(pm)
    codec: type[Codec] = registry.get(CODEC, "csv")
    assert codec is CsvCodec and registry.get("codec", "csv") is CsvCodec
    assert registry.names("codec") == ["csv"]
    assert [k.name for k in registry.kinds_added_by("codecs")] == ["codec"]
    assert pm.hook.haive_codec_preference(kind="x") == ["csv"]
    with pytest.raises(UnknownPluginError, match="no codec named 'tsv' is installed"):
        registry.get(CODEC, "tsv")


def test_a_kind_checks_its_base_class():
    pm = build_plugin_manager(load_entrypoints=False)

    class NotACodec:
        PLUGIN_NAME = "bad"

    pm.register(codec_plugin(NotACodec), name="codecs")
    with pytest.raises(PluginError, match=r"returned .*NotACodec.*codec classes subclass .*Codec"):
        Registry(pm)


def test_a_core_kind_checks_its_base_class():
    pm = build_plugin_manager(load_entrypoints=False)
    module = types.ModuleType("wrong")
    module.haive_register_sources = hookimpl(lambda: [CsvCodec])
    pm.register(module, name="wrong")
    with pytest.raises(
        PluginError, match=r"source classes subclass haive.dataflow.io.sources.DataSource"
    ):
        Registry(pm)


def test_a_kind_whose_hook_spec_was_not_added_is_an_error():
    @hookspec
    def haive_register_orphans() -> Iterable[type[Codec]]:
        raise NotImplementedError

    pm = build_plugin_manager(load_entrypoints=False)
    pm.register(
        codec_plugin(CsvCodec, kinds=(CapabilityKind("orphan", Codec, haive_register_orphans),)),
        name="codecs",
    )
    with pytest.raises(PluginError, match="haive_register_orphans is not a registered hook spec"):
        Registry(pm)


def test_two_plugins_adding_one_kind_name_is_an_error():
    pm = build_plugin_manager(load_entrypoints=False)
    pm.register(codec_plugin(CsvCodec), name="codecs")
    clash = types.ModuleType("clash")
    clash.haive_register_capability_kinds = hookimpl(
        lambda: [CapabilityKind("source", Codec, haive_register_codecs)]
    )
    pm.register(clash, name="clash")
    with pytest.raises(DuplicatePluginError, match="capability kind 'source' is added twice"):
        Registry(pm)
