"""Run benchmarks: ``python -m bench [NAME ...] [--json FILE] [--quick] [--list]``.

Each case is a module ``bench/cases/<name>.py`` with ``DESCRIPTION`` and
``run(recorder) -> None``; figures are printed as they are measured, then as one table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time

from . import cases
from .recorder import Recorder


def available() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(cases.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="cases to run (default: all)")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    names = available()
    if args.list:
        for name in names:
            module = importlib.import_module(f"bench.cases.{name}")
            print(f"{name:<20} {getattr(module, 'DESCRIPTION', '')}")
        return 0
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}; cases are: {', '.join(names)}")
    recorder = Recorder(quick=args.quick)
    for name in args.names or names:
        module = importlib.import_module(f"bench.cases.{name}")
        print(f"== {name}: {getattr(module, 'DESCRIPTION', '')}", flush=True)
        started = time.perf_counter()
        recorder.current_case = name
        module.run(recorder)
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    print()
    print(f"{'figure':<58} {'value':>14}  unit")
    for fig in recorder.figures:
        from .recorder import _fmt

        print(f"{fig.name:<58} {_fmt(fig.value):>14}  {fig.unit}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(recorder.to_json(), f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
