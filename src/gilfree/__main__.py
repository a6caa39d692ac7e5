"""Command line: ``python -m gilfree`` (installed as the ``gilfree`` script).

    gilfree demo [--workers N] [--quick]   serial vs gilfree on built-in workloads
    gilfree version                        print the installed version
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import gilfree


def _version() -> str:
    version = getattr(gilfree, "__version__", None)
    if version is None:  # fall back on the installed distribution's metadata
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("gilfree")
        except Exception:
            version = "unknown"
    return str(version)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m gilfree``."""
    parser = argparse.ArgumentParser(
        prog="gilfree",
        description="Run Python functions on every CPU core. "
                    "Try `gilfree demo` to see what the thread backend speeds up.")
    parser.add_argument("--version", action="version", version=f"gilfree {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="time serial code against gilfree on built-in workloads",
        description="Time pure-Python, GIL-releasing (sha256, zlib, numpy) and tiny tasks, "
                    "serially and on each gilfree backend, and print a table of wall times, "
                    "speed-ups and items per second.")
    demo.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                      help="worker count (default: gilfree.usable_cpus())")
    demo.add_argument("--quick", action="store_true",
                      help="smaller inputs, best of 2 runs (a few seconds)")
    commands.add_parser("version", help="print the installed gilfree version",
                        description="Print the installed gilfree version.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse exits 2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command == "version":
        print(f"gilfree {_version()}")
        return 0
    if args.command == "demo":
        from gilfree._demo import run_demo

        try:
            return run_demo(workers=args.workers, quick=args.quick)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
