"""Efficiency measures: parameters, multiply-accumulates per second of audio, CPU real-time factor, peak memory.

A model is measured through ``model.extract(wavs [1, L], lengths [1])`` when it has that method
(the upstream protocol), else ``model(wavs)``, on seeded random noise.

- MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (matmul, linear, convolution,
  attention kernels; FLOPs / 2 = MACs) plus forward hooks for ``nn.LSTM``, which that counter does
  not see. Element-wise work (activations, norms, softmax, biases) is not counted, as is usual.
- Peak memory is the growth of the resident-set high-water mark (``VmHWM`` in ``/proc/self/status``)
  while ``fn`` runs in a fresh spawned process, so earlier allocations in this process do not hide
  or inflate it.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from robustdistiller.models.precision import precision_of

SAMPLE_RATE = 16000


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _noise(seconds: float, sample_rate: int) -> tuple[Tensor, Tensor]:
    samples = int(round(seconds * sample_rate))
    if samples < 1:
        raise ValueError(f"seconds must give at least one sample, got {seconds}")
    generator = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(1, samples, generator=generator), torch.tensor([samples])


def _forward(model: Any, wavs: Tensor, lengths: Tensor) -> Any:
    extract = getattr(model, "extract", None)
    return extract(wavs, lengths) if callable(extract) else model(wavs)


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Eval mode for the measurement, restoring the caller's mode afterwards."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _lstm_macs(module: nn.LSTM, inputs: tuple[Any, ...]) -> int:
    x = inputs[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = x.data.shape[0]  # sum of the sequence lengths
    else:
        steps = x.shape[0] * x.shape[1] if x.ndim == 3 else x.shape[0]
    hidden, dirs = module.hidden_size, 2 if module.bidirectional else 1
    out = module.proj_size or hidden
    total = 0
    for layer in range(module.num_layers):
        feed = module.input_size if layer == 0 else out * dirs
        # Four gates, each a matrix-vector product with the input and the recurrent state.
        per_step = 4 * hidden * (feed + out) + (hidden * out if module.proj_size else 0)
        total += dirs * steps * per_step
    return total


def count_macs(model: Any, seconds: float = 1.0, sample_rate: int = SAMPLE_RATE) -> int:
    """Multiply-accumulates of one forward pass over ``seconds`` of audio (pass 1.0 for MACs per second)."""
    wavs, lengths = _noise(seconds, sample_rate)
    lstm_macs = 0

    def hook(module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
        nonlocal lstm_macs
        lstm_macs += _lstm_macs(module, inputs)  # type: ignore[arg-type]

    lstms = [m for m in model.modules() if isinstance(m, nn.LSTM)] if isinstance(model, nn.Module) else []
    handles = [m.register_forward_hook(hook) for m in lstms]
    # MACs do not depend on the precision, and FlopCounterMode's decompositions do not follow CPU
    # autocast (a bf16 model's einsum would mix dtypes): count the fp32 forward.
    fp32 = precision_of(model, "fp32") if hasattr(model, "precision") else nullcontext()
    try:
        with _eval_mode(model), fp32, torch.inference_mode(), FlopCounterMode(display=False) as counter:
            _forward(model, wavs, lengths)
    finally:
        for handle in handles:
            handle.remove()
    return counter.get_total_flops() // 2 + lstm_macs


def real_time_factor(
    model: Any,
    seconds: float = 10.0,
    threads: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    sample_rate: int = SAMPLE_RATE,
) -> float:
    """Median wall time of a forward pass divided by the audio duration (< 1 is faster than real time).

    Runs on CPU with ``threads`` intra-op threads; the caller's thread count is restored.
    """
    if threads < 1 or repeats < 1 or warmup < 0:
        raise ValueError("threads and repeats must be >= 1, warmup >= 0")
    wavs, lengths = _noise(seconds, sample_rate)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        with _eval_mode(model), torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                _forward(model, wavs, lengths)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times) / (wavs.shape[1] / sample_rate)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _measure_child(fn: Callable[..., Any], args: tuple[Any, ...], queue: Any) -> None:
    try:
        baseline = _status_kb("VmRSS")
        # "5" resets the high-water mark to the current RSS, so import-time peaks are excluded.
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        fn(*args)
        queue.put(("ok", (_status_kb("VmHWM") - baseline) / 1024.0))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def peak_memory_mb(fn: Callable[..., Any], *args: Any, timeout_s: float = 600.0) -> float:
    """Peak resident memory (MiB) that ``fn(*args)`` adds, measured in a fresh spawned process (Linux).

    ``fn`` and ``args`` must be picklable (a module-level function, ``functools.partial``...).
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure_child, args=(fn, args, queue), daemon=True)
    proc.start()
    deadline = time.monotonic() + timeout_s
    try:
        # Short waits while the child lives: a child that dies (killed for memory, a crash before it
        # reports) fails the measurement at once instead of after the whole timeout.
        while True:
            alive = proc.is_alive()  # read before the wait: a child that reported and exited is drained below
            try:
                status, value = queue.get(timeout=1.0)
                break
            except queue_module.Empty:
                if not alive or time.monotonic() > deadline:
                    proc.kill()
                    proc.join(timeout=10)
                    raise RuntimeError(
                        f"memory measurement process gave no result (exit code {proc.exitcode}); a spawned "
                        "child re-imports the caller's main module, so scripts need an `if __name__ == "
                        "'__main__':` guard"
                    ) from None
    finally:
        proc.join(timeout=10)
    if status != "ok":
        raise RuntimeError(f"memory measurement failed: {value}")
    return float(value)
