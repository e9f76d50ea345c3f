"""The haive command line, run as users run it (subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

HAIVE = [sys.executable, "-m", "haive.dataflow.cli"]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAIVE, *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_plugins_lists_builtins():
    out = run("plugins")
    assert out.returncode == 0
    assert "haive.dataflow.builtins.sources  (built in)" in out.stdout
    assert "drop_oldest" in out.stdout


def test_run_executes_the_pipeline_a_file_defines(tmp_path):
    out_file = tmp_path / "out.jsonl"
    config = tmp_path / "my_pipeline.py"
    config.write_text(
        "from haive.dataflow import StreamingPipeline\n"
        "from haive.dataflow.builtins.sources import IterableSource\n"
        "from haive.dataflow.builtins.sinks import JsonLinesSink\n"
        "pipeline = StreamingPipeline('squares')\n"
        "pipeline.set_source(IterableSource(range(1000)))\n"
        "pipeline.add_processor(lambda n: {'n': n, 'sq': n * n})\n"
        f"pipeline.set_sink(JsonLinesSink({str(out_file)!r}, mode='wb'))\n"
    )
    out = run("run", str(config))
    assert out.returncode == 0, out.stderr
    assert "squares: 1000 processed, 0 failed" in out.stderr
    assert len(out_file.read_text().splitlines()) == 1000


def test_run_async_main(tmp_path):
    config = tmp_path / "job.py"
    config.write_text("import trio\nasync def main():\n    await trio.sleep(0)\n    print('ran')\n")
    out = run("run", str(config))
    assert out.returncode == 0 and out.stdout.strip() == "ran"


def test_run_errors_are_clear(tmp_path):
    out = run("run", str(tmp_path / "missing.py"))
    assert out.returncode == 2 and "no such file" in out.stderr
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    out = run("run", str(empty))
    assert out.returncode == 2 and "define a StreamingPipeline named 'pipeline'" in out.stderr
    out = run("run", str(empty), "--object", "nope")
    assert "defines no object named 'nope'" in out.stderr


def restore_default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ignore_sigint() -> None:
    """In the child before exec: what ``cmd &`` in a script or a CI runner does to SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_stops_cleanly(tmp_path, inherited):
    marker = tmp_path / "closed"
    config = tmp_path / "endless.py"
    config.write_text(
        "import trio\n"
        "from haive.dataflow import StreamingPipeline, StreamSink\n"
        "from haive.dataflow.builtins.sources import AsyncIterableSource\n"
        "async def ticks():\n"
        "    n = 0\n"
        "    while True:\n"
        "        yield n\n"
        "        n += 1\n"
        "        await trio.sleep(0.001)\n"
        "class Sink(StreamSink):\n"
        "    async def write_batch(self, items):\n"
        "        print('batch', flush=True)\n"
        "    async def aclose(self):\n"
        f"        open({str(marker)!r}, 'w').write('closed')\n"
        "pipeline = StreamingPipeline('endless')\n"
        "pipeline.set_source(AsyncIterableSource(ticks()))\n"
        "pipeline.set_sink(Sink())\n"
    )
    # The child's SIGINT disposition is set explicitly either way, so the test does not
    # depend on how pytest itself was started (a suite run with SIGINT ignored passes it on).
    proc = subprocess.Popen(
        [*HAIVE, "run", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint if inherited == "ignored" else restore_default_sigint,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("batch")  # it is running
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "stopped" in err and "Traceback" not in err
    assert marker.read_text() == "closed"  # the sink was closed on the way out


def test_demo_runs():
    # HAIVE_NO_SERVICES: as with the core alone (no dashboard plugin), the demo runs its
    # events as fast as it can, prints the figures and exits (the README's first command).
    # With a dashboard it serves until Ctrl-C: plugins/observability/tests covers that.
    env = {**os.environ, "HAIVE_NO_SERVICES": "1"}
    out = run("demo", "--events", "5000", env=env)
    assert out.returncode == 0, out.stderr
    assert "5,000 events in" in out.stdout and "trend windows" in out.stdout
    out = run("demo", env=env)
    assert out.returncode == 0, out.stderr
    assert "20,000 events in" in out.stdout and "dashboard" not in out.stdout


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("--events", "-5", "--events must be >= 1, got -5"),
        ("--events", "0", "--events must be >= 1, got 0"),
        ("--rate", "0", "--rate must be > 0 events/s, got 0.0"),
        ("--rate", "nan", "--rate must be > 0 events/s, got nan"),
    ],
)
def test_demo_refuses_what_it_cannot_run(option, value, error):
    out = run("demo", option, value, env={**os.environ, "HAIVE_NO_SERVICES": "1"})
    assert out.returncode == 2 and error in out.stderr, out.stderr


def test_unknown_command():
    out = run("frobnicate")
    assert out.returncode == 2 and "invalid choice: 'frobnicate'" in out.stderr


def test_help_lists_commands():
    out = run("--help")
    for name in ("plugins", "run", "demo", "new-plugin"):
        assert name in out.stdout
