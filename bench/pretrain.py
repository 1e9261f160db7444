"""Pre-training throughput and memory of the mini recipes, on real speech.

For each recipe and thread count, builds the recipe's trainer on ``../shared/data/librispeech_subset``
(training speakers only), which fits the MFCC k-means first (timed separately), then runs ``--steps``
optimizer steps and reports audio seconds per second of training, seconds per step and the peak
resident memory of the training process and of its DataLoader worker. Each measurement runs in a
fresh process, so its peak memory is its own. Run it on an idle machine for numbers that mean
anything; the load average at the start and the end is printed beside them.

    python bench/pretrain.py [--recipe hubert_mini wavlm_mini] [--steps 20] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from robustdistiller.data.manifest import manifest_from_folder
from robustdistiller.train.monitor import read_log
from robustdistiller.train.pretrain import PretrainTrainer
from robustdistiller.train.pretrain_recipe import load_pretrain_recipe

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "librispeech_subset"


def measure(recipe_name: str, data: Path, steps: int, threads: int, work: Path) -> dict[str, float]:
    """One run: set-up (k-means fit included), then ``steps + 1`` steps; the first step is left out
    of the median throughput (DataLoader start, allocator growth), not of the mean s / step."""
    torch.set_num_threads(threads)
    manifest, _ = manifest_from_folder(data, (".flac", ".wav"))
    manifest.write(work / "train.tsv")
    out_dir = work / f"run{threads}"
    recipe = load_pretrain_recipe(
        recipe_name,
        [
            f"data.manifests=[{work / 'train.tsv'}]",
            f"train.out_dir={out_dir}",
            f"train.stop_at_step={steps + 1}",
            "train.save_every=100000",
            "train.log_every=1",
        ],
    )
    start = time.perf_counter()
    trainer = PretrainTrainer(recipe)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    # one row per step; audio hours per wall-clock hour = audio seconds per second
    speeds = [row["throughput/audio_hours_per_hour"] for row in read_log(out_dir)[1:]]
    return {
        "recipe": recipe_name,
        "threads": threads,
        "setup_s": setup,
        "audio_s_per_s": statistics.median(speeds),
        "s_per_step": wall / (steps + 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", nargs="+", default=["hubert_mini"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"audio folder not found: {args.data} (give --data)")
    load_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipe:
            for threads in args.threads:
                # a spawned process per measurement: getrusage's peaks would otherwise carry over
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    work = Path(tmp) / recipe
                    work.mkdir(exist_ok=True)
                    rows.append(pool.submit(measure, recipe, args.data, args.steps, threads, work).result())
    print(
        f"{args.steps} timed steps, {platform.processor() or platform.machine()}, "
        f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    )
    print(
        "| recipe | threads | set-up incl. k-means (s) | s / step (mean) | audio s / s (median) "
        "| peak RSS main (MB) | peak RSS worker (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['threads']} | {r['setup_s']:.0f} | {r['s_per_step']:.2f} | "
            f"{r['audio_s_per_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['worker_peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
