"""Plugin discovery, registry errors, and the plugin template end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from haive.dataflow import hookimpl
from haive.dataflow import streaming as streaming_module
from haive.dataflow.errors import (
    DuplicatePluginError,
    MissingPluginError,
    PluginError,
    UnknownPluginError,
)
from haive.dataflow.io.sources import DataSource
from haive.dataflow.plugins import Registry, build_plugin_manager, get_registry
from haive.dataflow.plugins import catalogue as _catalogue
from haive.dataflow.plugins.catalogue import PluginManifest

ROOT = Path(__file__).resolve().parent.parent


def plugin_module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


class KafkaSource(DataSource):
    PLUGIN_NAME = "kafka_test"

    async def batches(self, chunk_size):
        yield []


def test_builtins_register_through_hooks():
    registry = get_registry()
    assert {"iterable", "async_iterable", "memory", "jsonl"} <= set(registry.names("source"))
    assert {"memory", "jsonl", "stdout", "callback"} <= set(registry.names("sink"))
    assert {"block", "drop_oldest", "drop_newest", "sliding_window"} <= set(
        registry.names("backpressure")
    )
    assert {"json", "msgpack"} <= set(registry.names("serializer"))
    assert {"filter", "transform", "aggregate"} <= set(registry.names("processor"))
    assert {"plugins", "run", "demo", "new-plugin"} <= set(registry.names("cli_command"))


def test_unknown_name_lists_installed_and_suggests():
    registry = get_registry()
    with pytest.raises(UnknownPluginError) as info:
        registry.source("kafkaa")
    message = str(info.value)
    assert "no source named 'kafkaa' is installed" in message
    assert "Installed sources:" in message and "iterable" in message
    with pytest.raises(UnknownPluginError, match="Did you mean 'jsonl'"):
        registry.sink("jsonll")
    with pytest.raises(UnknownPluginError, match="unknown capability kind 'widget'"):
        registry.get("widget", "x")


def test_unknown_name_of_a_known_plugin_names_the_package():
    pm = build_plugin_manager(load_entrypoints=False)
    registry = Registry(pm)
    with pytest.raises(UnknownPluginError, match=r"pip install haive-plugin-websocket"):
        registry.get("transport", "websocket")


def test_two_plugins_claiming_one_name_is_an_error():
    pm = build_plugin_manager(load_entrypoints=False)

    class Other(DataSource):
        PLUGIN_NAME = "kafka_test"

        async def batches(self, chunk_size):
            yield []

    pm.register(
        plugin_module("plugin_a", haive_register_sources=lambda: [KafkaSource]), name="plugin_a"
    )
    pm.register(plugin_module("plugin_b", haive_register_sources=lambda: [Other]), name="plugin_b")
    with pytest.raises(DuplicatePluginError) as info:
        Registry(pm)
    message = str(info.value)
    assert "source 'kafka_test' is provided twice" in message
    assert "plugin 'plugin_a'" in message and "plugin 'plugin_b'" in message
    assert "HAIVE_DISABLE_PLUGINS=" in message


def test_class_without_plugin_name_is_an_error():
    pm = build_plugin_manager(load_entrypoints=False)

    class Nameless(DataSource):
        async def batches(self, chunk_size):
            yield []

    pm.register(plugin_module("p", haive_register_sources=lambda: [Nameless]), name="p")
    with pytest.raises(PluginError, match="has no PLUGIN_NAME"):
        Registry(pm)


def test_disable_plugins_env(monkeypatch):
    monkeypatch.setenv("HAIVE_DISABLE_PLUGINS", "haive.dataflow.builtins.serializers, other")
    registry = Registry(build_plugin_manager(load_entrypoints=False))
    assert registry.names("serializer") == []
    assert "iterable" in registry.names("source")


def test_misspelled_hook_fails_loudly(tmp_path, monkeypatch):
    (tmp_path / "haive_typo_plugin.py").write_text(
        "from haive.dataflow import hookimpl\n\n"
        "@hookimpl\n"
        "def haive_register_sauces():\n"
        "    return []\n"
    )
    dist = tmp_path / "haive_typo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: haive-typo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[haive.dataflow]\ntypo = haive_typo_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"unknown hook.*haive_register_sauces"):
        build_plugin_manager()


def test_trace_env_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("HAIVE_TRACE_PLUGINS", "1")
    pm = build_plugin_manager(load_entrypoints=False)
    pm.hook.haive_register_serializers()
    assert "haive_register_serializers" in capsys.readouterr().err


def test_streaming_names_of_missing_plugins_name_the_package(monkeypatch):
    missing = PluginManifest("haive-plugin-nowhere", exports={"NowhereTestSource": None})
    directory = _catalogue.directory_manifests()
    monkeypatch.setattr(_catalogue, "directory_manifests", lambda: (*directory, missing))
    with pytest.raises(MissingPluginError, match=r"pip install haive-plugin-nowhere"):
        streaming_module.NowhereTestSource
    with pytest.raises(AttributeError, match="has no attribute 'Nonsense'"):
        streaming_module.Nonsense
    from haive.dataflow.streaming import (  # noqa: F401 - the seed's import lines
        BackpressureManager,
        BufferStrategy,
        DataSource,
        DropStrategy,
        EventPipeline,
        FilterNode,
        FlowController,
        MessagePackSerializer,
        StreamConfig,
        StreamingPipeline,
        StreamProcessor,
        StreamSink,
        TransformNode,
    )


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.slow
def test_template_renders_installs_and_is_discovered(tmp_path, require):
    """`haive new-plugin` output is a real distribution the core discovers once installed,
    and type-checks under mypy --strict against the core's own annotations (py.typed)."""
    require(importlib.util.find_spec("mypy") is not None, "mypy is not installed (core[test])")
    haive = [sys.executable, "-m", "haive.dataflow.cli"]
    made = _run([*haive, "new-plugin", "sensor-feed", "--output-dir", str(tmp_path)])
    assert made.returncode == 0, made.stderr
    project = tmp_path / "haive-plugin-sensor-feed"
    assert (project / "pyproject.toml").is_file()
    assert (project / "src" / "haive_plugin_sensor_feed" / "plugin.py").is_file()
    assert (project / "src" / "haive_plugin_sensor_feed" / "py.typed").is_file()
    # `mypy` as the plugin's author runs it: the files come from the rendered pyproject's
    # [tool.mypy]; --strict is given too, so the check stays strict whatever that says
    typed = _run([sys.executable, "-m", "mypy", "--strict"], cwd=project)
    assert typed.returncode == 0, typed.stdout + typed.stderr

    target = tmp_path / "site"
    pip = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "--target",
            str(target),
            str(project),
        ]
    )
    assert pip.returncode == 0, pip.stderr
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
    }
    listed = _run([*haive, "plugins", "--json"], env=env)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["plugin"]: p for p in json.loads(listed.stdout)}
    entry = plugins["sensor_feed"]
    assert entry["distribution"] == "haive-plugin-sensor-feed"
    assert {"kind": "source", "name": "sensor_feed"} in entry["provides"]
    assert {"kind": "processor", "name": "sensor_feed"} in entry["provides"]
    # the generated plugin's own tests pass against the installed core
    tests = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "trio_mode=true",
            "--rootdir",
            str(project),
            str(project / "tests"),
        ],
        env=env,
        cwd=project,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_new_plugin_rejects_bad_names(tmp_path, capsys):
    from haive.dataflow.cli import main

    assert main(["new-plugin", "Bad Name!", "--output-dir", str(tmp_path)]) == 2
    assert "use lower-case letters" in capsys.readouterr().err


_SPECS = '''\
"""Hook specs this plugin owns: a new capability kind and a decision of its own."""

from collections.abc import Iterable

from haive.dataflow.plugins.hookspecs import hookspec


class SensorCodec:
    """Decodes one raw sensor frame; the base class of the ``sensor_codec`` kind."""

    PLUGIN_NAME = ""

    def decode(self, frame: bytes) -> dict:
        raise NotImplementedError


@hookspec
def haive_register_sensor_codecs() -> Iterable[type[SensorCodec]]:
    """Return SensorCodec classes."""
    raise NotImplementedError


@hookspec
def haive_sensor_calibration(sensor: str) -> float | None:
    """The calibration factor of ``sensor``, or None for no opinion."""
    raise NotImplementedError
'''

_IMPLEMENTATIONS = """

from haive.dataflow.plugins import CapabilityKind

from . import hookspecs


class CsvCodec(hookspecs.SensorCodec):
    PLUGIN_NAME = "csv"

    def decode(self, frame: bytes) -> dict:
        name, value = frame.decode().split(",")
        return {"sensor": name, "value": float(value)}


@hookimpl
def haive_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def haive_register_capability_kinds():
    return [
        CapabilityKind("sensor_codec", hookspecs.SensorCodec, hookspecs.haive_register_sensor_codecs)
    ]


@hookimpl
def haive_register_sensor_codecs():
    return [CsvCodec]


@hookimpl
def haive_sensor_calibration(sensor):
    return 1.5 if sensor == "t1" else None
"""


@pytest.mark.slow
def test_a_template_plugin_adds_a_hook_spec_and_a_capability_kind(tmp_path):
    """A plugin made from the template brings its own hook spec and capability kind, and
    both work once it is installed: nothing in the core names or knows them."""
    from cookiecutter.main import cookiecutter

    from haive.dataflow.cli import template_dir

    project = Path(
        cookiecutter(
            str(template_dir()),
            no_input=True,
            extra_context={"plugin_name": "sensors"},
            output_dir=str(tmp_path),
        )
    )
    package = project / "src" / "haive_plugin_sensors"
    (package / "hookspecs.py").write_text(_SPECS)
    with (package / "plugin.py").open("a") as plugin_py:
        plugin_py.write(_IMPLEMENTATIONS)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    for group, line in [
        ("provides", '"sensor_codec:csv" = "haive_plugin_sensors.plugin:CsvCodec"'),
        ("kinds", 'sensor_codec = "haive_plugin_sensors.hookspecs:SensorCodec"'),
    ]:
        header = f'[project.entry-points."haive.dataflow.{group}"]\n'
        assert header in text
        text = text.replace(header, header + line + "\n")
    pyproject.write_text(text)

    target = tmp_path / "site"
    pip = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "--target", str(target), str(project)]
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
    }
    listed = _run([sys.executable, "-m", "haive.dataflow.cli", "plugins", "--json"], env=env)
    assert listed.returncode == 0, listed.stderr
    entry = {p["plugin"]: p for p in json.loads(listed.stdout)}["sensors"]
    assert entry["kinds"] == [
        {"name": "sensor_codec", "base": "haive_plugin_sensors.hookspecs.SensorCodec"}
    ]
    assert {"kind": "sensor_codec", "name": "csv"} in entry["provides"]
    assert entry["problems"] == []
    text_listing = _run([sys.executable, "-m", "haive.dataflow.cli", "plugins"], env=env)
    assert "adds kind:       sensor_codec (haive_plugin_sensors.hookspecs.SensorCodec)" in (
        text_listing.stdout
    )

    used = _run(
        [
            sys.executable,
            "-c",
            "from haive.dataflow.plugins import get_registry\n"
            "registry = get_registry()\n"
            "codec = registry.get('sensor_codec', 'csv')()\n"
            "print(codec.decode(b't1,20.5'))\n"
            "print(registry.plugin_manager.hook.haive_sensor_calibration(sensor='t1'))\n"
            "try:\n"
            "    registry.get('sensor_codec', 'tsv')\n"
            "except Exception as exc:\n"
            "    print(exc)\n",
        ],
        env=env,
    )
    assert used.returncode == 0, used.stderr
    assert used.stdout.splitlines() == [
        "{'sensor': 't1', 'value': 20.5}",
        "[1.5]",
        "no sensor_codec named 'tsv' is installed. Installed sensor_codecs: csv. "
        "Did you mean 'csv'?",
    ]
