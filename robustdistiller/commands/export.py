"""``robustdistiller export``: write a checkpoint in another format."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  robustdistiller export states-200000.ckpt --format hf --out distilhubert-hf/
  robustdistiller export states-200000.ckpt --format s3prl --out slim.ckpt   # weights + config only
  robustdistiller export states-200000.ckpt --format onnx --out student.onnx --layers 0 4 8 --quantize int8
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from robustdistiller.export.exporters import EXPORTERS
    from robustdistiller.export.quantize import QUANTIZE_MODES

    parser = subparsers.add_parser(
        "export",
        help="convert a checkpoint to another format",
        description="Convert a student checkpoint (any format `robustdistiller info` recognises) to another format.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", help="checkpoint file or model directory")
    parser.add_argument("--format", required=True, choices=list(EXPORTERS), dest="fmt", help="output format")
    parser.add_argument("--out", required=True, help="output file (s3prl, onnx) or directory (hf)")
    parser.add_argument(
        "--layers", type=int, nargs="+", help="onnx: hidden-state indices to output (default: all)"
    )
    parser.add_argument("--quantize", choices=list(QUANTIZE_MODES), help="onnx: dynamic int8 MatMul/Gemm quantisation")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.export.exporters import export

    written = export(args.path, args.fmt, args.out, layers=args.layers, quantize=args.quantize)
    print(f"wrote {args.fmt} model to {written}")
    return 0
