"""Does a pre-trained teacher know speech? Linear probes on held-out real recordings (FSDD).

Tasks: FSDD spoken-digit recognition (a word task) and speaker identification; takes 0-4 of every
digit and speaker are the test split (FSDD's convention), validation is carved from the rest.
Models: the teacher under test, the random HuBERT-shaped teacher the demo used before
(``robustdistiller demo --random-teacher``; same seed), and 39-dim MFCC frames as the feature
baseline. Each hidden state gets its own linear probe on mean-pooled frames, standardised with
the training split's statistics (the project's ``train_probe`` on pooled [1, 1, D] features: for a
linear probe, pooling first is the same model); the layer with the best validation accuracy is
reported with its test accuracy.

    python bench/teacher_probe.py --teacher robustdistiller/assets/teachers/hubert_mini \\
        [--fsdd ../shared/data/fsdd] [--card robustdistiller/assets/teachers/hubert_mini/README.md]

``--card`` writes the table into the model card between its ``<!-- probes -->`` markers.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robustdistiller.atomic import atomic_write
from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.data import BadFileReport
from robustdistiller.data.features import mfcc_frames
from robustdistiller.demo import make_random_teacher
from robustdistiller.evaluate.probes import TrainedProbe, evaluate_probe, extract_features, train_probe
from robustdistiller.evaluate.tasks import TaskItem, TaskPack, fsdd_tasks, load_waveforms
from robustdistiller.train.pretrain import PROBES_END, PROBES_START

DEFAULT_FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fsdd"
RANDOM_TEACHER_SEED = 0  # the demo's default seed
TASKS = ("fsdd-digit", "fsdd-speaker")


@dataclass
class ProbeResult:
    model: str
    task: str
    best_layer: str
    val_accuracy: float
    test_accuracy: float


def pooled_layers(model: torch.nn.Module, wavs: Sequence[Tensor]) -> list[Tensor]:
    """Per utterance ``[layers, 1, D]``: every hidden state of ``model``, mean-pooled."""
    return [f.float().mean(dim=1, keepdim=True) for f in extract_features(model, wavs, batch_size=16)]


def pooled_teacher_layers(source: str | Path, wavs: Sequence[Tensor]) -> list[Tensor]:
    """:func:`pooled_layers` of the teacher at ``source``."""
    return pooled_layers(load_teacher(source), wavs)


def pooled_mfcc(wavs: Sequence[Tensor]) -> list[Tensor]:
    """Per utterance, (1, 1, 39): the MFCC frames the k-means targets start from, mean-pooled."""
    return [torch.from_numpy(mfcc_frames(w.numpy())).mean(dim=0)[None, None] for w in wavs]


def labelled(items: Sequence[TaskItem], feats: dict[str, Tensor]) -> tuple[list[Tensor], list[int]]:
    """The features and labels of the ``items`` that have features (unreadable files have none)."""
    kept = [i for i in items if i.uid in feats]
    return [feats[i.uid] for i in kept], [int(i.label) for i in kept]


def standardised(train_x: list[Tensor], *others: list[Tensor]) -> list[list[Tensor]]:
    """Every split standardised per dimension with the *training* split's statistics, so every feature
    type meets the same well-conditioned linear probe (raw MFCC and LayerNorm outputs differ in scale by 100x)."""
    stacked = torch.stack(train_x)
    mean, std = stacked.mean(dim=0), stacked.std(dim=0).clamp_min(1e-5)
    return [[(x - mean) / std for x in xs] for xs in (train_x, *others)]


def layer_of(xs: list[Tensor], layer: int) -> list[Tensor]:
    return [x[layer : layer + 1] for x in xs]


def layer_probe(
    train: tuple[list[Tensor], list[int]], val: tuple[list[Tensor], list[int]], layer: int, num_classes: int, seed: int
) -> TrainedProbe:
    """A linear probe on hidden state ``layer`` of (standardised) pooled features, best epoch by validation."""
    (train_x, train_y), (val_x, val_y) = train, val
    return train_probe(
        layer_of(train_x, layer), train_y, layer_of(val_x, layer), val_y,
        num_classes=num_classes, epochs=60, patience=10, lr=3e-3, seed=seed,
    )  # fmt: skip


def best_layer_probe(model: str, task: TaskPack, feats: dict[str, Tensor], seed: int) -> ProbeResult:
    """One linear probe per layer; the layer with the best validation accuracy, and its test accuracy."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (
        labelled(s, feats) for s in (task.train, task.val, task.test)
    )
    train_x, val_x, test_x = standardised(train_x, val_x, test_x)
    best: ProbeResult | None = None
    for layer in range(train_x[0].shape[0]):
        probe = layer_probe((train_x, train_y), (val_x, val_y), layer, len(task.classes), seed)
        test = float(evaluate_probe(probe, layer_of(test_x, layer), test_y)["accuracy"])
        name = "mfcc" if model == "MFCC" else str(layer)
        if best is None or probe.val_metric > best.val_accuracy:
            best = ProbeResult(model, task.name, name, probe.val_metric, test)
    assert best is not None
    return best


def run(teacher: Path, fsdd: Path, seed: int, names: Sequence[str]) -> tuple[list[ProbeResult], float]:
    start = time.perf_counter()
    tasks = [t for t in fsdd_tasks(fsdd, seed=seed) if t.name in names]
    report = BadFileReport()
    audio = load_waveforms(tasks[0].items(), report)
    uids = list(audio)
    wavs = [torch.from_numpy(audio[u]) for u in uids]
    with tempfile.TemporaryDirectory() as tmp:
        random_teacher = make_random_teacher(Path(tmp) / "random_teacher", RANDOM_TEACHER_SEED)
        models: dict[str, Callable[[], list[Tensor]]] = {
            f"{teacher.name} (pre-trained)": lambda: pooled_teacher_layers(teacher, wavs),
            "random demo teacher": lambda: pooled_teacher_layers(random_teacher, wavs),
            "MFCC": lambda: pooled_mfcc(wavs),
        }
        results = []
        for name, features in models.items():
            feats = dict(zip(uids, features()))
            results.extend(best_layer_probe(name, task, feats, seed) for task in tasks)
    return results, time.perf_counter() - start


def table(results: list[ProbeResult]) -> str:
    lines = [
        "| features | task | best layer (by validation) | validation accuracy | test accuracy |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.model} | {r.task} | {r.best_layer} | {r.val_accuracy:.3f} | {r.test_accuracy:.3f} |")
    return "\n".join(lines)


def write_card(card: Path, text: str) -> None:
    """Replace the text between the card's probe markers with ``text``."""
    content = card.read_text(encoding="utf-8")
    if PROBES_START not in content or PROBES_END not in content:
        raise ValueError(f"{card}: no {PROBES_START} ... {PROBES_END} markers to write the probe table between")
    head, rest = content.split(PROBES_START, 1)
    tail = rest.split(PROBES_END, 1)[1]
    new = f"{head}{PROBES_START}\n{text}\n{PROBES_END}{tail}"
    atomic_write(card, lambda fh: fh.write(new.encode("utf-8")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="Hugging Face folder of the teacher")
    parser.add_argument("--fsdd", type=Path, default=DEFAULT_FSDD, help="FSDD recordings folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--card", type=Path, help="model card to write the table into")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="FSDD tasks to probe")
    args = parser.parse_args()
    if not args.fsdd.is_dir():
        raise SystemExit(f"FSDD folder not found: {args.fsdd} (give --fsdd)")
    results, seconds = run(args.teacher, args.fsdd, args.seed, args.tasks)
    text = (
        f"{table(results)}\n\nLinear probes on mean-pooled, standardised hidden states, FSDD (takes 0-4 = "
        f"test), seed "
        f"{args.seed}; layer i = hidden state i (0 = the input of layer 1, after the positional conv); "
        f"`python bench/teacher_probe.py --teacher <folder> --tasks {' '.join(args.tasks)}` ({seconds / 60:.1f} min on "
        f"{platform.machine()}, {torch.get_num_threads()} torch thread(s))."
    )
    print(text)
    if args.card is not None:
        write_card(args.card, text)
        print(f"written into {args.card}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
