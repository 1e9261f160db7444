"""What the CPU can do, for the benchmark tables: model, relevant flags, and the GEMM peaks per precision.

Peaks are measured through the libraries the models use: torch (oneDNN / MKL) for fp32 and bf16
matrix products, onnxruntime (MLAS) ``MatMulInteger`` for int8 (uint8 x int8 -> int32, what its
dynamically quantised MatMul and integer convolutions run on). A row's "fraction of peak" is its
achieved FLOP rate over the peak of the precision that does most of its work.

    python bench/hardware.py            # CPU line, peaks at 1 and 2 threads
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

REDUCED_PRECISION_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
GEMM_SIZE = 2048  # square: big enough to run near peak, small enough to time in well under a second


def cpu_line() -> str:
    """``model; flags: ...`` with the reduced-precision flags this CPU has (and lacks)."""
    have = [f for f in REDUCED_PRECISION_FLAGS if f in cpu_flags()]
    lack = [f for f in REDUCED_PRECISION_FLAGS if f not in cpu_flags()]
    return (
        f"{cpu_model()}; flags: {' '.join(have) or '-'}"
        f"{'; lacks: ' + ' '.join(lack) if lack else ''}; bf16 units for torch: {bf16_units() or 'none'}"
    )


def median_seconds(run: Callable[[], object], repeats: int = 5) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_gemm(dtype: torch.dtype, n: int = GEMM_SIZE) -> Callable[[], object]:
    """An ``n x n x n`` torch matrix product in ``dtype`` (``2 n^3`` FLOP per call)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen).to(dtype), torch.randn(n, n, generator=gen).to(dtype)

    def run() -> object:
        with torch.inference_mode():
            return a @ b

    return run


def ort_int8_gemm(threads: int, n: int = GEMM_SIZE) -> Callable[[], object]:
    """An ``n x n x n`` onnxruntime ``MatMulInteger`` (uint8 x int8 -> int32), ``2 n^3`` OP per call."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_gemm",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
        ],
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
    return lambda: session.run(None, feeds)


def gemm_runners(threads: int) -> dict[str, Callable[[], object]]:
    """One GEMM per precision: "fp32", "bf16" (torch), "int8" (onnxruntime), each ``2 * GEMM_SIZE^3`` FLOP.

    Benchmarks time these interleaved with their rows, so a row and the peak it is held to see the
    same load from other processes (``torch`` must already use ``threads`` threads).
    """
    return {"fp32": torch_gemm(torch.float32), "bf16": torch_gemm(torch.bfloat16), "int8": ort_int8_gemm(threads)}


GEMM_GFLOP = 2 * GEMM_SIZE**3 / 1e9


def gemm_peaks(threads: int) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) per precision, each the median of 5 calls."""
    torch.set_num_threads(threads)
    return {name: GEMM_GFLOP / median_seconds(run) for name, run in gemm_runners(threads).items()}


def forward_gflop(forward: Callable[[torch.Tensor, torch.Tensor], object], seconds: float) -> float:
    """GFLOP of ``forward(wavs [1, L], lengths [1])`` over ``seconds`` of audio, as torch counts them
    (2 per multiply-accumulate of every matrix product and convolution)."""
    from torch.utils.flop_counter import FlopCounterMode

    wavs = 0.1 * torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(0))
    # no_grad, not inference_mode: transformers' weight-norm parametrization fails under the latter here
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(wavs, torch.tensor([wavs.shape[1]]))
    return counter.get_total_flops() / 1e9


def main() -> None:
    print(f"CPU: {cpu_line()}")
    for count in (1, 2):
        print(f"{count} thread(s): " + ", ".join(f"{k} {v:.0f}" for k, v in gemm_peaks(count).items()) + " GFLOP/s")


if __name__ == "__main__":
    main()
