"""CPU inference speed and memory of the student against its competitors.

Rows: our DistilHuBERT student, transformers' ``HubertModel`` with the identical 2-layer config
(what users get from the HF DistilHuBERT port), and a HuBERT-Base-sized teacher built from our
blocks. All random weights (speed does not depend on values). Later issues add rows (pruned model,
onnxruntime) by appending to ``CANDIDATES``.

    python bench/inference.py                  # 10 s of audio, 1 and 2 threads, median of 7
    python bench/inference.py --seconds 5 --repeats 5 --threads 1

Memory = growth of the resident-set high-water mark (/proc VmHWM) while building the model and
running one forward in a fresh process (``evaluate.efficiency.peak_memory_mb``): weights plus
activations. tracemalloc is not used: it does not see torch's allocations.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

# imported up front so that its import-time memory is not charged to the transformers row
from transformers import HubertConfig, HubertModel

from robustdistiller.evaluate.efficiency import peak_memory_mb
from robustdistiller.models import DistillerConfig, DistillerModel, TeacherConfig, TeacherModel
from robustdistiller.models.pruning import PrunableConfig, PrunableModel

Forward = Callable[[torch.Tensor, torch.Tensor], object]


@dataclass
class Candidate:
    name: str
    build: Callable[[], tuple[torch.nn.Module, Forward]]
    """Returns the model (for the parameter count) and a ``forward(wavs, lengths)`` closure."""


def _student() -> tuple[torch.nn.Module, Forward]:
    model = DistillerModel(DistillerConfig()).eval()
    return model, lambda w, n: model(w, n)


def _student_no_heads() -> tuple[torch.nn.Module, Forward]:
    """Same work as the transformers row: CNN + projection + layers, no prediction heads."""
    model = DistillerModel(DistillerConfig()).eval()
    # Count only what this forward runs: the unused prediction heads would inflate the size column.
    used = torch.nn.ModuleList([model.feature_extractor, model.post_extract_proj, model.encoder])
    return used, lambda w, n: model(w, n, predict=False)


def _hf_student() -> tuple[torch.nn.Module, Forward]:
    """transformers' HubertModel with the student's encoder (no heads: the HF port drops them)."""
    cfg = HubertConfig(
        num_hidden_layers=2,
        feat_proj_layer_norm=False,
        do_stable_layer_norm=False,
        feat_extract_norm="group",
        conv_bias=False,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )
    model = HubertModel(cfg).eval()
    return model, lambda w, n: model(w, attention_mask=_sample_mask(w, n), output_hidden_states=True)


def _teacher() -> tuple[torch.nn.Module, Forward]:
    model = TeacherModel(TeacherConfig()).eval()
    return model, lambda w, n: model(w, n)


# Illustrative per-layer shapes of a DPWavLM-sp0.75-sized model (23.6M parameters, WavLM Base+
# teacher): CNN channels pruned (the last block keeps 512, as our pruning leaves it), fewer heads and
# FFN units in later layers.
PRUNED_CONV = [[256, 10, 5], [320, 3, 2], [352, 3, 2], [384, 3, 2], [384, 3, 2], [400, 2, 2], [512, 2, 2]]
PRUNED_HEADS = [8, 7, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1]
PRUNED_FFN = [484, 459, 435, 411, 387, 363, 338, 314, 290, 266, 242, 193]


def pruned_model() -> PrunableModel:
    """A WavLM with DPWavLM-sp0.75-like per-layer shapes (random weights; bench/deployment.py too)."""
    config = PrunableConfig(family="wavlm", conv_layers=PRUNED_CONV, layer_ffn_dims=PRUNED_FFN,
                            layer_heads=[list(range(h)) for h in PRUNED_HEADS])
    return PrunableModel(config).eval()


def _pruned() -> tuple[torch.nn.Module, Forward]:
    model = pruned_model()
    return model, lambda w, n: model(w, n)


def _sample_mask(wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return (torch.arange(wavs.shape[1])[None, :] < lengths[:, None]).long()


CANDIDATES: list[Candidate] = [
    Candidate("student (ours, with 3 heads)", _student),
    Candidate("student (ours, layers only)", _student_no_heads),
    Candidate("student (transformers HubertModel, same config)", _hf_student),
    Candidate("pruned WavLM, sp0.75 shapes (ours, DPHuBERT layout)", _pruned),
    Candidate("teacher HuBERT Base size (ours)", _teacher),
]
BASELINE = "student (transformers HubertModel, same config)"
TEACHER = "teacher HuBERT Base size (ours)"


@dataclass
class Result:
    name: str
    threads: int
    params: int
    median_s: float
    peak_mb: float


def _build_and_run(index: int, seconds: float, threads: int) -> None:
    """Child-process body for the memory column: build candidate ``index``, run one forward."""
    torch.set_num_threads(threads)
    _, forward = CANDIDATES[index].build()
    wavs = torch.randn(1, int(seconds * 16000))
    with torch.inference_mode():
        forward(wavs, torch.tensor([wavs.shape[1]]))


def measure(candidates: list[Candidate], seconds: float, threads: int, repeats: int) -> list[Result]:
    """Time every candidate at one thread count. Repeats are interleaved (A B C, A B C, ...) so load
    from other processes on a shared machine hits all rows alike instead of biasing one."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    wavs = torch.randn(1, int(seconds * 16000))
    lengths = torch.tensor([wavs.shape[1]])
    built = [c.build() for c in candidates]
    times: list[list[float]] = [[] for _ in candidates]
    peaks = [peak_memory_mb(_build_and_run, CANDIDATES.index(c), seconds, threads) for c in candidates]
    with torch.inference_mode():
        for _, forward in built:
            forward(wavs, lengths)  # warm-up (allocator, kernels)
        for _ in range(repeats):
            for i, (_, forward) in enumerate(built):
                start = time.perf_counter()
                forward(wavs, lengths)
                times[i].append(time.perf_counter() - start)
    results = [
        Result(c.name, threads, sum(p.numel() for p in model.parameters()), statistics.median(t), peak)
        for c, (model, _), t, peak in zip(candidates, built, times, peaks)
    ]
    del built
    gc.collect()
    return results


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, Python {platform.python_version()}"


def table(results: list[Result], seconds: float, repeats: int) -> str:
    lines = [
        f"Machine: {machine_info()}",
        f"Input: 1 x {seconds:g} s of audio; median of {repeats} forwards after one warm-up; fp32.",
        "Memory: peak RSS growth (/proc VmHWM) while building the model and running one forward,",
        "in a fresh process (weights + activations).",
        "",
        "| model | threads | params (M) | time / forward (ms) | vs transformers student | teacher / this | peak mem (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    by_key = {(r.name, r.threads): r for r in results}
    for r in results:
        base = by_key.get((BASELINE, r.threads))
        teacher = by_key.get((TEACHER, r.threads))
        speed = f"{base.median_s / r.median_s:.2f}x" if base else "-"
        vs_teacher = f"{teacher.median_s / r.median_s:.2f}x" if teacher else "-"
        lines.append(
            f"| {r.name} | {r.threads} | {r.params / 1e6:.2f} | {1000 * r.median_s:.0f} | {speed} | {vs_teacher} | {r.peak_mb:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="*", help="substrings of the row names to run")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be >= 5 (medians of fewer runs are noise)")
    chosen = [c for c in CANDIDATES if not args.only or any(s in c.name for s in args.only)]
    results = [r for t in args.threads for r in measure(chosen, args.seconds, t, args.repeats)]
    print(table(results, args.seconds, args.repeats))


if __name__ == "__main__":
    main()
