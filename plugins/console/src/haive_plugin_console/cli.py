"""``haive console FILE.py``: run the pipeline a file defines with the console beside it."""

from __future__ import annotations

import argparse
import sys

import trio

from haive.dataflow.cli import Command
from haive.dataflow.errors import ConfigError, HaiveError


class ConsoleCommand(Command):
    """``haive console [pipeline.py] [--fleet REDIS_URL] [--host H] [--port P] [--token T]``.

    Runs the pipeline like ``haive run`` and serves the console (API, OpenAPI document and
    page) until it ends; ``--keep`` serves on after the end, until Ctrl-C. ``--fleet`` also
    lists the ``haive worker`` processes publishing to that Redis (``FleetPublisher``);
    without a file it serves only that, until Ctrl-C.

    Example::

        >>> parser = argparse.ArgumentParser()
        >>> ConsoleCommand().add_arguments(parser)
        >>> parser.parse_args(["job.py", "--port", "8080"]).port
        8080
    """

    PLUGIN_NAME = "console"
    help = "run a pipeline file with the operations console (REST API + page) beside it"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "file", nargs="?", default=None, help="Python file defining a StreamingPipeline"
        )
        parser.add_argument(
            "--fleet",
            metavar="REDIS_URL",
            default=None,
            help="also list the workers publishing their state to this Redis",
        )
        parser.add_argument(
            "--fleet-prefix", default="haive:fleet", help="key prefix the workers publish under"
        )
        parser.add_argument("--object", help="name of the pipeline object in the file")
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help="address to listen on (beyond loopback a token is required)",
        )
        parser.add_argument("--port", type=int, default=8760, help="port (0: any free one)")
        parser.add_argument(
            "--token", default=None, help="the API token (default: a fresh one beyond loopback)"
        )
        parser.add_argument(
            "--keep", action="store_true", help="keep serving after the pipeline ends, until Ctrl-C"
        )

    def run(self, args: argparse.Namespace) -> int:
        try:
            return trio.run(self._run, args)
        except (HaiveError, OSError) as exc:
            print(f"haive console: {exc}", file=sys.stderr)
            return 2

    async def _run(self, args: argparse.Namespace) -> int:
        from haive.dataflow.cli import find_runnable, load_config_file
        from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

        from .console import Console
        from .fleet import FleetView
        from .server import serving

        if args.file is None and args.fleet is None:
            raise ConfigError("haive console: give a pipeline file, --fleet REDIS_URL, or both")
        fleet = FleetView(args.fleet, prefix=args.fleet_prefix) if args.fleet else None
        console = Console(fleet=fleet)
        pipeline = None
        if args.file is not None:
            pipeline = find_runnable(load_config_file(args.file), args.object, args.file)
            if not isinstance(pipeline, StreamingPipeline):
                raise ConfigError(
                    f"{args.file}: haive console runs a StreamingPipeline, found "
                    f"{type(pipeline).__name__}"
                )
            console.watch(pipeline)
        try:
            async with serving(
                console, host=args.host, port=args.port, token=args.token
            ) as address:
                print(f"console: {address.page_url}", file=sys.stderr, flush=True)
                if pipeline is not None:
                    report = await pipeline.execute()
                    print(
                        f"{pipeline.name}: {report.processed} processed, {report.failed} "
                        f"failed in {report.elapsed:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                if pipeline is None or args.keep:
                    await trio.sleep_forever()
        finally:
            if fleet is not None:
                fleet.close()
        return 0
