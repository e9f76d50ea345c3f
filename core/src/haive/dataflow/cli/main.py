"""The ``haive`` command line: plugins, run, demo, new-plugin, and plugin commands."""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import trio

from ..errors import ConfigError, HaiveError, UserCodeError
from ..plugins.catalogue import install_hint, provider_of
from ..plugins.registry import get_registry
from .services import run_services


class Command:
    """Base class of ``haive`` sub-commands; plugins register subclasses as ``cli_command``.

    Example::

        >>> class Hello(Command):
        ...     PLUGIN_NAME = "hello"
        ...     help = "say hello"
        ...     def run(self, args):
        ...         print("hello")
        ...         return 0
        >>> Hello().run(argparse.Namespace())
        hello
        0
    """

    PLUGIN_NAME: ClassVar[str] = ""
    help: ClassVar[str] = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare this command's options."""

    def run(self, args: argparse.Namespace) -> int:
        """Do the work; return the process exit code."""
        raise NotImplementedError


class PluginsCommand(Command):
    """``haive plugins``: installed plugins and what each provides."""

    PLUGIN_NAME = "plugins"
    help = "list installed plugins and the capabilities each provides"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def run(self, args: argparse.Namespace) -> int:
        registry = get_registry()
        rows = []
        for name, dist, items in registry.plugins():
            kinds = registry.kinds_added_by(name)
            # A distribution's declared metadata (what hints and listings without the
            # registry rely on) must match what it registers; say so when it does not.
            problems = registry.manifest_problems(dist) if dist else []
            rows.append((name, dist, items, kinds, problems))
        if args.json:
            import orjson

            data = [
                {
                    "plugin": name,
                    "distribution": dist,
                    "kinds": [
                        {"name": k.name, "base": f"{k.base.__module__}.{k.base.__qualname__}"}
                        for k in kinds
                    ],
                    "provides": [{"kind": p.kind, "name": p.name} for p in items],
                    "problems": problems,
                }
                for name, dist, items, kinds, problems in rows
            ]
            print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
            return 0
        for name, dist, items, kinds, problems in rows:
            print(f"{name}" + (f"  ({dist})" if dist else "  (built in)"))
            for kind in kinds:
                base = f"{kind.base.__module__}.{kind.base.__qualname__}"
                print(f"    {'adds kind:':<16} {kind.name} ({base})")
            by_kind: dict[str, list[str]] = {}
            for item in items:
                by_kind.setdefault(item.kind, []).append(item.name)
            for kind_name, names in by_kind.items():
                print(f"    {kind_name + ':':<16} {', '.join(names)}")
            for problem in problems:
                print(f"    metadata: {problem}")
        return 0


_EXPECTED_FILE = "a Python file (*.py) defining `pipeline` or `async def main()`"


def load_config_file(path: str) -> dict[str, Any]:
    """Execute a Python config file and return its globals (clear errors for bad paths).

    A file that does not compile, or raises while it runs, raises :class:`UserCodeError`
    carrying the file's own traceback.
    """
    file = Path(path)
    if file.is_dir():
        raise ConfigError(
            f"{path}: is a directory; haive run takes {_EXPECTED_FILE}{_in_dir(file)}"
        )
    if not file.is_file():
        raise ConfigError(f"{path}: no such file; haive run takes {_EXPECTED_FILE}")
    if file.suffix != ".py":
        raise ConfigError(f"{path}: expected {_EXPECTED_FILE}")
    sys.path.insert(0, str(file.parent.resolve()))
    try:
        return runpy.run_path(str(file), run_name="__haive_config__")
    except (Exception, SystemExit) as exc:
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            raise
        raise UserCodeError(_user_traceback(exc, file)) from None
    finally:
        sys.path.pop(0)


def _in_dir(directory: Path) -> str:
    files = sorted(p.name for p in directory.glob("*.py"))[:5]
    if not files:
        return ""
    return f", e.g. one of: {', '.join(str(directory / name) for name in files)}"


def _user_traceback(exc: BaseException, file: Path) -> str:
    """``exc`` as Python prints it, minus the frames above the user's ``file``."""
    target = str(file.resolve())
    tb = exc.__traceback__
    while tb is not None and _resolved(tb.tb_frame.f_code.co_filename) != target:
        tb = tb.tb_next
    if tb is None and isinstance(exc, SyntaxError):
        # The file itself does not compile: no frame of the user's ran; the location is in
        # the exception (format_exception_only shows the line and a caret).
        where = f"{exc.filename}:{exc.lineno}" if exc.lineno else str(exc.filename)
        detail = "".join(traceback.format_exception_only(type(exc), exc))
        return f"{where}: {type(exc).__name__}: {exc.msg}\n{detail.rstrip()}"
    if tb is None:  # raised before the file's first line ran: keep every frame
        tb = exc.__traceback__
    lines = traceback.format_exception(type(exc), exc, tb)
    return f"{_user_location(tb, file)}: {type(exc).__name__}: {exc}\n{''.join(lines).rstrip()}"


def _user_location(tb: TracebackType | None, file: Path) -> str:
    """``path:line`` of the deepest frame in the user's files (those beside ``file``)."""
    folder = file.resolve().parent
    where = str(file)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if Path(_resolved(filename)).is_relative_to(folder):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def _resolved(filename: str) -> str:
    try:
        return str(Path(filename).resolve())
    except (OSError, ValueError):
        return filename


def find_runnable(namespace: dict[str, Any], name: str | None, path: str) -> Any:
    """The object to run: ``name`` if given, else ``pipeline``, else ``main``, else the only
    pipeline defined in the file."""
    from ..pipelines.event_pipeline import EventPipeline
    from ..pipelines.streaming_pipeline import StreamingPipeline

    if name is not None:
        if name not in namespace:
            raise ConfigError(f"{path}: defines no object named {name!r}")
        return namespace[name]
    for candidate in ("pipeline", "main"):
        if candidate in namespace:
            return namespace[candidate]
    found = [v for v in namespace.values() if isinstance(v, StreamingPipeline | EventPipeline)]
    if len(found) == 1:
        return found[0]
    raise ConfigError(
        f"{path}: define a StreamingPipeline named 'pipeline' or an async function 'main' "
        "(or pass --object NAME)"
    )


async def run_object(obj: Any, path: str) -> int:
    from ..pipelines.streaming_pipeline import StreamingPipeline

    if isinstance(obj, StreamingPipeline):
        async with run_services(obj) as addresses:
            for address in addresses:
                print(f"dashboard: {address}", file=sys.stderr, flush=True)
            report = await obj.execute()
        print(
            f"{obj.name}: {report.processed} processed, {report.failed} failed, "
            f"{report.dropped} dropped in {report.elapsed:.2f} s "
            f"({report.events_per_second:,.0f} events/s)",
            file=sys.stderr,
        )
        return 1 if report.failed and not obj.dead_letter else 0
    if callable(obj):
        result = obj()
        if hasattr(result, "__await__"):
            result = await result
        return int(result or 0)
    raise ConfigError(
        f"{path}: cannot run {type(obj).__name__}; expected a StreamingPipeline or an async function"
    )


class RunCommand(Command):
    """``haive run FILE.py``: run the pipeline a Python config file defines."""

    PLUGIN_NAME = "run"
    help = "run the pipeline (or async main) defined in a Python file; Ctrl-C stops cleanly"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", help="Python file defining `pipeline` or `async def main()`")
        parser.add_argument("--object", help="name of the object to run")

    def run(self, args: argparse.Namespace) -> int:
        namespace = load_config_file(args.file)
        obj = find_runnable(namespace, args.object, args.file)
        return trio.run(run_object, obj, args.file)


class NewPluginCommand(Command):
    """``haive new-plugin NAME``: render the plugin template into a new distribution."""

    PLUGIN_NAME = "new-plugin"
    help = "create a new plugin distribution from the cookiecutter template"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="plugin name, e.g. 'kafka'")
        parser.add_argument("--output-dir", default=".", help="where to create it")
        parser.add_argument("--description", default=None)
        parser.add_argument("--author", default=None)

    def run(self, args: argparse.Namespace) -> int:
        path = render_plugin_template(
            args.name, args.output_dir, description=args.description, author=args.author
        )
        print(f"created {path}")
        print(f"next: pip install -e '{path}[test]' && haive plugins")
        return 0


def template_dir() -> Path:
    """The plugin template: packaged with the wheel, or the repository's templates/ folder."""
    packaged = Path(__file__).parent / "_templates" / "plugin"
    if packaged.is_dir():
        return packaged
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "templates" / "plugin"
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    raise ConfigError("the plugin template is missing from this installation of haive-dataflow")


def render_plugin_template(
    name: str,
    output_dir: str | os.PathLike[str],
    *,
    description: str | None = None,
    author: str | None = None,
) -> Path:
    """Render ``templates/plugin`` for plugin ``name`` into ``output_dir``; returns its path."""
    import re

    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ConfigError(
            f"plugin name {name!r}: use lower-case letters, digits, '-' or '_', starting with a letter"
        )
    try:
        from cookiecutter.main import cookiecutter
    except ImportError:
        raise ConfigError(
            "haive new-plugin needs cookiecutter: pip install 'haive-dataflow[templates]'"
        ) from None
    context: dict[str, str] = {"plugin_name": name}
    if description:
        context["description"] = description
    if author:
        context["author"] = author
    result = cookiecutter(
        str(template_dir()), no_input=True, extra_context=context, output_dir=str(output_dir)
    )
    return Path(result)


class DemoCommand(Command):
    """``haive demo``: a live market-analysis pipeline on the embedded defaults."""

    PLUGIN_NAME = "demo"
    help = (
        "run the demo pipeline (no server needed); with a dashboard plugin it streams live "
        "until Ctrl-C"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--events",
            type=int,
            default=None,
            help="events to simulate (default: 20,000; endless while a dashboard is served)",
        )
        parser.add_argument(
            "--rate",
            type=float,
            default=None,
            help="events/s (default: as fast as possible; 2,000 while a dashboard is served)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from .demo import run_demo

        if args.events is not None and args.events < 1:
            raise ConfigError(f"haive demo: --events must be >= 1, got {args.events}")
        if args.rate is not None and not args.rate > 0:  # NaN is refused too
            raise ConfigError(f"haive demo: --rate must be > 0 events/s, got {args.rate}")

        return trio.run(run_demo, args.events, args.rate)


BUILTIN_COMMANDS: tuple[type[Command], ...] = (
    PluginsCommand,
    RunCommand,
    DemoCommand,
    NewPluginCommand,
)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = argparse.ArgumentParser(
        prog="haive", description="haive-dataflow: real-time AI data streams on trio"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, Command] = {}
    # Built-in commands register through the same hook as plugin commands (cli/plugin.py),
    # so the registry has already refused duplicate names.
    for provided in get_registry().provided():
        if provided.kind != "cli_command":
            continue
        cls = provided.cls
        command = cls()
        commands[provided.name] = command
        command.add_arguments(sub.add_parser(provided.name, help=cls.help, description=cls.help))
    return parser, commands


def _missing_command(argv: Sequence[str], commands: dict[str, Command]) -> str | None:
    """The error for a command a plugin distribution provides but that is not installed."""
    name = next((arg for arg in argv if not arg.startswith("-")), None)
    if name is None or name in commands:
        return None
    package = provider_of("cli_command", name)
    if package is None:
        return None
    return f"`haive {name}` is provided by the plugin {package}; {install_hint(package)}"


def restore_ctrl_c() -> None:
    """Make SIGINT raise KeyboardInterrupt again if this process inherited it ignored.

    A shell starting a command in the background without job control (``cmd &`` in a
    script), and some CI runners, start it with SIGINT ignored; Python then leaves it ignored
    and trio never sees Ctrl-C. Every ``haive`` command promises that Ctrl-C stops it cleanly,
    so the CLI takes SIGINT back. Only the main thread may set signal handlers.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``haive`` script."""
    restore_ctrl_c()
    try:
        parser, commands = build_parser()
        argv = sys.argv[1:] if argv is None else argv
        missing = _missing_command(argv, commands)
        if missing is not None:
            parser.print_usage(sys.stderr)
            print(f"haive: error: {missing}", file=sys.stderr)
            return 2
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return commands[args.command].run(args)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130
    except BaseExceptionGroup as group:
        # Ctrl-C lands in whichever task was running; nurseries wrap it in a group.
        if group.subgroup(KeyboardInterrupt) is not None:
            print("\nstopped", file=sys.stderr)
            return 130
        raise
    except UserCodeError as exc:
        print(f"haive: error: {exc}", file=sys.stderr)
        return 1
    except HaiveError as exc:
        print(f"haive: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
