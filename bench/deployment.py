"""Edge deployment: CPU real-time factor of torch vs onnxruntime (fp32, int8), chunked long-audio memory
and the accuracy of chunking against full context.

    python bench/deployment.py                       # 10 s input, 1 and 2 threads, 60 s + 1 h memory rows
    python bench/deployment.py --no-hour             # skip the 1-hour memory row (10+ minutes on 2 cores)

DistilHuBERT-shaped student, the pruned sp0.75-shaped WavLM of bench/inference.py and a
HuBERT-Base-sized teacher, all with random weights (speed and memory do
not depend on values; the chunking errors do, so they are indicative only). Rows are timed
interleaved so load from other processes hits every row alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from robustdistiller.evaluate.efficiency import peak_memory_mb
from robustdistiller.export.onnx import export_onnx
from robustdistiller.export.quantize import quantize_int8
from robustdistiller.inference import ChunkConfig, OnnxBackend, TorchBackend, extract_chunked, extract_long
from robustdistiller.models import DistillerConfig, DistillerModel, TeacherConfig, TeacherModel
from robustdistiller.runtime import OnnxModel

# bench/ is on sys.path when this script runs: reuse the sp0.75 pruned shapes of bench/inference.py.
from inference import pruned_model  # noqa: E402

RATE = 16000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * np.arange(n) / RATE + rng.uniform(0, 6)), 0, None)
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


def student() -> DistillerModel:
    torch.manual_seed(0)
    return DistillerModel(DistillerConfig()).eval()


def speed_rows(workdir: Path, seconds: float, threads: int, repeats: int) -> dict[str, float]:
    """Median seconds per forward of a 1 x ``seconds`` input, every hidden state returned."""
    torch.set_num_threads(threads)
    model = student()
    fp32 = export_onnx(model, workdir / "student.onnx").path
    int8 = workdir / "student-int8.onnx"
    if not int8.exists():
        quantize_int8(fp32, int8)
    pruned = pruned_model()
    pruned_int8 = workdir / "pruned-int8.onnx"
    if not pruned_int8.exists():
        quantize_int8(export_onnx(pruned, workdir / "pruned.onnx").path, pruned_int8)
    teacher = TeacherModel(TeacherConfig()).eval()
    wav = speechlike(seconds)[None]
    lengths = np.array([wav.shape[1]])
    wt, lt = torch.from_numpy(wav), torch.from_numpy(lengths)
    ort_fp32, ort_int8 = OnnxModel(fp32, threads), OnnxModel(int8, threads)
    ort_pruned_int8 = OnnxModel(pruned_int8, threads)
    rows: dict[str, Callable[[], object]] = {
        "student torch fp32": lambda: model.extract(wt, lt),
        "student onnxruntime fp32": lambda: ort_fp32.extract(wav, lengths),
        "student onnxruntime int8": lambda: ort_int8.extract(wav, lengths),
        "pruned sp0.75 torch fp32": lambda: pruned.extract(wt, lt),
        "pruned sp0.75 onnxruntime int8": lambda: ort_pruned_int8.extract(wav, lengths),
        "teacher torch fp32": lambda: teacher.forward(wt, lt),
    }
    times: dict[str, list[float]] = {k: [] for k in rows}
    with torch.inference_mode():
        for run in rows.values():
            run()
        for _ in range(repeats):
            for name, run in rows.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _chunked_run(onnx_path: str, wav_path: str, out: str, threads: int) -> None:
    backend = OnnxBackend(OnnxModel(onnx_path, threads))
    extract_long(backend, Path(wav_path), Path(out), ChunkConfig())


def memory_row(workdir: Path, seconds: float, threads: int) -> tuple[float, float]:
    """(peak RSS growth MB, wall s) of chunked int8 extraction of a ``seconds``-long file."""
    wav_path = workdir / f"{seconds:g}s.wav"
    with sf.SoundFile(wav_path, "w", RATE, 1, subtype="PCM_16") as fh:
        for i in range(int(seconds // 60) or 1):  # written a minute at a time
            fh.write(speechlike(min(60.0, seconds), seed=i))
    start = time.perf_counter()
    peak = peak_memory_mb(
        partial(_chunked_run, str(workdir / "student-int8.onnx"), str(wav_path), str(workdir / "out.npy"), threads),
        timeout_s=3600,
    )
    elapsed = time.perf_counter() - start
    wav_path.unlink()
    return peak, elapsed


def chunk_accuracy(seconds: float = 60.0, chunk_s: float = 10.0, overlaps: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)) -> list[str]:
    backend = TorchBackend(student(), threads=2)
    wav = speechlike(seconds, seed=7)
    full = [h[0] for h in backend.extract(wav[None], np.array([len(wav)]))]
    lines = []
    for overlap in overlaps:
        parts = list(extract_chunked(backend, [wav], ChunkConfig(chunk_seconds=chunk_s, overlap_seconds=overlap)))
        got = [np.concatenate([p[1][i] for p in parts]) for i in range(len(full))]
        diff = max(float(np.abs(g - f).max()) for g, f in zip(got, full))
        scale = max(float(np.abs(f).max()) for f in full)
        cos = min(
            float(np.mean((g * f).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(f, axis=1) + 1e-12)))
            for g, f in zip(got, full)
        )
        lines.append(f"| {chunk_s:g} | {overlap:g} | {diff:.3g} | {diff / scale:.2e} | {cos:.5f} |")
    return lines


def machine() -> str:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import onnxruntime

    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-hour", action="store_true")
    args = parser.parse_args()
    print(f"Machine: {machine()}\nInput: 1 x {args.seconds:g} s, median of {args.repeats} (interleaved)\n")
    print("| model | threads | ms / forward | RTF | torch fp32 student / this | teacher / this |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for threads in args.threads:
            rows = speed_rows(workdir, args.seconds, threads, args.repeats)
            for name, t in rows.items():
                print(
                    f"| {name} | {threads} | {1000 * t:.0f} | {t / args.seconds:.4f} | "
                    f"{rows['student torch fp32'] / t:.2f}x | {rows['teacher torch fp32'] / t:.2f}x |"
                )
        print("\nChunked extraction (onnxruntime int8 student, chunk 20 s, overlap 4 s, 2 threads), written to .npy:")
        print("| input | peak RSS growth (MB) | wall (s) |\n|---|---|---|")
        for seconds in (60.0,) + (() if args.no_hour else (3600.0,)):
            peak, wall = memory_row(workdir, seconds, 2)
            print(f"| {seconds:g} s | {peak:.0f} | {wall:.0f} |")
    print("\nChunked vs full context, 60 s input, student torch fp32 (random weights):")
    print("| chunk (s) | overlap (s) | max abs diff | / max abs value | min over layers of mean frame cosine |")
    print("|---|---|---|---|---|")
    print("\n".join(chunk_accuracy()))


if __name__ == "__main__":
    main()
