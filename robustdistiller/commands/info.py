"""``robustdistiller info``: what a checkpoint or model directory holds."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """examples:
  robustdistiller info states-200000.ckpt
  robustdistiller info rd_wavlm.ckpt --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show the format, architecture, parameter counts and step of a checkpoint",
        description="Describe a checkpoint file or model directory in any format `robustdistiller.load` reads.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", help="checkpoint file or model directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.export.info import describe, format_text

    info = describe(args.path)
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    if info["non_finite_weights"]:
        # Described, but not a usable model: scripts checking `info`'s status must see that.
        print(
            f"error: {args.path}: {len(info['non_finite_weights'])} weight tensor(s) hold NaN/inf values",
            file=sys.stderr,
        )
        return 1
    return 0
