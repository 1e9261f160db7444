"""Corruption throughput: our pipeline as the trainer runs it against the reference's per-utterance approach.

One bucket of the RobustDistiller recipe: 24 utterances of 15.6 s (250,000 samples), the reference's
policy (clean / noise / reverb / noise+reverb at 1/4 each, integer SNR 0-20 dB, 70 % file noise /
30 % white). Sources are generated once into a temporary folder (not timed): MUSAN-like noise
(16 kHz mono, 10-60 s, two of several minutes), UrbanSound8K-like clips (44.1 / 48 kHz stereo,
<= 4 s; they are most of the real pool) and SLR28-like RIR files (16 kHz, 0.5-1.5 s, a few with two
microphones). Both pipelines corrupt the same rows with the same operations.

* reference (RobustDistiller ``robustness.py``, reference-formats.md B.3), sequentially in one
  process, per utterance: read the whole noise file, mix to mono, resample to 16 kHz with a Kaiser
  windowed-sinc polyphase filter (``resample_poly``, window ("kaiser", 14.77): the method class of
  torchaudio's ``sinc_interp_kaiser``) when needed, tile / random crop, powers over the padded row,
  mix; read a random RIR file (one random channel), ``scipy.signal.convolve(mode="full")[:L]``.
* ours: ``CorruptionPolicy.plan`` (noise segments sliced from the noise bank's cache of decoded and
  resampled files, RIRs from the RIR bank's cache) + ``CorruptionPolicy.apply`` (batched FFT
  convolution, vectorised exact mixing on the unpadded rows).
  - one process: total CPU work per batch, cold noise cache (``cache_mb: 0``, or a pool larger than
    the cache: every draw decodes its file) and warm cache (steady state once files were drawn).
  - DataLoader, 2 workers, exactly as ``train/loader.py`` builds batches (``PlanningCollate``): the
    trainer's wait per batch (from asking for the batch to the noisy batch being ready) with the
    model step emulated by a sleep (``--step-ms``: the GPU busy, the CPU free for the workers) and
    with no step at all (a consumer as fast as possible: the pipeline's own throughput limit), and the
    total CPU time per batch of all processes together. Variant "conv in workers": ``plan(wavs=)``
    also convolves in the workers, leaving ``apply`` element-wise.

    python bench/augment.py                         # ~1-2 minutes on 2 cores
    python bench/augment.py --batches 6 --threads 2 --step-ms 300
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy import signal
from torch.utils.data import DataLoader, Dataset

from robustdistiller.augment.noise import NoiseBank, index_folder
from robustdistiller.augment.policy import OPS, CorruptionConfig, CorruptionPlan, CorruptionPolicy, plan_rng
from robustdistiller.augment.rir import RIRBank, index_rir_folder
from robustdistiller.data.dataset import Utterance, collate
from robustdistiller.train.loader import PlannedBatch, PlanningCollate

BATCH, LENGTH, RATE = 24, 250_000, 16_000
REFERENCE_KAISER_BETA = 14.769656459379492  # torchaudio's default for sinc_interp_kaiser


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


# ------------------------------------------------------------------ the reference approach
def _reference_read(path: Path, rng: np.random.Generator, pick_channel: bool) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data[:, int(rng.integers(data.shape[1]))] if pick_channel else data.mean(axis=1)
    if rate != RATE:
        g = math.gcd(rate, RATE)
        mono = signal.resample_poly(mono, RATE // g, rate // g, window=("kaiser", REFERENCE_KAISER_BETA))
    return mono.astype(np.float32, copy=False)


def reference_row(x: np.ndarray, op: str, noise_files: list[Path], rir_files: list[Path],
                  rng: np.random.Generator) -> np.ndarray:
    """One utterance as robustness.py corrupts it (padded row = whole row here)."""
    n = x.shape[0]
    if op in ("noise", "noise+reverb"):
        snr = int(rng.integers(0, 21))
        if rng.random() < 0.7:
            noise = _reference_read(noise_files[int(rng.integers(len(noise_files)))], rng, pick_channel=False)
            if noise.shape[0] <= n:
                noise = np.tile(noise, -(-n // noise.shape[0]))[:n]
            else:
                start = int(rng.integers(0, noise.shape[0] - n + 1))
                noise = noise[start:start + n]
        else:
            noise = rng.standard_normal(n, dtype=np.float32)
        k = (x.dot(x) / n) / (noise.dot(noise) / n + 1e-8) * 10 ** (-snr / 10)
        x = x + np.float32(np.sqrt(k)) * noise
    if op in ("reverb", "noise+reverb"):
        rir = _reference_read(rir_files[int(rng.integers(len(rir_files)))], rng, pick_channel=True)
        x = signal.convolve(x, rir, mode="full")[:n]
    return x


def reference_batch(wavs: np.ndarray, ops: list[str], noise_files: list[Path], rir_files: list[Path],
                    rng: np.random.Generator) -> np.ndarray:
    return np.stack([reference_row(x, op, noise_files, rir_files, rng) for x, op in zip(wavs, ops)])


# ------------------------------------------------------------------ timing helpers
def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _cpu_all() -> float:
    """CPU seconds of this process plus its finished (joined) children, i.e. DataLoader workers."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class _Utterances(Dataset):
    """``count`` clean utterances of LENGTH samples (shared rows: the dataset is not what is timed)."""

    def __init__(self, wavs: torch.Tensor, count: int) -> None:
        self.wavs, self.count = wavs, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Utterance:
        return Utterance(index, self.wavs[index % self.wavs.shape[0]])


class _ConvolvingCollate(PlanningCollate):
    """PlanningCollate whose plan also holds the convolutions (``plan(wavs=)``)."""

    def __call__(self, items: list[Utterance]) -> PlannedBatch:
        batch = collate(items)
        rng = np.random.default_rng([self.seed, self.epoch, *batch.indices.tolist()])
        assert self.policy is not None
        return PlannedBatch(batch, self.policy.plan(batch.lengths, batch.wavs.shape[1], rng, wavs=batch.wavs))


def run_loader(policy: CorruptionPolicy, wavs: torch.Tensor, batches: int, workers: int, step_s: float,
               convolve_in_workers: bool) -> tuple[float, float]:
    """(median trainer wait per batch, total CPU seconds per batch) over ``batches`` batches after
    one warm-up batch (worker start). The loader is exhausted and joined before CPU time is read."""
    collate_fn = (_ConvolvingCollate if convolve_in_workers else PlanningCollate)(policy, seed=0)
    loader = DataLoader(_Utterances(wavs, BATCH * (batches + 1)), batch_size=BATCH, collate_fn=collate_fn,
                        num_workers=workers, persistent_workers=False)
    waits = []
    cpu0 = _cpu_all()
    it: Iterator[PlannedBatch] = iter(loader)
    for i in range(batches + 1):
        t0 = time.perf_counter()
        item = next(it)
        assert item.plan is not None
        policy.apply(item.batch.wavs, item.batch.lengths, item.plan, step=0)
        if i:
            waits.append(time.perf_counter() - t0)
        time.sleep(step_s)  # the model step: the GPU busy, this process idle
    for _ in it:  # nothing left: joins the workers so RUSAGE_CHILDREN holds their CPU time
        pass
    del it
    return statistics.median(waits), (_cpu_all() - cpu0) / (batches + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=5, help="timed batches per measurement (median)")
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

        timings: dict[str, list[tuple[float, float]]] = {k: [] for k in ("ref", "cold", "warm", "apply", "plan")}
        for i in range(args.batches + 1):  # interleaved, so load from other processes hits all alike
            plan: CorruptionPlan = warm.plan(lengths, LENGTH, plan_rng(0, 0, i))
            ops = [OPS[o] for o in plan.ops.tolist()]
            samples = {
                "ref": _timed(lambda: reference_batch(clean, ops, *paths, np.random.default_rng(i))),
                "cold": _timed(lambda: cold.apply(wavs, lengths, cold.plan(lengths, LENGTH, plan_rng(0, 0, i)), 0)),
                "warm": _timed(lambda: warm.apply(wavs, lengths, warm.plan(lengths, LENGTH, plan_rng(0, 0, i)), 0)),
                "plan": _timed(lambda: warm.plan(lengths, LENGTH, plan_rng(0, 0, i))),
                "apply": _timed(lambda: warm.apply(wavs, lengths, plan, 0)),
            }
            if i:  # the first round warms FFT plans and page caches
                for key, value in samples.items():
                    timings[key].append(value)
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in timings.items()}
        rows += [("reference: per utterance, 1 process", *med["ref"]),
                 ("ours, 1 process, cold noise cache: plan + apply", *med["cold"]),
                 ("ours, 1 process, warm cache: plan + apply", *med["warm"]),
                 ("  of which plan (noise slices, RIR picks)", *med["plan"]),
                 ("  of which apply (batched FFT conv + exact mix)", *med["apply"])]

        step_s = args.step_ms / 1000
        for conv, label in ((False, "plan in workers"), (True, "plan + conv in workers")):
            wait_step, cpu = run_loader(warm, wavs, args.batches, args.workers, step_s, conv)
            wait_free, _ = run_loader(warm, wavs, args.batches, args.workers, 0.0, conv)
            prefix = f"loader {args.workers}w, {label}"
            rows += [(f"{prefix}: trainer wait, {args.step_ms:.0f} ms step", wait_step, math.nan),
                     (f"{prefix}: trainer wait, no step", wait_free, math.nan),
                     (f"{prefix}: total CPU, all processes", math.nan, cpu)]

    ref_wall, ref_cpu = med["ref"]
    print(f"machine: {_cpu_name()}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}), "
          f"torch {torch.__version__}, threads {args.threads}, loader workers {args.workers}")
    print(f"batch: {BATCH} x {LENGTH / RATE:.1f} s, ops 1/4 each, 70 % file noise; pool {len(noise_files)} noise "
          f"files, {len(rir_files)} RIR files (warm cache holds {cached[0]} noise + {cached[1]} RIR files); "
          f"median of {args.batches} batches")
    print(f"{'pipeline':<62} {'wall s':>7} {'CPU s':>7} {'utt/s':>7} {'vs ref':>7} {'CPU vs ref':>10}")
    for name, wall, cpu in rows:
        utt = BATCH / wall if wall == wall else BATCH / cpu
        ratio = f"{ref_wall / wall:6.1f}x" if wall == wall else "      -"
        cpu_ratio = f"{ref_cpu / cpu:9.1f}x" if cpu == cpu else "         -"
        fmt = lambda v: f"{v:7.3f}" if v == v else "      -"  # noqa: E731
        print(f"{name:<62} {fmt(wall)} {fmt(cpu)} {utt:7.1f} {ratio} {cpu_ratio}")
    total = [c for name, _, c in rows if "total CPU" in name] + [med["warm"][1]]
    best = ref_cpu / min(total)
    print("notes:")
    print("  utt/s is from wall time where given, else from CPU time (work per batch on one core).")
    print("  'trainer wait' = time from asking the DataLoader for a batch to the noisy batch being ready;")
    print("  with a model step the workers plan ahead while the step runs, so only the CPU apply is left.")
    verdict = "MET" if best >= 10 else "NOT MET"
    print(f"  10x target on total work (CPU time per batch, all processes): {verdict} (best {best:.1f}x). "
          + ("" if best >= 10 else "Both sides are dominated by the same FFT convolutions; on 2 CPU cores "
             "batching, caching and a faster FFT cannot remove that work. The GPU path (apply on the "
             "training device: cuFFT, the workers only slice noise) is where the remaining gap closes; "
             "no GPU was used for this run."))


if __name__ == "__main__":
    main()
