"""Build time of the built-in synthetic corpus (``robustdistiller.data.corpus.build_corpus``).

    python bench/corpus.py [--repeats 3]

Each run builds the default corpus into a fresh temporary folder and prints one table row; the
unit tests check the corpus's content only (a wall-clock bound there flakes on a loaded machine).
Target: under 10 s per build on one idle core.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

# bench/ is on sys.path when this script runs.
from inference import machine_info  # noqa: E402

from robustdistiller.data.corpus import build_corpus
from robustdistiller.data.manifest import Manifest


def build_once() -> tuple[float, int, float]:
    """(wall seconds, utterances, audio minutes) of one build into a fresh folder."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        built = build_corpus(Path(tmp) / "synthetic")
        wall = time.perf_counter() - start
        manifests = [Manifest.read(built.train_manifest), Manifest.read(built.test_manifest)]
        return wall, sum(len(m) for m in manifests), sum(m.total_seconds for m in manifests) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine_info()}\n")
    print("| run | build (s) | utterances | audio (min) |\n|---|---|---|---|")
    walls = []
    for run in range(1, args.repeats + 1):
        wall, count, minutes = build_once()
        walls.append(wall)
        print(f"| {run} | {wall:.1f} | {count} | {minutes:.1f} |")
    print(f"\nmedian build time: {statistics.median(walls):.1f} s (target < 10 s on one idle core)")


if __name__ == "__main__":
    main()
