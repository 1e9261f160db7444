"""Command-line entry point: a thin layer over the Python API.

Each verb lives in ``robustdistiller/commands/<verb>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed namespace.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from pathlib import Path

from robustdistiller.errors import RobustDistillerError

# Order is the order shown in --help.
COMMANDS: tuple[str, ...] = (
    "prepare",
    "info",
    "export",
    "pretrain",
    "distill",
    "prune",
    "extract",
    "evaluate",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustdistiller",
        description="Distil speech SSL models into small students robust to noise and reverberation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"robustdistiller.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except RobustDistillerError as exc:
        # User errors (bad configs, bad files) get one clear line; any other exception is a bug and
        # keeps its traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # The environment failed (missing, unwritable or full output location): say what and where.
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that ``key=value`` overrides may sit anywhere on the line
    (``distill --config x --resume optim.lr=1e-4`` as well as before the options)."""
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = list(args.overrides or []) + overrides
    return args


# What to do about the usual OS failures, by errno.
_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space or choose another output folder",
    errno.EFBIG: "the file is too large for this file system or for the process's file-size limit",
    errno.EDQUOT: "the disk quota is used up: free space or choose another output folder",
    errno.EACCES: "no permission: choose a writable location",
    errno.EPERM: "no permission: choose a writable location",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another path",
    errno.EISDIR: "this path is a folder: give a file path",
    errno.EEXIST: "something is already at this path: remove it or choose another path",
    errno.ENOENT: "no such file or folder",
}


def os_error_line(exc: OSError) -> str:
    """One line for an OS failure: the path, what the system said and what to do about it."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc)
    hint = _OS_HINTS.get(exc.errno) if exc.errno is not None else None
    if exc.errno == errno.EEXIST and exc.filename is not None and Path(exc.filename).is_file():
        hint = "this is a file, not a folder (a folder is needed here): choose another path"  # mkdir over a file
    parts = [p for p in (where, what, hint if hint and hint != what.lower() else None) if p]
    return ": ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
