"""Command line: ``python -m gilfree`` (installed as the ``gilfree`` script).

    gilfree demo [--workers N] [--quick] [--plot PNG]
                                           serial vs gilfree on built-in workloads
    gilfree probe module:function [ARG...] measure how much a call holds the GIL
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


def _probe_command(target: str, raw_args: Sequence[str]) -> int:
    import ast
    import importlib

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        print(f"gilfree probe: expected module:function, got {target!r}", file=sys.stderr)
        return 2
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        print(f"gilfree probe: cannot find {target}: {exc}", file=sys.stderr)
        return 2
    call_args = []
    for a in raw_args:
        try:
            call_args.append(ast.literal_eval(a))
        except (ValueError, SyntaxError):
            call_args.append(a)  # not a literal: the text itself, as a shell user means it
    try:
        result = gilfree.probe(obj, *call_args)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - reported, not a crash of the CLI
        print(f"gilfree probe: {target} raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(repr(result))
    return 0


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
    demo.add_argument("--plot", metavar="PNG", default=None,
                      help="also write an insights timeline of threads and processes at work "
                           "(needs matplotlib: pip install gilfree[plot])")
    probe = commands.add_parser(
        "probe", help="measure how much of a call's time it holds the GIL",
        description="Import module:function, call it with the given arguments (Python "
                    "literals, e.g. 1000 'text' b'bytes' [1, 2]) and print what gilfree.probe "
                    "measured: wall and CPU time, the share of the time the GIL was held, "
                    "and the backend it recommends.")
    probe.add_argument("target", metavar="module:function",
                       help="what to call, e.g. hashlib:sha256 or mypkg.mod:work")
    probe.add_argument("args", nargs="*", metavar="ARG",
                       help="positional arguments, as Python literals")
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
    if args.command == "probe":
        return _probe_command(args.target, args.args)
    if args.command == "demo":
        from gilfree._demo import run_demo

        try:
            return run_demo(workers=args.workers, quick=args.quick, plot=args.plot)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
