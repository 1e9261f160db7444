"""What the CPU can do, for the benchmark tables: model, relevant flags, and the GEMM peaks per precision.

Peaks are measured through the libraries the models use: torch (oneDNN / MKL) for fp32 and bf16
matrix products, onnxruntime (MLAS) ``MatMulInteger`` for int8 (uint8 x int8 -> int32, what its
dynamically quantised MatMul and integer convolutions run on). A row's "fraction of peak" is its
achieved FLOP rate over the peak of the precision that does most of its work.

    python bench/hardware.py            # peaks at 1 and 2 threads
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from robustdistiller.models.precision import bf16_units, cpu_flags, cpu_model

REDUCED_PRECISION_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
GEMM_SIZE = 2048  # square: big enough to run near peak, small enough to time in well under a second


def cpu_line() -> str:
    """``model; flags: ...`` with the reduced-precision flags this CPU has (and lacks)."""
    have = [f for f in REDUCED_PRECISION_FLAGS if f in cpu_flags()]
    lack = [f for f in REDUCED_PRECISION_FLAGS if f not in cpu_flags()]
    return (f"{cpu_model()}; flags: {' '.join(have) or '-'}"
            f"{'; lacks: ' + ' '.join(lack) if lack else ''}; bf16 units for torch: {bf16_units() or 'none'}")


def median_seconds(run: Callable[[], object], repeats: int = 5) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_gemm_gflops(dtype: torch.dtype, threads: int, n: int = GEMM_SIZE) -> float:
    """Median GFLOP/s of an ``n x n x n`` torch matrix product in ``dtype`` at ``threads`` threads."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen).to(dtype), torch.randn(n, n, generator=gen).to(dtype)
    with torch.inference_mode():
        return 2 * n**3 / median_seconds(lambda: a @ b) / 1e9


def ort_int8_gemm_gflops(threads: int, n: int = GEMM_SIZE) -> float:
    """Median GOP/s of onnxruntime's ``MatMulInteger`` (uint8 x int8 -> int32), ``n x n x n``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "int8_gemm.onnx"
        onnx.save(model, str(path))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8), "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}
    return 2 * n**3 / median_seconds(lambda: session.run(None, feeds)) / 1e9


def gemm_peaks(threads: int) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) per precision: "fp32", "bf16" (torch), "int8" (onnxruntime)."""
    return {
        "fp32": torch_gemm_gflops(torch.float32, threads),
        "bf16": torch_gemm_gflops(torch.bfloat16, threads),
        "int8": ort_int8_gemm_gflops(threads),
    }


def forward_gflop(forward: Callable[[torch.Tensor, torch.Tensor], object], seconds: float) -> float:
    """GFLOP of ``forward(wavs [1, L], lengths [1])`` over ``seconds`` of audio, as torch counts them
    (2 per multiply-accumulate of every matrix product and convolution)."""
    from torch.utils.flop_counter import FlopCounterMode

    wavs = 0.1 * torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(0))
    # no_grad, not inference_mode: transformers' weight-norm parametrization fails under the latter here
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(wavs, torch.tensor([wavs.shape[1]]))
    return counter.get_total_flops() / 1e9


def peaks_table(threads: list[int]) -> tuple[str, dict[int, dict[str, float]]]:
    """Markdown table of the GEMM peaks, and the peaks by thread count."""
    peaks = {t: gemm_peaks(t) for t in threads}
    lines = [f"CPU: {cpu_line()}", "",
             f"GEMM peaks ({GEMM_SIZE}^3; fp32 / bf16 through torch, int8 through onnxruntime MatMulInteger):", "",
             "| threads | fp32 GFLOP/s | bf16 GFLOP/s | int8 GOP/s | bf16 / fp32 | int8 / fp32 |", "|---|---|---|---|---|---|"]
    for t, p in peaks.items():
        lines.append(f"| {t} | {p['fp32']:.0f} | {p['bf16']:.0f} | {p['int8']:.0f} | "
                     f"{p['bf16'] / p['fp32']:.1f}x | {p['int8'] / p['fp32']:.1f}x |")
    return "\n".join(lines), peaks


if __name__ == "__main__":
    print(peaks_table([1, 2])[0])
