"""``haive top``: live figures in the terminal, for people without a browser.

Two sources: a running dashboard (``haive top http://127.0.0.1:8765``; it follows the same
WebSocket the page uses) or a pipeline file (``haive top pipeline.py``: runs the pipeline it
defines, like ``haive run``, with metrics attached).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import trio

from haive.dataflow.cli import Command
from haive.dataflow.errors import ConfigError, HaiveError

from .collector import MetricsCollector
from .progress import _rate

_SEVERITY_ORDER = {"critical": 0, "error": 1, "warning": 2, "info": 3}


def _ms(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 1:
        return f"{value:.2f} ms"
    return f"{value * 1000:.0f} µs"


def _bar(share: float, width: int = 12) -> str:
    filled = max(0, min(width, round(share * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render_screen(
    name: str, fig: Mapping[str, Any], alerts: list[Mapping[str, Any]], source: str
) -> str:
    """The text ``haive top`` shows for one frame.

    Example::

        >>> text = render_screen("demo", {"throughput": {"per_second": 1500.0, "per_minute": 1000.0,
        ...     "total": 9000}}, [{"severity": "warning", "rule": "slow", "message": "p99 high",
        ...     "suggested_action": None}], "test")
        >>> print(text.splitlines()[1])
        throughput  1,500 ev/s (1 s)   1,000 ev/s (1 min)   total 9,000
        >>> text.splitlines()[-1]
        '  WARNING  slow: p99 high'
    """
    lines = [f"haive top — {name}   {time.strftime('%H:%M:%S')}   ({source})"]
    tp = fig.get("throughput")
    if tp:
        lines.append(
            f"throughput  {_rate(tp['per_second'])} ev/s (1 s)   {_rate(tp['per_minute'])} ev/s (1 min)   "
            f"total {tp['total']:,}"
        )
    lat = fig.get("latency")
    if lat:
        lines.append(
            f"latency     p50 {_ms(lat['p50'])}   p95 {_ms(lat['p95'])}   p99 {_ms(lat['p99'])}   "
            f"(n={lat['count']:,})"
        )
    err = fig.get("error_rate")
    if err:
        flag = "  EXCEEDED" if err["exceeded"] else ""
        lines.append(
            f"errors      {err['current']:.2%}  (threshold {err['threshold']:.2%})  "
            f"{err['errors']:,} errors{flag}"
        )
    queues = fig.get("queues") or []
    if queues:
        lines.append("queues")
        width = max(len(q["name"]) for q in queues)
        for q in queues:
            lines.append(
                f"  {q['name']:<{width}}  {_bar(q['pressure'])} {q['depth']:>7,}/{q['capacity']:<7,} "
                f"dropped {q['dropped']:,}  blocked {q['blocked_fraction']:.1%}"
            )
    pipelines = fig.get("pipelines") or []
    if pipelines:
        lines.append("pipelines")
        for p in pipelines:
            state = "running " if p["running"] else "finished"
            lines.append(
                f"  {p['name']}  {state}  read {p['read']:,}  processed {p['processed']:,}  "
                f"failed {p['failed']:,}"
            )
    for name, value in (fig.get("extra") or {}).items():
        scalars = "  ".join(f"{k} {v}" for k, v in value.items() if not isinstance(v, dict | list))
        lines.append(f"{name:<11} {scalars}")
        rooms = value.get("rooms")
        if rooms:
            lines.append("  rooms: " + ", ".join(f"{room} ({n})" for room, n in rooms.items()))
    lines.append("alerts" if alerts else "alerts      none")
    for alert in sorted(alerts, key=lambda a: _SEVERITY_ORDER.get(a["severity"], 9)):
        text = f"  {alert['severity'].upper():<8} {alert['rule']}: {alert['message']}"
        if alert.get("suggested_action"):
            text += f"  -> {alert['suggested_action']}"
        lines.append(text)
    return "\n".join(lines)


def _ws_url(target: str) -> str:
    if target.startswith(("ws://", "wss://")):
        return target
    if target.startswith(("http://", "https://")):
        base = target.split("://", 1)
        scheme = "ws" if base[0] == "http" else "wss"
        host = base[1].split("/", 1)[0]
        return f"{scheme}://{host}/ws"
    raise ConfigError(
        f"haive top: expected a dashboard URL (http://host:port) or a .py file, got {target!r}"
    )


class _Screen:
    def __init__(self, out: TextIO, *, clear: bool) -> None:
        self.out = out
        self.clear = clear
        self.frames = 0

    def show(self, text: str) -> None:
        if self.clear:
            self.out.write("\x1b[H\x1b[2J")
        elif self.frames:
            self.out.write("\n")
        self.out.write(text + "\n")
        self.out.flush()
        self.frames += 1


class TopCommand(Command):
    """``haive top``: live throughput, latency, errors, queues and alerts in the terminal.

    Example::

        >>> parser = argparse.ArgumentParser()
        >>> TopCommand().add_arguments(parser)
        >>> parser.parse_args(["http://127.0.0.1:8765", "--frames", "3"]).frames
        3
    """

    PLUGIN_NAME = "top"
    help = "live pipeline figures in the terminal, from a dashboard URL or a pipeline file"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "target",
            help="a running dashboard (http://127.0.0.1:PORT) or a Python file defining a pipeline",
        )
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between screens")
        parser.add_argument(
            "--frames", type=int, default=0, help="stop after this many screens (0: never)"
        )
        parser.add_argument("--object", help="name of the pipeline object in the file")
        parser.add_argument(
            "--no-clear",
            action="store_true",
            help="print screens one after another (no screen clearing)",
        )

    def run(self, args: argparse.Namespace) -> int:
        # websockets and the dashboard are imported when the command runs, not when the
        # plugin registers it, so plugin discovery stays cheap.
        from websockets.exceptions import InvalidHandshake, InvalidURI

        out = sys.stdout
        screen = _Screen(out, clear=not args.no_clear and out.isatty())
        try:
            if str(args.target).endswith(".py"):
                return trio.run(self._pipeline, args, screen)
            return trio.run(self._follow, args, screen)
        except (HaiveError, OSError, InvalidHandshake, InvalidURI) as exc:
            print(f"haive top: {exc}", file=sys.stderr)
            return 2

    async def _follow(self, args: argparse.Namespace, screen: _Screen) -> int:
        from websockets.exceptions import ConnectionClosed
        from websockets.trio.client import connect

        url = _ws_url(args.target)
        name = url
        last = -float("inf")
        async with connect(url) as websocket:
            try:
                async for message in websocket:
                    frame = orjson.loads(message)
                    if frame.get("type") == "init":
                        name = frame.get("name", name)
                    now = trio.current_time()
                    if frame.get("type") == "init" or now - last >= args.interval * 0.9:
                        last = now
                        screen.show(
                            render_screen(
                                name, frame.get("figures", {}), frame.get("alerts", []), url
                            )
                        )
                        if args.frames and screen.frames >= args.frames:
                            return 0
            except ConnectionClosed:
                pass
        print("haive top: the dashboard closed the connection", file=sys.stderr)
        return 1

    async def _pipeline(self, args: argparse.Namespace, screen: _Screen) -> int:
        from haive.dataflow.cli import find_runnable, load_config_file
        from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

        from .dashboard import figures

        pipeline = find_runnable(load_config_file(args.target), args.object, args.target)
        if not isinstance(pipeline, StreamingPipeline):
            raise ConfigError(
                f"{args.target}: haive top runs a StreamingPipeline, found {type(pipeline).__name__}"
            )
        metrics = MetricsCollector(interval=min(0.25, args.interval))
        pipeline.add_monitor(metrics)
        source = f"running {args.target}"

        def show() -> None:
            screen.show(render_screen(pipeline.name, figures(metrics.get_current()), [], source))

        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def execute() -> None:
                try:
                    await pipeline.execute()
                finally:
                    done.set()

            nursery.start_soon(execute)
            while not done.is_set():
                with trio.move_on_after(args.interval):
                    await done.wait()
                show()
                if args.frames and screen.frames >= args.frames and not done.is_set():
                    nursery.cancel_scope.cancel()
                    return 0
        return 0
