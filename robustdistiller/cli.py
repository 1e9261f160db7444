"""Command-line entry point: a thin layer over the Python API.

Each verb lives in ``robustdistiller/commands/<verb>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed namespace.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order shown in --help.
COMMANDS: tuple[str, ...] = (
    "prepare", "info", "export", "pretrain", "distill", "prune", "extract", "evaluate", "demo",
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
    args = parser.parse_args(argv)
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
    except (FileNotFoundError, ValueError) as exc:
        # User errors (bad paths, bad configs, bad files) get one clear line, not a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
