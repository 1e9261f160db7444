"""``robustdistiller extract``: hidden states of every recording in a folder or manifest, to disk."""

from __future__ import annotations

import argparse
import sys

from robustdistiller.errors import UsageError

EPILOG = """examples:
  robustdistiller extract --model states-200000.ckpt --input wavs/ --out feats/ --layers 0 2
  robustdistiller extract --model student.onnx --backend onnx --input train.tsv --out feats/ --format npy
  robustdistiller extract --model student.onnx --backend onnx --input long_recordings/ --out feats/ \\
      chunk_seconds=20 overlap_seconds=4   # recordings over full_context_seconds are chunked

Each input becomes out/<relative path>.npy ([layers, frames, dim] float32) or .pt (list of tensors).
Existing outputs are skipped, so an interrupted run resumes; bad files are listed in out/bad_files.tsv
(exit status 1 when no input could be extracted). Outputs always stay inside --out (a row's ".." parts
become "_up", absolute paths go under "_abs/"); inputs whose names would collide (x.wav, x.flac) keep
their extension (x.wav.npy, x.flac.npy). One extract at a time per --out folder (a lock file).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from robustdistiller.inference.backends import BACKENDS
    from robustdistiller.inference.writer import FORMATS
    from robustdistiller.models.precision import PRECISIONS

    parser = subparsers.add_parser(
        "extract",
        help="extract hidden states of a folder or manifest of recordings",
        description="Run a model over many recordings (batched by length, resumable) and save the features.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="checkpoint / model directory (torch) or .onnx file (onnx)")
    parser.add_argument("--input", required=True, help="audio folder (searched recursively) or manifest .tsv")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--layers", type=int, nargs="+", help="hidden-state indices (default: all)")
    parser.add_argument("--format", choices=list(FORMATS), default="npy", dest="fmt", help="feature file format")
    parser.add_argument("--backend", choices=list(BACKENDS), default="torch", help="runtime (default: torch)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the runtime's choice)")
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="auto",
        help="torch backend: auto (default) = bf16 where this CPU runs it faster and every layer keeps "
        "cosine >= 0.99 against fp32, else fp32; the choice is logged",
    )
    parser.add_argument("--batch-seconds", type=float, default=120.0, help="padded audio per batch (default 120)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="chunking: chunk_seconds, overlap_seconds, full_context_seconds",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.config import apply_overrides, from_dict
    from robustdistiller.inference import ChunkConfig, extract_files, open_backend

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    chunk = from_dict(ChunkConfig, apply_overrides({}, args.overrides), "chunking")
    backend = open_backend(args.model, args.backend, args.layers, args.threads, args.precision)
    settings = {"model": str(args.model), "backend": args.backend}
    precision = getattr(backend, "precision", "fp32")  # only the torch backend has one
    if precision != "fp32":
        # recorded only when not fp32, so fp32 folders written before precisions existed still resume
        settings["precision"] = precision
    summary = extract_files(
        backend,
        args.input,
        args.out,
        fmt=args.fmt,
        batch_seconds=args.batch_seconds,
        chunk=chunk,
        settings=settings,
    )
    print(f"extracted {summary.done} file(s), {summary.skipped_existing} already done, {len(summary.bad)} bad")
    if summary.bad and not summary.done and not summary.skipped_existing:
        print(f"error: no input could be extracted; reasons in {args.out}/bad_files.tsv", file=sys.stderr)
        return 1
    return 0
