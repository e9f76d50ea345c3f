"""First-hour error paths, run as a user meets them: in subprocesses, with only the core
installed where the point is a missing plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

HAIVE = [sys.executable, "-m", "haive.dataflow.cli"]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAIVE, *args], capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def core_only(tmp_path_factory) -> list[str]:
    """A Python command line that sees the installed packages minus every haive plugin.

    The interpreter starts without ``site`` (``-S``) and adds a directory mirroring this
    environment's site-packages, with every plugin and contrib distribution left out (their
    dist-info, their editable ``.pth``), so the distributions are really absent, not blocked.
    """
    view = tmp_path_factory.mktemp("core-only-site")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "plugin" in entry.name or "contrib" in entry.name:
            continue
        (view / entry.name).symlink_to(entry)
    bootstrap = f"import site, sys\nsite.addsitedir({str(view)!r})\n"
    return [sys.executable, "-S", "-c", bootstrap]


def run_core_only(core_only: list[str], code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HAIVE_DISABLE_PLUGINS")}
    command = [*core_only[:-1], core_only[-1] + code]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def test_the_core_only_environment_really_lacks_the_plugins(core_only, tmp_path):
    out = run_core_only(
        core_only,
        "import haive.dataflow, importlib.util, importlib.metadata as m\n"
        "print(importlib.util.find_spec('haive_plugin_redis'))\n"
        "print(sorted(d.metadata['Name'] for d in m.distributions() if 'haive' in d.metadata['Name']))",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["None", "['haive-dataflow']"]


def test_from_import_of_a_missing_plugin_name_says_what_to_install(core_only, tmp_path):
    out = run_core_only(
        core_only, "from haive.dataflow.streaming import RedisStreamSource", tmp_path
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last == (
        "haive.dataflow.errors.MissingPluginError: haive.dataflow.streaming.RedisStreamSource "
        "is provided by the plugin haive-plugin-redis; haive-plugin-redis is not installed: "
        "pip install haive-plugin-redis"
    )
    assert "cannot import name" not in out.stderr


def test_a_missing_plugin_name_is_still_an_import_error(core_only, tmp_path):
    out = run_core_only(
        core_only,
        "try:\n"
        "    from haive.dataflow.streaming import WebSocketManager\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc.name)\n",
        tmp_path,
    )
    assert out.stdout.strip() == "MissingPluginError haive.dataflow.streaming", out.stderr


def test_from_import_names_a_disabled_plugin(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "from haive.dataflow.streaming import RedisStreamSource"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HAIVE_DISABLE_PLUGINS": "redis"},
    )
    assert out.returncode == 1
    assert (
        "RedisStreamSource is provided by the plugin haive-plugin-redis; haive-plugin-redis is "
        "installed but not loaded: HAIVE_DISABLE_PLUGINS=redis blocks it" in out.stderr
    )


@pytest.mark.parametrize(
    ("command", "package"),
    [
        ("top", "haive-plugin-observability"),
        ("replay", "haive-plugin-redis"),
    ],
)
def test_plugin_commands_without_their_plugin_say_what_to_install(
    core_only, tmp_path, command, package
):
    out = run_core_only(
        core_only,
        f"from haive.dataflow.cli import main; sys.exit(main([{command!r}, '--help']))",
        tmp_path,
    )
    assert out.returncode == 2
    assert "invalid choice" not in out.stderr
    assert (
        f"haive: error: `haive {command}` is provided by the plugin {package}; {package} is "
        f"not installed: pip install {package}" in out.stderr
    )


def test_unknown_commands_still_say_invalid_choice(core_only, tmp_path):
    out = run_core_only(
        core_only, "from haive.dataflow.cli import main; sys.exit(main(['topp']))", tmp_path
    )
    assert out.returncode == 2 and "invalid choice: 'topp'" in out.stderr


def test_run_a_file_that_does_not_compile(tmp_path):
    bad = tmp_path / "bad_pipeline.py"
    bad.write_text("import trio\n\ndef handler(:\n    pass\n")
    out = run("run", str(bad))
    assert out.returncode == 1
    assert out.stderr.startswith(f"haive: error: {bad}:3: SyntaxError: invalid syntax\n")
    assert "def handler(:" in out.stderr
    for frame in ("runpy", "cli.py", "Traceback"):
        assert frame not in out.stderr


def test_run_a_file_whose_import_fails_shows_only_the_users_frames(tmp_path):
    (tmp_path / "helpers.py").write_text("X = 1\nimport no_such_module_for_haive_test\n")
    config = tmp_path / "my_pipeline.py"
    config.write_text("import trio\nimport helpers\npipeline = None\n")
    out = run("run", str(config))
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert lines[0] == (
        f"haive: error: {tmp_path / 'helpers.py'}:2: ModuleNotFoundError: "
        "No module named 'no_such_module_for_haive_test'"
    )
    frames = [line.strip() for line in lines if line.strip().startswith("File ")]
    assert frames == [
        f'File "{config}", line 2, in <module>',
        f'File "{tmp_path / "helpers.py"}", line 2, in <module>',
    ]
    assert "runpy" not in out.stderr and "haive/dataflow" not in out.stderr


def test_run_a_file_that_raises(tmp_path):
    config = tmp_path / "job.py"
    config.write_text(
        "def build():\n    raise ValueError('no model configured')\n\npipeline = build()\n"
    )
    out = run("run", str(config))
    assert out.returncode == 1
    assert (
        out.stderr.splitlines()[0] == f"haive: error: {config}:2: ValueError: no model configured"
    )
    assert "line 4, in <module>" in out.stderr and "line 2, in build" in out.stderr
    assert "runpy" not in out.stderr


def test_run_a_directory_says_a_file_is_expected(tmp_path):
    (tmp_path / "pipeline.py").write_text("x = 1\n")
    out = run("run", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"haive: error: {tmp_path}: is a directory; haive run takes a Python file (*.py) "
        f"defining `pipeline` or `async def main()`, e.g. one of: {tmp_path / 'pipeline.py'}"
    )
