"""Corruption throughput: our pipeline as the trainer runs it against the original per-utterance approach.

One bucket of the RobustDistiller recipe: 24 utterances of 15.6 s (250,000 samples), the original's
policy (clean / noise / reverb / noise+reverb at 1/4 each, integer SNR 0-20 dB, 70 % file noise /
30 % white). Sources are generated once into a temporary folder (not timed): MUSAN-like noise
(16 kHz mono, 10-60 s, two of several minutes), UrbanSound8K-like clips (44.1 / 48 kHz stereo,
<= 4 s; they are most of the real pool) and SLR28-like RIR files (16 kHz, 0.5-1.5 s, a few with two
microphones). Both pipelines corrupt rows with the same operations (same generator).

* original (RobustDistiller ``robustness.py``, reference-formats.md B.3), in the training process,
  per utterance: read the whole noise file, mix to mono, resample to 16 kHz with a Kaiser
  windowed-sinc polyphase filter (``resample_poly``, window ("kaiser", 14.77): the method class of
  torchaudio's ``sinc_interp_kaiser``) when needed, tile / random crop, powers over the padded row,
  mix; read a random RIR file (one random channel), ``scipy.signal.convolve(mode="full")[:L]``.
* ours: ``CorruptionPolicy.plan`` (noise segments sliced from the noise bank's cache of decoded and
  resampled files, RIRs from the RIR bank's cache) + ``CorruptionPolicy.apply`` (batched FFT
  convolution, vectorised exact mixing on the unpadded rows).

Two parts:

1. One process, the work itself per batch: original; ours with a cold noise cache (every draw decodes
   its file) and a warm one (steady state), and the warm run split into plan and apply.
2. As training runs: a DataLoader with ``--workers`` workers collates the clean batches for every
   pipeline (the original trainer gets its clean batches the same way); the model step is
   emulated by a sleep (``--step-ms``: the GPU busy, the CPU free for the workers).
   - original: the trainer corrupts each batch per utterance after receiving it.
   - ours, ``apply_on=device``: workers plan, the trainer applies (its CPU here).
   - ours, ``apply_on=workers`` (the CPU default): workers plan and apply, the trainer receives the
     finished batch.
   Measured per pipeline: the trainer's wait per batch with the step (from asking for the batch to
   the noisy batch being ready), the same without a step (the pipeline's own limit: utterances per
   second on these cores), and the CPU seconds per batch of all processes together.

    python bench/augment.py                         # about a minute on 2 cores
    python bench/augment.py --batches 12 --threads 2 --step-ms 300
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy import signal
from torch.utils.data import DataLoader, Dataset

from robustdistiller.augment.noise import NoiseBank, index_folder
from robustdistiller.augment.policy import OPS, CorruptionConfig, CorruptionPlan, CorruptionPolicy, plan_rng
from robustdistiller.augment.rir import RIRBank, index_rir_folder
from robustdistiller.data.dataset import Batch, Utterance, collate
from robustdistiller.models.precision import cpu_model
from robustdistiller.train.loader import PlannedBatch, PlanningCollate

BATCH, LENGTH, RATE = 24, 250_000, 16_000
ORIGINAL_KAISER_BETA = 14.769656459379492  # torchaudio's default for sinc_interp_kaiser


def _noise_like(rng: np.random.Generator, frames: int, channels: int = 1) -> np.ndarray:
    # Low-passed Gaussian noise in 16-bit range: the content does not matter for timing, the format does.
    x = rng.standard_normal((frames, channels)).astype(np.float32)
    return (signal.lfilter([1.0], [1.0, -0.9], x, axis=0) * 0.05).astype(np.float32)


def write_sources(folder: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """The generated noise pool and RIR folder (module docstring)."""
    noise_dir, rir_dir = folder / "noise", folder / "rirs"
    (noise_dir / "musan").mkdir(parents=True)
    (noise_dir / "us8k").mkdir(parents=True)
    rir_dir.mkdir()
    musan_seconds = [*rng.uniform(10, 60, 14), 150.0, 240.0]
    for i, seconds in enumerate(musan_seconds):
        sf.write(noise_dir / "musan" / f"noise-{i:04d}.wav", _noise_like(rng, int(seconds * RATE)), RATE, "PCM_16")
    for i in range(48):
        rate = 48_000 if i % 4 == 0 else 44_100
        clip = _noise_like(rng, int(rng.uniform(1.0, 4.0) * rate), channels=2)
        sf.write(noise_dir / "us8k" / f"{i}-0-0-0.wav", clip, rate, "PCM_16")
    for i in range(32):
        m = int(rng.uniform(0.5, 1.5) * RATE)
        mics = 2 if i % 8 == 0 else 1
        decay = np.exp(-6.9 * np.arange(m) / m)[:, None]  # -60 dB over the RIR's length
        h = rng.standard_normal((m, mics)) * decay
        h[0] = 1.0
        sf.write(rir_dir / f"rir-{i:03d}.wav", h.astype(np.float32), RATE, "FLOAT")
    return noise_dir, rir_dir


# ------------------------------------------------------------------ the original approach
def _original_read(path: Path, rng: np.random.Generator, pick_channel: bool) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data[:, int(rng.integers(data.shape[1]))] if pick_channel else data.mean(axis=1)
    if rate != RATE:
        g = math.gcd(rate, RATE)
        mono = signal.resample_poly(mono, RATE // g, rate // g, window=("kaiser", ORIGINAL_KAISER_BETA))
    return mono.astype(np.float32, copy=False)


def original_row(
    x: np.ndarray, op: str, noise_files: list[Path], rir_files: list[Path], rng: np.random.Generator
) -> np.ndarray:
    """One utterance as robustness.py corrupts it (padded row = whole row here)."""
    n = x.shape[0]
    if op in ("noise", "noise+reverb"):
        snr = int(rng.integers(0, 21))
        if rng.random() < 0.7:
            noise = _original_read(noise_files[int(rng.integers(len(noise_files)))], rng, pick_channel=False)
            if noise.shape[0] <= n:
                noise = np.tile(noise, -(-n // noise.shape[0]))[:n]
            else:
                start = int(rng.integers(0, noise.shape[0] - n + 1))
                noise = noise[start : start + n]
        else:
            noise = rng.standard_normal(n, dtype=np.float32)
        k = (x.dot(x) / n) / (noise.dot(noise) / n + 1e-8) * 10 ** (-snr / 10)
        x = x + np.float32(np.sqrt(k)) * noise
    if op in ("reverb", "noise+reverb"):
        rir = _original_read(rir_files[int(rng.integers(len(rir_files)))], rng, pick_channel=True)
        x = signal.convolve(x, rir, mode="full")[:n]
    return x


def original_batch(
    wavs: np.ndarray, ops: list[str], noise_files: list[Path], rir_files: list[Path], rng: np.random.Generator
) -> np.ndarray:
    return np.stack([original_row(x, op, noise_files, rir_files, rng) for x, op in zip(wavs, ops)])


# ------------------------------------------------------------------ timing helpers
def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


class _Utterances(Dataset):
    """``count`` clean utterances of LENGTH samples (shared rows: the dataset is not what is timed)."""

    def __init__(self, wavs: torch.Tensor, count: int) -> None:
        self.wavs, self.count = wavs, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Utterance:
        return Utterance(index, self.wavs[index % self.wavs.shape[0]])


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) so far of process ``pid``, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_loader(
    collate_fn: Callable[[list[Utterance]], object],
    corrupt: Callable[[object], object],
    wavs: torch.Tensor,
    batches: int,
    workers: int,
    step_s: float,
) -> tuple[float, float, float]:
    """(median trainer wait per batch, wall seconds per batch of the whole loop, CPU seconds per batch
    of the trainer and its workers) over ``batches`` batches after a warm-up batch. ``corrupt`` is what the trainer does with a received
    batch before its step; what it returns is released after the step. CPU is counted in the steady state (worker start-up excluded), from the
    workers' /proc entries, which they report through a queue when they start."""
    pids: mp.SimpleQueue = mp.get_context("fork").SimpleQueue()
    loader = DataLoader(
        _Utterances(wavs, BATCH * (batches + 1)),
        batch_size=BATCH,
        collate_fn=collate_fn,
        num_workers=workers,
        multiprocessing_context="fork",
        worker_init_fn=lambda _: pids.put(os.getpid()),
    )
    it = iter(loader)
    noisy = corrupt(next(it))  # warm-up: workers started, first batches in flight
    workers_pids = [pids.get() for _ in range(workers)]
    waits = []
    cpu0 = time.process_time() + sum(_proc_cpu(p) for p in workers_pids)
    start = time.perf_counter()
    for _ in range(batches):
        t0 = time.perf_counter()
        noisy = corrupt(next(it))
        waits.append(time.perf_counter() - t0)
        time.sleep(step_s)  # the model step: the GPU busy, this process idle
        del noisy  # as in training, the batch is released after its step, not during the wait
    wall = time.perf_counter() - start
    cpu = time.process_time() + sum(_proc_cpu(p) for p in workers_pids) - cpu0
    del it
    return statistics.median(waits), wall / batches, cpu / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per measurement (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--step-ms", type=float, default=300.0, help="emulated model step for the loader runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    clean = (rng.standard_normal((BATCH, LENGTH)) * 0.1).astype(np.float32)
    wavs, lengths = torch.from_numpy(clean), torch.full((BATCH,), LENGTH)
    rows: list[tuple[str, float, float]] = []  # (pipeline, wall s/batch, CPU s/batch)

    with tempfile.TemporaryDirectory() as tmp:
        noise_dir, rir_dir = write_sources(Path(tmp), rng)
        noise_files, rir_files = index_folder(noise_dir, workers=2), index_rir_folder(rir_dir, workers=2)
        cold = CorruptionPolicy(CorruptionConfig(), NoiseBank(noise_files, cache_mb=0), RIRBank(rir_files))
        warm = CorruptionPolicy(CorruptionConfig(), NoiseBank(noise_files, cache_mb=512), RIRBank(rir_files))
        cached = warm.noise_bank.preload(), warm.rir_bank.preload()  # type: ignore[union-attr]
        cold.rir_bank.preload()  # type: ignore[union-attr]  # RIRs are small: always cached in practice
        paths = [f.path for f in noise_files], [f.path for f in rir_files]

        # ---- part 1: the work itself, one process
        def one_round(i: int) -> dict[str, tuple[float, float]]:
            """(wall s, CPU s) of each pipeline on batch ``i``."""
            plan: CorruptionPlan = warm.plan(lengths, LENGTH, plan_rng(0, 0, i))
            ops = [OPS[o] for o in plan.ops.tolist()]
            return {
                "ref": _timed(lambda: original_batch(clean, ops, *paths, np.random.default_rng(i))),
                "cold": _timed(lambda: cold.apply(wavs, lengths, cold.plan(lengths, LENGTH, plan_rng(0, 0, i)), 0)),
                "warm": _timed(lambda: warm.apply(wavs, lengths, warm.plan(lengths, LENGTH, plan_rng(0, 0, i)), 0)),
                "plan": _timed(lambda: warm.plan(lengths, LENGTH, plan_rng(0, 0, i))),
                "apply": _timed(lambda: warm.apply(wavs, lengths, plan, 0)),
            }

        timings: dict[str, list[tuple[float, float]]] = {k: [] for k in ("ref", "cold", "warm", "apply", "plan")}
        for i in range(args.batches + 1):  # interleaved, so load from other processes hits all alike
            samples = one_round(i)
            if i:  # the first round warms FFT plans and page caches
                for key, value in samples.items():
                    timings[key].append(value)
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in timings.items()}
        rows += [
            ("1 process, original: per utterance", *med["ref"]),
            ("1 process, ours, cold noise cache: plan + apply", *med["cold"]),
            ("1 process, ours, warm cache: plan + apply", *med["warm"]),
            ("  of which plan (noise slices, RIR picks)", *med["plan"]),
            ("  of which apply (batched FFT conv + exact mix)", *med["apply"]),
        ]

        # ---- part 2: as training runs, clean batches from DataLoader workers
        planner = PlanningCollate(warm, seed=0)

        def original_trainer(batch: object) -> object:
            assert isinstance(batch, Batch)
            # The same operations as our plans for this batch (the generator's first draws).
            ops = [OPS[o] for o in warm.draw_ops(len(batch), planner.plan_rng(batch))]
            noisy = original_batch(batch.wavs.numpy(), ops, *paths, np.random.default_rng(int(batch.indices[0])))
            return batch, noisy  # both in use until the step is done

        def our_trainer(item: object) -> object:
            assert isinstance(item, PlannedBatch) and item.plan is not None
            return item, warm.apply(item.batch.wavs, item.batch.lengths, item.plan, step=0)

        pipelines = {
            "original (trainer corrupts)": (collate, original_trainer),
            "ours, apply_on=device": (planner, our_trainer),
            "ours, apply_on=workers": (PlanningCollate(warm, seed=0, finish=True), our_trainer),
        }
        loader: dict[str, tuple[float, float, float]] = {}
        for label, (collate_fn, trainer) in pipelines.items():
            wait_step, _, cpu = run_loader(collate_fn, trainer, wavs, args.batches, args.workers, args.step_ms / 1000)
            _, period, _ = run_loader(collate_fn, trainer, wavs, args.batches, args.workers, 0.0)
            loader[label] = (wait_step, period, cpu)

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}), "
        f"torch {torch.__version__}, threads {args.threads}, loader workers {args.workers}"
    )
    print(
        f"batch: {BATCH} x {LENGTH / RATE:.1f} s, ops 1/4 each, 70 % file noise; pool {len(noise_files)} noise "
        f"files, {len(rir_files)} RIR files (warm cache holds {cached[0]} noise + {cached[1]} RIR files); "
        f"median of {args.batches} batches"
    )
    print("\n1. the work itself, one process (utt/s from wall time)")
    ref_wall, ref_cpu = med["ref"]
    print(f"{'pipeline':<50} {'wall s':>7} {'CPU s':>7} {'utt/s':>7} {'vs ref':>7} {'CPU vs ref':>10}")
    for name, wall, cpu in rows:
        print(f"{name:<50} {wall:7.3f} {cpu:7.3f} {BATCH / wall:7.1f} {ref_wall / wall:6.1f}x {ref_cpu / cpu:9.1f}x")

    print(
        f"\n2. as training runs: {args.workers} DataLoader workers collate clean batches; the step is a "
        f"{args.step_ms:.0f} ms sleep"
    )
    print(
        f"{'pipeline':<30} {'trainer wait':>12} {'utt/s':>8} {'vs ref':>7} {'no-step period':>14} {'utt/s':>7} "
        f"{'vs ref':>7} {'CPU s, all':>10} {'vs ref':>7}"
    )
    base = loader["original (trainer corrupts)"]
    for label, (wait, period, cpu) in loader.items():
        print(
            f"{label:<30} {wait * 1e3:9.1f} ms {BATCH / wait:8.0f} {base[0] / wait:6.1f}x {period * 1e3:11.1f} ms "
            f"{BATCH / period:7.0f} {base[1] / period:6.1f}x {cpu:10.3f} {base[2] / cpu:6.1f}x"
        )
    print("notes:")
    print("  trainer wait: median time from asking the DataLoader for a batch to the noisy batch being ready,")
    print("    while the step runs; utt/s = utterances per second of waiting, as the trainer sees it.")
    print("  no-step period: seconds per batch of the whole loop with no step at all: the pipeline's own")
    print("    limit on these cores (utt/s = its throughput).")
    print("  CPU s, all: CPU seconds per batch of the trainer and its workers together (clean batches included).")
    best = loader["ours, apply_on=workers"]
    for what, i in (("trainer wait", 0), ("throughput with no step", 1), ("total CPU per batch", 2)):
        ratio = base[i] / best[i]
        print(f"  10x target, {what}: {'met' if ratio >= 10 else 'not met'} ({ratio:.1f}x, apply_on=workers)")


if __name__ == "__main__":
    main()
