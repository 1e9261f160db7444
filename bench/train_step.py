"""Where the time of one RobustDistiller training step goes, at full model size.

Teacher: a random HuBERT-Base-sized model (12 x 768); student: DistilHuBERT 2 x 768 with 3 heads;
BiLSTM enhancement head; corruption with built-in noises and simulated RIRs, planned in one
DataLoader worker (on CPU also applied there: ``apply_on`` auto). Short utterances (default 4 x 4 s)
keep a CPU run to a couple of minutes.
Prints the median time per phase over the timed steps and audio seconds processed per second.
Target: data wait + corruption under 5 % of the step.

    python bench/train_step.py [--steps 4] [--batch 4] [--seconds 4] [--device cpu] [--apply-on auto]
                               [--teacher-precision fp32|bf16|auto]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from robustdistiller.config import from_dict
from robustdistiller.data import Manifest, ManifestEntry
from robustdistiller.train.distillation import DistillTrainer
from robustdistiller.train.monitor import PHASES
from robustdistiller.train.recipe import DistillRecipe

SR = 16000


def write_audio(folder: Path, count: int, seconds: float) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    for i in range(count):
        n = int(seconds * SR)
        t = np.arange(n) / SR
        wav = 0.1 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.02 * rng.standard_normal(n)
        sf.write(folder / f"u{i}.wav", wav.astype(np.float32), SR)
        entries.append(ManifestEntry(f"u{i}.wav", n))
    return Manifest(folder, entries).write(folder / "train.tsv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--apply-on",
        default="auto",
        choices=["auto", "workers", "device"],
        help="where corruption arithmetic runs (corruption.apply_on)",
    )
    parser.add_argument(
        "--teacher-precision",
        default="fp32",
        choices=["fp32", "bf16", "auto"],
        help="the teacher's forward on CPU (train.teacher_precision); bf16 reaches AMX / AVX512-BF16 units",
    )
    args = parser.parse_args()

    from transformers import HubertConfig, HubertModel

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-step-"))
    torch.manual_seed(0)
    HubertModel(HubertConfig()).save_pretrained(tmp / "teacher")  # HuBERT Base shape, random weights
    manifest = write_audio(tmp, 4 * args.batch, args.seconds)
    recipe = from_dict(
        DistillRecipe,
        {
            "data": {"manifests": [str(manifest)], "batch_size": args.batch, "num_workers": 1},
            "corruption": {
                "apply_on": args.apply_on,
                "noise": {"builtin": True, "builtin_dir": str(tmp / "noises")},
                "rir": {"simulate_rirs": {"count": 8}},
            },
            "teacher": {"source": str(tmp / "teacher")},
            "enhancement": {"use_enhancement": True},
            "optim": {"total_steps": 1000},
            "train": {"out_dir": str(tmp / "run"), "device": args.device, "teacher_precision": args.teacher_precision},
        },
    )
    trainer = DistillTrainer(recipe, sync_timing=True)
    data = iter(trainer.stream)
    per_step: list[dict[str, float]] = []
    walls = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        with trainer.timer.phase("data"):
            batch = trainer.next_batch(data)
        trainer.train_step([batch])
        trainer.step += 1
        wall = time.perf_counter() - start
        phases = trainer.timer.reset()
        if step > 0:  # the first step pays for worker start-up and lazy initialisation
            per_step.append(phases)
            walls.append(wall)

    step_s = statistics.median(walls)
    audio_s = args.batch * args.seconds
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}, device {args.device}, torch {torch.__version__}"
    )
    print(
        f"batch {args.batch} x {args.seconds:g} s, {args.steps} timed steps (medians), "
        f"corruption applied on: {'workers' if trainer.stream.collate.finish else args.device}, "
        f"teacher precision: {args.teacher_precision}\n"
    )
    print(f"{'phase':<14}{'seconds':>10}{'share':>9}")
    for name in PHASES:
        seconds = statistics.median(p.get(name, 0.0) for p in per_step)
        print(f"{name:<14}{seconds:>10.3f}{seconds / step_s:>8.1%}")
    other = statistics.median(w - sum(p.values()) for w, p in zip(walls, per_step))
    print(f"{'other':<14}{other:>10.3f}{other / step_s:>8.1%}")
    print(f"{'step (wall)':<14}{step_s:>10.3f}")
    overhead = statistics.median(p.get("data", 0.0) + p.get("corruption", 0.0) for p in per_step)
    print(f"\ndata wait + corruption: {overhead / step_s:.1%} of the step (target < 5 %)")
    print(
        f"audio processed: {audio_s / step_s:.2f} s of audio per second ({audio_s / step_s:.2f} audio-hours per hour)"
    )


if __name__ == "__main__":
    main()
