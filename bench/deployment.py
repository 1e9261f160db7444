"""Edge deployment: CPU speed of torch (fp32, bf16) vs onnxruntime (fp32, int8 schemes), chunked
long-audio memory and the accuracy of chunking against full context.

    python bench/deployment.py                       # 10 s input, 1 and 2 threads, 60 s + 1 h memory rows
    python bench/deployment.py --no-hour             # skip the 1-hour memory rows (10+ minutes on 2 cores)

DistilHuBERT-shaped student, the pruned sp0.75-shaped WavLM of bench/inference.py and a
HuBERT-Base-sized teacher, all with random weights (speed and memory do not depend on values; the
chunking errors and cosines do, so they are indicative only). Rows are timed interleaved so load
from other processes hits every row alike. Each row gives its achieved GFLOP/s and the fraction of
the GEMM peak of the precision that does most of its work (``bench/hardware.py``); the int8 rows
also give their per-layer cosine against fp32 on padded synthetic speech. "static-conv" int8 is
calibrated on the built-in synthetic speech.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

# bench/ is on sys.path when this script runs: reuse the sp0.75 pruned shapes of bench/inference.py
# and the CPU / peak measurements of bench/hardware.py.
from hardware import GEMM_GFLOP, GEMM_SIZE, cpu_line, forward_gflop, gemm_runners, median_seconds  # noqa: E402
from inference import pruned_model  # noqa: E402

from robustdistiller.evaluate.efficiency import peak_memory_mb
from robustdistiller.export.onnx import calibration_audio, export_onnx
from robustdistiller.export.quantize import quantize_int8
from robustdistiller.inference import ChunkConfig, OnnxBackend, TorchBackend, extract_chunked, extract_long
from robustdistiller.models import DistillerConfig, DistillerModel, TeacherConfig, TeacherModel
from robustdistiller.models.precision import accuracy_batch, layer_cosines
from robustdistiller.models.teacher import Teacher
from robustdistiller.runtime import OnnxModel

RATE = 16000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * np.arange(n) / RATE + rng.uniform(0, 6)), 0, None)
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


def student() -> DistillerModel:
    torch.manual_seed(0)
    return DistillerModel(DistillerConfig()).eval()


@dataclass
class Row:
    run: Callable[[], object]
    gflop: float
    """Work of the fp32 forward it computes (FlopCounterMode), whatever precision runs it."""
    peak: str
    """The precision doing most of the work ("fp32" | "bf16" | "int8"): whose peak the row is held to."""
    cosine: float | None = None
    """Min per-layer mean frame cosine against fp32 (None for fp32 rows)."""
    median_s: float = float("nan")


SMALL_MODELS: dict[str, Callable[[], torch.nn.Module]] = {"student": lambda: student(), "pruned sp0.75": pruned_model}


@functools.cache
def onnx_files(workdir: Path, name: str) -> dict[str, tuple[Path, float | None]]:
    """fp32 export and both int8 schemes of ``SMALL_MODELS[name]`` -> (path, min layer cosine vs
    fp32 on the export's verification batches); made once per run."""
    fp32 = export_onnx(SMALL_MODELS[name](), workdir / f"{name}.onnx").path
    files: dict[str, tuple[Path, float | None]] = {"fp32": (fp32, None)}
    for scheme in ("dynamic", "static-conv"):
        report = quantize_int8(
            fp32, workdir / f"{name}-int8-{scheme}.onnx", scheme=scheme, calibration=calibration_audio(None)
        )
        files[scheme] = (report.path, report.min_cosine)
    return files


def speed_rows(workdir: Path, seconds: float, threads: int, repeats: int) -> tuple[dict[str, Row], dict[str, float]]:
    """Median seconds per forward of a 1 x ``seconds`` input, every hidden state returned, and the
    GEMM peaks per precision (GFLOP/s) timed in the same interleaved rounds."""
    torch.set_num_threads(threads)
    wav = speechlike(seconds)[None]
    lengths = np.array([wav.shape[1]])
    wt, lt = torch.from_numpy(wav), torch.from_numpy(lengths)
    check = accuracy_batch()
    models = {
        **{name: build() for name, build in SMALL_MODELS.items()},
        "teacher": Teacher(TeacherModel(TeacherConfig()).eval(), "random weights"),
    }
    rows: dict[str, Row] = {}
    for name, model in models.items():
        gflop = forward_gflop(model.extract, seconds)
        bf16 = copy.deepcopy(model)
        bf16.precision = "bf16"
        rows[f"{name} torch fp32"] = Row(partial(model.extract, wt, lt), gflop, "fp32")
        rows[f"{name} torch bf16"] = Row(
            partial(bf16.extract, wt, lt), gflop, "bf16", min(layer_cosines(model, *check, "bf16"))
        )
        if name == "teacher":
            continue  # deployment targets the small models
        # int8 dynamic leaves the CNN, most of the work, in fp32: it is held to the fp32 peak
        for kind, peak in (("fp32", "fp32"), ("dynamic", "fp32"), ("static-conv", "int8")):
            path, cosine = onnx_files(workdir, name)[kind]
            label = "onnxruntime fp32" if kind == "fp32" else f"onnxruntime int8 {kind}"
            rows[f"{name} {label}"] = Row(partial(OnnxModel(path, threads).extract, wav, lengths), gflop, peak, cosine)
    gemms = gemm_runners(threads)
    times: dict[str, list[float]] = {k: [] for k in [*rows, *gemms]}
    with torch.inference_mode():
        for row in rows.values():
            row.run()
        for _ in range(repeats):
            for name, row in rows.items():
                start = time.perf_counter()
                row.run()
                times[name].append(time.perf_counter() - start)
            for name, run in gemms.items():  # the peaks, under the same load as the rows
                times[name].append(median_seconds(run, repeats=1))
    for name, row in rows.items():
        row.median_s = statistics.median(times[name])
    return rows, {name: GEMM_GFLOP / statistics.median(times[name]) for name in gemms}


def _chunked_run(model: str, backend: str, wav_path: str, out: str, threads: int) -> None:
    if backend == "onnx":
        runner = OnnxBackend(OnnxModel(model, threads))
    else:  # a torch student in bf16, what `extract --precision auto` runs on a CPU with bf16 units
        torch_model = student()
        torch_model.precision = "bf16"
        runner = TorchBackend(torch_model, threads=threads)
    extract_long(runner, Path(wav_path), Path(out), ChunkConfig())


def memory_row(workdir: Path, seconds: float, threads: int, backend: str) -> tuple[float, float]:
    """(peak RSS growth MB, wall s) of chunked extraction of a ``seconds``-long file: ``backend``
    "onnx" = the static-conv int8 student, "torch" = the bf16 torch student."""
    wav_path = workdir / f"{seconds:g}s.wav"
    with sf.SoundFile(wav_path, "w", RATE, 1, subtype="PCM_16") as fh:
        for i in range(int(seconds // 60) or 1):  # written a minute at a time
            fh.write(speechlike(min(60.0, seconds), seed=i))
    model = str(onnx_files(workdir, "student")["static-conv"][0])
    start = time.perf_counter()
    peak = peak_memory_mb(
        partial(_chunked_run, model, backend, str(wav_path), str(workdir / "out.npy"), threads), timeout_s=3600
    )
    elapsed = time.perf_counter() - start
    wav_path.unlink()
    return peak, elapsed


def chunk_accuracy(
    seconds: float = 60.0, chunk_s: float = 10.0, overlaps: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
) -> list[str]:
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
    import onnxruntime

    return (
        f"{cpu_line()}; {os.cpu_count()} logical CPUs, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )


def speed_table(rows: dict[str, Row], threads: int, seconds: float, peaks: dict[str, float]) -> list[str]:
    student_fp32, teacher_fp32 = rows["student torch fp32"].median_s, rows["teacher torch fp32"].median_s
    lines = []
    for name, row in rows.items():
        rate = row.gflop / row.median_s
        cosine = f"{row.cosine:.4f}" if row.cosine is not None else "-"
        lines.append(
            f"| {name} | {threads} | {1000 * row.median_s:.0f} | {row.median_s / seconds:.4f} | {rate:.0f} "
            f"| {100 * rate / peaks[row.peak]:.0f} % of {row.peak} | {cosine} | {student_fp32 / row.median_s:.2f}x "
            f"| {teacher_fp32 / row.median_s:.2f}x |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-hour", action="store_true")
    args = parser.parse_args()
    print(f"Machine: {machine()}\nInput: 1 x {args.seconds:g} s, median of {args.repeats} (interleaved)\n")
    print("GFLOP/s: the fp32 forward's FLOPs (FlopCounterMode) over the time; cosine: min over layers of the mean")
    print("frame cosine against fp32 (bf16: padded synthetic speech; int8: the export's verification batches).\n")
    print(
        "| model | threads | ms / forward | RTF | GFLOP/s | of peak | cosine vs fp32 | torch fp32 student / this "
        "| teacher fp32 / this |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for threads in args.threads:
            rows, peaks = speed_rows(workdir, args.seconds, threads, args.repeats)
            print("\n".join(speed_table(rows, threads, args.seconds, peaks)))
            print(
                f"| GEMM peaks {GEMM_SIZE}^3, {threads} thread(s), same rounds | "
                + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
                + " GFLOP/s |||||||"
            )
        print("\nChunked extraction (chunk 20 s, overlap 4 s, 2 threads), written to .npy:")
        print("| input | student | peak RSS growth (MB) | wall (s) |\n|---|---|---|---|")
        for seconds in (60.0,) + (() if args.no_hour else (3600.0,)):
            for backend, what in (("onnx", "onnxruntime int8 static-conv"), ("torch", "torch bf16")):
                peak, wall = memory_row(workdir, seconds, 2, backend)
                print(f"| {seconds:g} s | {what} | {peak:.0f} | {wall:.0f} |")
    print("\nChunked vs full context, 60 s input, student torch fp32 (random weights):")
    print("| chunk (s) | overlap (s) | max abs diff | / max abs value | min over layers of mean frame cosine |")
    print("|---|---|---|---|---|")
    print("\n".join(chunk_accuracy()))


if __name__ == "__main__":
    main()
