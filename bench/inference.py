"""CPU inference speed and memory of the student against its competitors, in fp32 and bf16.

Rows: our DistilHuBERT student, transformers' ``HubertModel`` with the identical 2-layer config
(what users get from the HF DistilHuBERT port), a pruned DPWavLM-shaped model and a
HuBERT-Base-sized teacher built from our blocks, each also under CPU bf16 autocast (the
``--precision bf16`` path: matrix products and the CNN's convolutions-as-matrix-products on the
AMX / AVX512-BF16 units), plus the CNN front end alone. All random weights (speed does not depend
on values). Each row gives its achieved GFLOP/s and the fraction of the GEMM peak of its precision
(``bench/hardware.py``), next to the time ratios against transformers and the teacher. Then the
accuracy of bf16 against fp32: per-layer frame cosine on padded synthetic speech, and (when
``../shared/data/fsdd`` exists) FSDD digit probe accuracy from fp32 and bf16 features.

    python bench/inference.py                  # 10 s of audio, 1 and 2 threads, median of 7
    python bench/inference.py --seconds 5 --repeats 5 --threads 1 --no-probe

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
from hardware import GEMM_GFLOP, GEMM_SIZE, cpu_line, forward_gflop, gemm_runners, median_seconds  # noqa: E402 - bench/ is on sys.path

# imported up front so that its import-time memory is not charged to the transformers row
from transformers import HubertConfig, HubertModel

import robustdistiller
from robustdistiller.data.report import BadFileReport
from robustdistiller.evaluate.efficiency import peak_memory_mb
from robustdistiller.evaluate.probes import evaluate_probe, extract_features, train_probe
from robustdistiller.evaluate.tasks import fsdd_tasks, load_waveforms
from robustdistiller.models import DistillerConfig, DistillerModel, TeacherConfig, TeacherModel
from robustdistiller.models.precision import accuracy_batch, autocast, layer_cosines
from robustdistiller.models.pruning import PrunableConfig, PrunableModel
from robustdistiller.models.teacher import Teacher, bundled_teacher

Forward = Callable[[torch.Tensor, torch.Tensor], object]


@dataclass
class Candidate:
    name: str
    build: Callable[[], tuple[torch.nn.Module, Forward]]
    """Returns the model (for the parameter and FLOP counts) and a ``forward(wavs, lengths)`` closure."""
    precision: str = "fp32"
    """"bf16": the forward runs under CPU bf16 autocast (what ``precision="bf16"`` does)."""

    def forward(self, built: Forward) -> Forward:
        if self.precision == "fp32":
            return built

        def run(wavs: torch.Tensor, lengths: torch.Tensor) -> object:
            with autocast(self.precision):
                return built(wavs, lengths)

        return run


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
    config = PrunableConfig(
        family="wavlm",
        conv_layers=PRUNED_CONV,
        layer_ffn_dims=PRUNED_FFN,
        layer_heads=[list(range(h)) for h in PRUNED_HEADS],
    )
    return PrunableModel(config).eval()


def _pruned() -> tuple[torch.nn.Module, Forward]:
    model = pruned_model()
    return model, lambda w, n: model(w, n)


def _cnn() -> tuple[torch.nn.Module, Forward]:
    """The student's CNN front end alone (the same seven convolutions as the teacher's)."""
    cnn = DistillerModel(DistillerConfig()).eval().feature_extractor
    return cnn, lambda w, n: cnn(w, n)


def _sample_mask(wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return (torch.arange(wavs.shape[1])[None, :] < lengths[:, None]).long()


CANDIDATES: list[Candidate] = [
    Candidate("CNN front end (ours)", _cnn),
    Candidate("CNN front end (ours)", _cnn, "bf16"),
    Candidate("student (ours, with 3 heads)", _student),
    Candidate("student (ours, with 3 heads)", _student, "bf16"),
    Candidate("student (ours, layers only)", _student_no_heads),
    Candidate("student (transformers HubertModel, same config)", _hf_student),
    Candidate("pruned WavLM, sp0.75 shapes (ours, DPHuBERT layout)", _pruned),
    Candidate("pruned WavLM, sp0.75 shapes (ours, DPHuBERT layout)", _pruned, "bf16"),
    Candidate("teacher HuBERT Base size (ours)", _teacher),
    Candidate("teacher HuBERT Base size (ours)", _teacher, "bf16"),
]
BASELINE = "student (transformers HubertModel, same config)"
TEACHER = "teacher HuBERT Base size (ours)"


@dataclass
class Result:
    name: str
    precision: str
    threads: int
    params: int
    gflop: float
    median_s: float
    peak_mb: float


def _build_and_run(index: int, seconds: float, threads: int) -> None:
    """Child-process body for the memory column: build candidate ``index``, run one forward."""
    torch.set_num_threads(threads)
    candidate = CANDIDATES[index]
    forward = candidate.forward(candidate.build()[1])
    wavs = torch.randn(1, int(seconds * 16000))
    with torch.inference_mode():
        forward(wavs, torch.tensor([wavs.shape[1]]))


def measure(
    candidates: list[Candidate], seconds: float, threads: int, repeats: int
) -> tuple[list[Result], dict[str, float]]:
    """Time every candidate at one thread count. Repeats are interleaved (A B C, A B C, ...) so load
    from other processes on a shared machine hits all rows alike instead of biasing one; the GEMM
    peaks (GFLOP/s per precision, also returned) are timed in the same rounds."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    wavs = torch.randn(1, int(seconds * 16000))
    lengths = torch.tensor([wavs.shape[1]])
    built = [c.build() for c in candidates]
    forwards = [c.forward(forward) for c, (_, forward) in zip(candidates, built)]
    times: list[list[float]] = [[] for _ in candidates]
    memory = [peak_memory_mb(_build_and_run, CANDIDATES.index(c), seconds, threads) for c in candidates]
    flops = [forward_gflop(forward, seconds) for _, forward in built]  # the fp32 count: same work in bf16
    gemms = gemm_runners(threads)
    gemm_times: dict[str, list[float]] = {name: [] for name in gemms}
    with torch.inference_mode():
        for forward in forwards:
            forward(wavs, lengths)  # warm-up (allocator, kernels)
        for _ in range(repeats):
            for i, forward in enumerate(forwards):
                start = time.perf_counter()
                forward(wavs, lengths)
                times[i].append(time.perf_counter() - start)
            for name, run in gemms.items():  # the peaks, under the same load as the rows
                gemm_times[name].append(median_seconds(run, repeats=1))
    results = [
        Result(
            c.name, c.precision, threads, sum(p.numel() for p in model.parameters()), gflop, statistics.median(t), peak
        )
        for c, (model, _), gflop, t, peak in zip(candidates, built, flops, times, memory)
    ]
    del built
    gc.collect()
    return results, {name: GEMM_GFLOP / statistics.median(t) for name, t in gemm_times.items()}


def machine_info() -> str:
    return f"{cpu_line()}; {os.cpu_count()} logical CPUs, torch {torch.__version__}, Python {platform.python_version()}"


def table(results: list[Result], seconds: float, repeats: int, peaks: dict[int, dict[str, float]]) -> str:
    lines = [
        f"Machine: {machine_info()}",
        f"Input: 1 x {seconds:g} s of audio; median of {repeats} forwards after one warm-up, rows interleaved.",
        "Memory: peak RSS growth (/proc VmHWM) while building the model and running one forward,",
        "in a fresh process (weights + activations). GFLOP as torch's FlopCounterMode counts the fp32 forward;",
        "% of peak = achieved GFLOP/s over the GEMM peak of the row's precision at that thread count.",
        "",
        "| model | precision | threads | params (M) | GFLOP | time / forward (ms) | GFLOP/s | % of peak "
        "| fp32 / this | vs transformers student | teacher fp32 / this | peak mem (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r.name, r.precision, r.threads): r for r in results}
    for r in results:
        base = by_key.get((BASELINE, "fp32", r.threads))
        teacher = by_key.get((TEACHER, "fp32", r.threads))
        own = by_key.get((r.name, "fp32", r.threads))
        rate = r.gflop / r.median_s
        lines.append(
            f"| {r.name} | {r.precision} | {r.threads} | {r.params / 1e6:.2f} | {r.gflop:.1f} | {1000 * r.median_s:.0f} "
            f"| {rate:.0f} | {100 * rate / peaks[r.threads][r.precision]:.0f} % | {_ratio(own, r)} | {_ratio(base, r)} "
            f"| {_ratio(teacher, r)} | {r.peak_mb:.0f} |"
        )
    return "\n".join(lines)


def _ratio(reference: Result | None, r: Result) -> str:
    return f"{reference.median_s / r.median_s:.2f}x" if reference else "-"


def cosine_rows() -> list[str]:
    """bf16 vs fp32, per-layer mean frame cosine on padded synthetic speech (random weights)."""
    torch.manual_seed(0)
    models = {
        "student (ours, with 3 heads)": DistillerModel(DistillerConfig()).eval(),
        "pruned WavLM, sp0.75 shapes": pruned_model(),
        "teacher HuBERT Base size": Teacher(TeacherModel(TeacherConfig()).eval(), "random weights"),
    }
    wavs, lengths = accuracy_batch()
    lines = ["| model | min layer cosine | per layer |", "|---|---|---|"]
    for name, model in models.items():
        cosines = layer_cosines(model, wavs, lengths, "bf16")
        lines.append(f"| {name} | {min(cosines):.5f} | {' '.join(f'{c:.5f}' for c in cosines)} |")
    return lines


def fsdd_probe_rows(root: Path, threads: int, max_train: int = 1000) -> list[str]:
    """FSDD digit accuracy of a linear weighted-layer-sum probe on fp32 and on bf16 features of two
    models: the random-weight student (this table's speed rows) and the shipped pre-trained mini
    teacher (``assets/teachers/hubert_mini``), whose trained weights give the features real structure,
    so a precision loss that matters to a downstream task would show there first.
    """
    torch.set_num_threads(threads)
    pack = fsdd_tasks(root)[0].subset(max_train=max_train, max_val=max_train // 6, max_test=max_train // 2)
    report = BadFileReport()
    audio = load_waveforms(pack.items(), report)
    labels = {split: [i.label for i in items] for split, items in pack.splits().items()}
    torch.manual_seed(0)
    models = {
        "student (random weights)": DistillerModel(DistillerConfig()).eval(),
        "shipped hubert_mini teacher (pre-trained)": robustdistiller.load(bundled_teacher()),
    }
    lines = ["| model | precision | test accuracy | test utterances | extraction (s) |", "|---|---|---|---|---|"]
    for name, model in models.items():
        for precision in ("fp32", "bf16"):
            model.precision = precision
            start = time.perf_counter()
            feats = {
                split: extract_features(model, [torch.from_numpy(audio[i.uid]) for i in items])
                for split, items in pack.splits().items()
            }
            spent = time.perf_counter() - start
            probe = train_probe(
                feats["train"], labels["train"], feats["val"], labels["val"], num_classes=len(pack.classes), seed=0
            )
            result = evaluate_probe(probe, feats["test"], labels["test"])
            lines.append(f"| {name} | {precision} | {result['accuracy']:.4f} | {result['n']} | {spent:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="*", help="substrings of the row names to run")
    parser.add_argument("--no-probe", action="store_true", help="skip the FSDD probe accuracy (minutes)")
    parser.add_argument(
        "--probe-train", type=int, default=1000, help="FSDD training utterances (validation = 1/6, test = 1/2 of it)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[1].parent / "shared" / "data",
        help="the shared real-audio folder (default ../shared/data)",
    )
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be >= 5 (medians of fewer runs are noise)")
    chosen = [c for c in CANDIDATES if not args.only or any(s in c.name for s in args.only)]
    results: list[Result] = []
    peaks: dict[int, dict[str, float]] = {}
    for threads in args.threads:
        rows, peaks[threads] = measure(chosen, args.seconds, threads, args.repeats)
        results.extend(rows)
    print(
        f"GEMM peaks ({GEMM_SIZE}^3, timed interleaved with the rows; fp32 / bf16 torch, int8 onnxruntime): "
        + "; ".join(
            f"{t} thread(s): " + ", ".join(f"{k} {v:.0f}" for k, v in p.items()) + " GFLOP/s" for t, p in peaks.items()
        )
        + "\n"
    )
    print(table(results, args.seconds, args.repeats, peaks))
    print("\nbf16 vs fp32, per-layer mean frame cosine (3 padded synthetic-speech utterances, 4 / 2.5 / 1 s):")
    print("\n".join(cosine_rows()))
    fsdd = args.data / "fsdd"
    if args.no_probe:
        return
    if not fsdd.is_dir():
        print(f"\nFSDD probe skipped: {fsdd} not found")
        return
    print(f"\nFSDD digits ({fsdd}), linear probe on all hidden states, {max(args.threads)} threads:")
    print("\n".join(fsdd_probe_rows(fsdd, max(args.threads), args.probe_train)))


if __name__ == "__main__":
    main()
