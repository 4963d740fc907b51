"""Run one benchmark: ``python scripts/benchmark.py <name> [--quick] [key=value ...]``.

Prints a table and one ``BENCH {json}`` line per figure (see ``runtime/bench.py``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from benchmarks import BENCHMARKS


def parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"benchmark option {pair!r} is not key=value")
        options[key] = value
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="reduced run (under a minute)")
    parser.add_argument("options", nargs="*", help="benchmark-specific key=value options")
    args = parser.parse_intermixed_args(argv)
    try:
        module = importlib.import_module(BENCHMARKS[args.name])
    except ModuleNotFoundError as exc:
        if exc.name == BENCHMARKS[args.name]:
            print(f"benchmark {args.name!r} is not implemented yet", file=sys.stderr)
            return 2
        raise
    module.run(quick=args.quick, options=parse_options(args.options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
