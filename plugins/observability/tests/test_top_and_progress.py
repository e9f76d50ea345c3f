"""``haive top`` (the real CLI, in a subprocess) and the progress reporter."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
from haive_plugin_observability import (
    Alert,
    AlertManager,
    Dashboard,
    MetricsCollector,
    ProgressReporter,
    StreamAnalytics,
)
from haive_plugin_observability.top import TopCommand, _ws_url

from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.plugins import get_registry

HAIVE = [sys.executable, "-c", "import sys; from haive.dataflow.cli import main; sys.exit(main())"]


def test_top_is_a_registered_cli_command() -> None:
    assert get_registry().cli_command("top") is TopCommand
    assert _ws_url("http://127.0.0.1:8765/") == "ws://127.0.0.1:8765/ws"
    assert _ws_url("https://example.org/dash") == "wss://example.org/ws"


async def test_top_follows_a_running_dashboard() -> None:
    metrics = MetricsCollector()
    alerts = AlertManager()
    alerts.add_rule(
        lambda m: Alert("critical", "Error rate spike: 9.00%", "Investigate"), name="error_spike"
    )
    dashboard = Dashboard("top-test")
    analytics = StreamAnalytics(metrics, alerts, dashboard, interval=0.1)
    for ms in (2, 4, 6):
        await metrics.record({"latency_ms": ms})
    async with trio.open_nursery() as nursery:
        url = await nursery.start(dashboard.serve)
        nursery.start_soon(analytics.run)
        result = await trio.run_process(
            [*HAIVE, "top", url, "--frames", "2", "--interval", "0.1", "--no-clear"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        nursery.cancel_scope.cancel()
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert out.count("haive top — top-test") == 2
    assert "throughput" in out and "total 3" in out
    assert "latency     p50" in out
    assert "CRITICAL error_spike: Error rate spike: 9.00%  -> Investigate" in out


async def test_top_reports_an_unreachable_dashboard() -> None:
    result = await trio.run_process(
        [*HAIVE, "top", "http://127.0.0.1:9/"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"haive top:" in result.stderr


def test_top_runs_a_pipeline_file(tmp_path: Path) -> None:
    config = tmp_path / "pipe.py"
    config.write_text(
        textwrap.dedent(
            """
            import trio
            from haive.dataflow import StreamingPipeline, TransformNode
            from haive.dataflow.builtins.sources import IterableSource

            async def slow(x):
                await trio.sleep(0.001)
                return x

            pipeline = StreamingPipeline("from-file")
            pipeline.set_source(IterableSource(range(300)))
            pipeline.add_processor(TransformNode(name="slow", transform_fn=slow))
            """
        )
    )
    result = subprocess.run(
        [*HAIVE, "top", str(config), "--interval", "0.1", "--no-clear"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    screens = result.stdout.split("haive top — from-file")
    assert len(screens) >= 3
    assert "processed 300" in screens[-1] and "finished" in screens[-1]


def test_progress_reporter_counts_rates_and_eta() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = ProgressReporter(
        total=10_000, label="replay", stream=out, clock=lambda: now[0], log_interval=1.0
    )
    for _ in range(50):
        now[0] += 0.1
        progress.update(100)
    assert progress.rate == pytest.approx(1000.0)
    assert progress.line() == "replay  5,000/10,000 items  50.0%  1,000 items/s  ETA 0:05"
    progress.close()
    lines = out.getvalue().splitlines()
    assert 4 <= len(lines) <= 7  # one line per log_interval when not a terminal, plus the last
    assert lines[-1] == "replay  5,000/10,000 items  50.0%  1,000 items/s  elapsed 0:05"
    assert list(ProgressReporter(stream=io.StringIO()).wrap("abc")) == ["a", "b", "c"]


def test_progress_on_a_terminal_redraws_one_line() -> None:
    now = [0.0]
    out = io.StringIO()
    with ProgressReporter(
        stream=out, clock=lambda: now[0], tty=True, interval=0.5, unit="rows"
    ) as progress:
        for _ in range(10):
            now[0] += 0.25
            progress.update(5)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 6
    assert text.rstrip("\n").split("\r")[-1].startswith("50 rows  20 rows/s  elapsed 0:03")


async def test_progress_as_a_pipeline_monitor(autojump_clock: Any) -> None:
    out = io.StringIO()
    pipeline = StreamingPipeline("progress")
    pipeline.set_source(IterableSource(range(5000)))
    pipeline.add_processor(lambda x: x)
    pipeline.add_monitor(ProgressReporter(total=5000, stream=out, clock=trio.current_time))
    await pipeline.execute()
    assert out.getvalue().splitlines()[-1].startswith("5,000/5,000 items  100.0%")
