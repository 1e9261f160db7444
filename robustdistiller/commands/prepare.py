"""``robustdistiller prepare``: build a training manifest from audio on disk."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustdistiller.data.corpus import build_corpus
from robustdistiller.data.manifest import (
    DEFAULT_EXTENSIONS,
    manifest_from_csv,
    manifest_from_folder,
    manifest_from_librispeech,
    validate_manifest,
)

EPILOG = """examples:
  robustdistiller prepare librispeech /data/LibriSpeech --splits train-clean-100 dev-clean --out train.tsv
  robustdistiller prepare folder /data/my_wavs --out mine.tsv --workers 16
  robustdistiller prepare csv len_for_bucket/train-clean-100.csv --root /data/LibriSpeech --out train.tsv
  robustdistiller prepare corpus data/synthetic        # the built-in offline corpus

Lengths come from file headers; unreadable, empty and too-short files are skipped and listed
in the summary (and in --report if given). A source with no usable file is an error."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="build a manifest (TSV of files and lengths) from LibriSpeech, a folder or a CSV",
        description="Build a manifest: '# root: DIR' line, then path<TAB>num_samples[<TAB>labels].",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", type=Path, required=True, help="manifest to write (.tsv)")
        p.add_argument("--workers", type=int, default=8, help="threads reading headers (default 8)")
        p.add_argument("--report", type=Path, help="also write the skipped files to this TSV")
        p.set_defaults(func=run)

    libri = kinds.add_parser("librispeech", help="LibriSpeech root with split folders")
    libri.add_argument("root", type=Path)
    libri.add_argument("--splits", nargs="+", required=True, help="e.g. train-clean-100 dev-clean")
    common(libri)

    folder = kinds.add_parser("folder", help="every audio file under a folder (recursive)")
    folder.add_argument("root", type=Path)
    folder.add_argument(
        "--extensions",
        nargs="+",
        default=list(DEFAULT_EXTENSIONS),
        help=f"file extensions (default: {' '.join(DEFAULT_EXTENSIONS)})",
    )
    common(folder)

    table = kinds.add_parser("csv", help="a CSV of files, e.g. s3prl's len_for_bucket/<split>.csv")
    table.add_argument("csv_path", type=Path)
    table.add_argument("--root", type=Path, help="folder the CSV's paths are relative to (default: its folder)")
    table.add_argument("--path-column", help="column holding the paths (default: file_path or path)")
    table.add_argument("--label-columns", nargs="*", default=[], help="columns copied as labels")
    common(table)

    corpus = kinds.add_parser("corpus", help="build the built-in synthetic corpus (train.tsv, test.tsv)")
    corpus.add_argument("out_dir", type=Path)
    corpus.add_argument("--seed", type=int, default=0)
    corpus.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.source == "corpus":
        built = build_corpus(args.out_dir, seed=args.seed)
        print(
            f"corpus in {built.root}: {built.train_manifest.name}, {built.test_manifest.name} "
            f"({len(built.words)} words x {len(built.speakers)} speakers)"
        )
        return 0
    if args.source == "librispeech":
        manifest, report = manifest_from_librispeech(args.root, args.splits, workers=args.workers)
    elif args.source == "folder":
        manifest, report = manifest_from_folder(args.root, args.extensions, workers=args.workers)
    else:
        manifest, report = manifest_from_csv(
            args.csv_path, args.root, args.path_column, args.label_columns, workers=args.workers
        )
    if args.report is not None:
        report.write(args.report)
    validate_manifest(manifest, report)
    manifest.write(args.out)
    print(f"wrote {args.out}: {len(manifest)} files, {manifest.total_seconds / 3600:.2f} h")
    print(report.summary())
    return 0
