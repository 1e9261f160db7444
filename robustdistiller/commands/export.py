"""``robustdistiller export``: write a checkpoint in another format."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  robustdistiller export states-200000.ckpt --format hf --out distilhubert-hf/
  robustdistiller export states-200000.ckpt --format s3prl --out slim.ckpt   # weights + config only
  robustdistiller export states-200000.ckpt --format onnx --out student.onnx --layers 0 4 8 --int8
  robustdistiller export states-200000.ckpt --format onnx --out student-int8.onnx --int8 \\
      --int8-scheme static-conv --calibration dev-clean/   # int8 CNN too, ranges from your speech
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from robustdistiller.export.exporters import EXPORTERS
    from robustdistiller.export.quantize import INT8_SCHEMES, QUANTIZE_MODES

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
    parser.add_argument("--layers", type=int, nargs="+", help="onnx: hidden-state indices to output (default: all)")
    parser.add_argument("--quantize", choices=list(QUANTIZE_MODES), help="onnx: int8 quantisation (same as --int8)")
    parser.add_argument("--int8", action="store_const", const="int8", dest="quantize", help="onnx: int8 quantisation")
    parser.add_argument(
        "--int8-scheme",
        choices=list(INT8_SCHEMES),
        help="auto (default): static-conv where the CPU has VNNI / AMX-INT8 and it stays accurate, else dynamic; "
        "dynamic: int8 matrix products only; static-conv: also the CNN convolutions, calibrated on speech",
    )
    parser.add_argument(
        "--calibration",
        help="onnx int8: audio folder or manifest for static ranges (default: built-in synthetic speech)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.export.exporters import export

    written = export(
        args.path,
        args.fmt,
        args.out,
        layers=args.layers,
        quantize=args.quantize,
        int8_scheme=args.int8_scheme,
        calibration=args.calibration,
    )
    print(f"wrote {args.fmt} model to {written}")
    return 0
