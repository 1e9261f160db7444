"""``robustdistiller export``: write a checkpoint in another format."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  robustdistiller export states-200000.ckpt --format hf --out distilhubert-hf/
  robustdistiller export states-200000.ckpt --format s3prl --out slim.ckpt   # weights + config only
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from robustdistiller.export.exporters import EXPORTERS

    parser = subparsers.add_parser(
        "export",
        help="convert a checkpoint to another format",
        description="Convert a student checkpoint (any format `robustdistiller info` recognises) to another format.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", help="checkpoint file or model directory")
    parser.add_argument("--format", required=True, choices=list(EXPORTERS), dest="fmt", help="output format")
    parser.add_argument("--out", required=True, help="output file (s3prl) or directory (hf)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.export.exporters import export

    written = export(args.path, args.fmt, args.out)
    print(f"wrote {args.fmt} model to {written}")
    return 0
