"""Corruption throughput: our plan + batched apply against the reference's per-utterance approach.

One bucket of the RobustDistiller recipe: 24 utterances of 15.6 s (250,000 samples). Noise files are
written to a temporary folder (MUSAN-like 16 kHz recordings of 10-60 s and UrbanSound8K-like 4 s
clips at 44.1 kHz), RIRs are 0.5-1.5 s exponentially decaying responses at 16 kHz. Both pipelines
use the same policy (4 ops at 1/4, 30 % white noise, SNR 0-20 dB) and the same files.

* reference: per utterance, as ``robustness.py`` does it on the training process — read the whole
  noise file (resampled; soxr here, torchaudio's kaiser resampler there), tile/crop, mix, read the
  RIR, ``scipy.signal.convolve(mode="full")`` on CPU, truncate.
* ours A: ``policy.plan`` (file-bound; in training it runs in DataLoader workers, so the trainer
  only waits for ``apply``) + ``policy.apply`` (batched torch FFT convolution and mixing).
* ours B: ``policy.plan(..., wavs=)`` also does the convolutions in the worker; ``apply`` is
  element-wise (the setting for CPU trainers).

    python bench/augment.py                       # median of 5 batches, all cores
    python bench/augment.py --repeats 3 --threads 2 --ops noise+reverb
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
from scipy import signal

from robustdistiller.augment.noise import NoiseBank, index_folder, tile
from robustdistiller.augment.policy import OPS, CorruptionConfig, CorruptionPolicy, plan_rng
from robustdistiller.augment.rir import RIRBank, index_rir_folder
from robustdistiller.data.audio import load_audio

BATCH, LENGTH = 24, 250_000


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_sources(folder: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    noise_dir, rir_dir = folder / "noise", folder / "rirs"
    noise_dir.mkdir()
    rir_dir.mkdir()
    for i in range(12):
        n = int(rng.uniform(10, 60) * 16000)
        sf.write(noise_dir / f"musan_{i:02d}.wav", (rng.standard_normal(n) * 0.1).astype(np.float32), 16000)
        sf.write(noise_dir / f"us8k_{i:02d}.wav", (rng.standard_normal(4 * 44100) * 0.1).astype(np.float32), 44100)
    for i in range(16):
        m = int(rng.uniform(0.5, 1.5) * 16000)
        h = rng.standard_normal(m) * np.exp(-6.9 * np.arange(m) / m)  # -60 dB over the RIR's length
        h[0] = 1.0
        sf.write(rir_dir / f"rir_{i:02d}.wav", h.astype(np.float32), 16000, subtype="FLOAT")
    return noise_dir, rir_dir


def reference_batch(wavs: torch.Tensor, ops: list[int], noise_files: list[Path], rir_files: list[Path],
                    rng: np.random.Generator) -> torch.Tensor:
    """robustness.py's per-row arithmetic (on full rows, as it does), one utterance at a time."""
    out = []
    for x, op in zip(wavs, ops):
        if OPS[op] in ("noise", "noise+reverb"):
            snr = int(rng.integers(0, 21))
            if rng.random() < 0.7:
                noise = torch.from_numpy(load_audio(noise_files[int(rng.integers(len(noise_files)))]))
                if noise.shape[0] <= x.shape[0]:
                    noise = torch.from_numpy(tile(noise.numpy(), x.shape[0]))
                else:
                    start = int(rng.integers(0, noise.shape[0] - x.shape[0] + 1))
                    noise = noise[start:start + x.shape[0]]
            else:
                noise = torch.randn_like(x)
            n = x.shape[0]
            k = (x.dot(x) / n) / (noise.dot(noise) / n + 1e-8) * 10 ** (-snr / 10)
            x = x + torch.sqrt(k) * noise
        if OPS[op] in ("reverb", "noise+reverb"):
            rir = load_audio(rir_files[int(rng.integers(len(rir_files)))], min_samples=1)
            x = torch.from_numpy(signal.convolve(x.numpy(), rir, mode="full")[:x.shape[0]].astype(np.float32))
        out.append(x)
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ops", choices=["policy", "noise+reverb"], default="policy",
                        help="'policy': the reference's 4 ops at 1/4; 'noise+reverb': every row (worst case)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    probs = {"p_clean": 0.25, "p_noise": 0.25, "p_reverb": 0.25, "p_noise_reverb": 0.25}
    if args.ops == "noise+reverb":
        probs = {"p_clean": 0.0, "p_noise": 0.0, "p_reverb": 0.0, "p_noise_reverb": 1.0}
    rng = np.random.default_rng(0)
    wavs = torch.from_numpy((rng.standard_normal((BATCH, LENGTH)) * 0.1).astype(np.float32))
    lengths = torch.full((BATCH,), LENGTH)

    with tempfile.TemporaryDirectory() as tmp:
        noise_dir, rir_dir = write_sources(Path(tmp), rng)
        noise_bank, rir_bank = NoiseBank(index_folder(noise_dir)), RIRBank(index_rir_folder(rir_dir))
        policy = CorruptionPolicy(CorruptionConfig(**probs), noise_bank, rir_bank)
        noise_files, rir_files = [f.path for f in noise_bank.files], [f.path for f in rir_bank.files]

        times: dict[str, list[float]] = {k: [] for k in ("plan", "apply", "plan_wet", "apply_wet", "ref")}
        for i in range(args.repeats + 1):  # the first round warms caches and FFT plans
            t = [time.perf_counter()]
            plan = policy.plan(lengths, LENGTH, plan_rng(0, 0, i))
            t.append(time.perf_counter())
            policy.apply(wavs, lengths, plan, step=0)
            t.append(time.perf_counter())
            wet_plan = policy.plan(lengths, LENGTH, plan_rng(0, 0, i), wavs=wavs)
            t.append(time.perf_counter())
            policy.apply(wavs, lengths, wet_plan, step=0)
            t.append(time.perf_counter())
            reference_batch(wavs, plan.ops.tolist(), noise_files, rir_files, np.random.default_rng(i))
            t.append(time.perf_counter())
            if i:
                for key, t0, t1 in zip(times, t, t[1:]):
                    times[key].append(t1 - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {_cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, threads {args.threads}")
    print(f"batch: {BATCH} x {LENGTH / 16000:.1f} s, RIRs 0.5-1.5 s, ops: {args.ops}, median of {args.repeats}")
    print(f"{'pipeline':<52} {'s/batch':>8} {'utt/s':>8} {'vs ref':>7}")
    rows = [("reference: per utterance, scipy convolve", med["ref"]),
            ("A, one process: plan + batched FFT apply", med["plan"] + med["apply"]),
            ("A, trainer waits: apply (plan in workers)", med["apply"]),
            ("  A: plan alone (worker)", med["plan"]),
            ("B, one process: plan with convolution + apply", med["plan_wet"] + med["apply_wet"]),
            ("B, trainer waits: apply (plan + convolution in workers)", med["apply_wet"]),
            ("  B: plan with convolution alone (worker)", med["plan_wet"])]
    for name, seconds in rows:
        print(f"{name:<52} {seconds:8.3f} {BATCH / seconds:8.1f} {med['ref'] / seconds:6.1f}x")


if __name__ == "__main__":
    main()
