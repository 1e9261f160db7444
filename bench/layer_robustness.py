"""Which layer of a model a clean-trained probe should read under noise and rooms, layer by layer.

The evaluation's SUPERB-style probe learns one weighted sum of all hidden states on *clean* features,
so it reads whichever layers separate the classes best on clean audio, robust or not. This script
trains one linear probe per hidden state instead (mean-pooled frames standardised with the training
split's statistics, with ``bench/teacher_probe.py``'s probe; trained on clean audio, best epoch by clean
validation accuracy) and tests each under:

- ``clean``;
- ``noise 10 dB``: the four recorded Speech Commands noises of the shipped recordings, one per
  utterance in turn, at 10 dB;
- ``rooms``: 16 shoebox rooms simulated from a seed no recipe trains on (RT60 0.2-1.2 s), raw (with
  their direct-path delay, as a real room), one per utterance in turn, plus the measured clap room
  for every fourth utterance.

For each layer it prints the test accuracy and the *drop above chance*,
``1 - (corrupted - chance) / (clean - chance)``. Task: FSDD spoken digits (``../shared/data/fsdd``,
takes 0-4 = test; the miniature benchmark's subset: 500 training and 150 validation utterances) or
FSDD speakers. Models: anything ``robustdistiller evaluate --model`` takes.

    python bench/layer_robustness.py NAME=PATH [NAME=PATH ...] [--task fsdd-digit] [--fsdd ../shared/data/fsdd]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from invariance import markdown, named_models, shipped_recordings  # bench/ is on sys.path when run as a script
from teacher_probe import labelled, layer_of, layer_probe, pooled_layers, standardised
from torch import Tensor

from robustdistiller.augment.mixing import mix_at_snr, reverberate
from robustdistiller.augment.rir import SimulatedRIRConfig, load_or_simulate
from robustdistiller.data import BadFileReport
from robustdistiller.evaluate.probes import evaluate_probe
from robustdistiller.evaluate.results import drop_above_chance
from robustdistiller.evaluate.tasks import TaskPack, fsdd_tasks, load_waveforms
from robustdistiller.models.precision import cpu_model

DEFAULT_FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fsdd"
LIMITS = (500, 150, 0)  # train, validation, test (0 = all): bench/miniature.py's FSDD subset
ROOM_SEED = 5151  # not the demo's training rooms (seed 0), nor its evaluation rooms
SNR_DB = 10.0


def corrupted_copies(wavs: Sequence[Tensor]) -> dict[str, list[Tensor]]:
    """Condition -> one corrupted copy of each utterance (noises and rooms taken in turn)."""
    rng = torch.Generator().manual_seed(0)
    noises = shipped_recordings("noise")
    clap = shipped_recordings("rir")[0]
    rooms = [torch.from_numpy(r.samples) for r in load_or_simulate(SimulatedRIRConfig(count=16, seed=ROOM_SEED))]
    noisy, reverberant = [], []
    for i, wav in enumerate(wavs):
        x, n = wav[None], torch.tensor([len(wav)])
        noise = noises[i % len(noises)]
        start = int(torch.randint(0, len(noise) - len(wav), (1,), generator=rng))
        noisy.append(mix_at_snr(x, noise[None, start : start + len(wav)], n, torch.tensor([SNR_DB]))[0])
        room = clap if i % 4 == 3 else rooms[i % len(rooms)]
        reverberant.append(reverberate(x, n, room[None], torch.tensor([len(room)]))[0])
    return {"clean": list(wavs), f"noise {SNR_DB:g} dB": noisy, "rooms": reverberant}


def layer_rows(name: str, task: TaskPack, feats: dict[str, dict[str, Tensor]], chance: float) -> list[list[str]]:
    """One row per hidden state: clean accuracy, then accuracy and drop above chance per condition."""
    train, val = labelled(task.train, feats["clean"]), labelled(task.val, feats["clean"])
    tests = {condition: labelled(task.test, source) for condition, source in feats.items()}
    train_x, val_x, *test_xs = standardised(train[0], val[0], *(x for x, _ in tests.values()))
    tests = {condition: (x, y) for (condition, (_, y)), x in zip(tests.items(), test_xs)}
    rows = []
    for layer in range(train_x[0].shape[0]):
        probe = layer_probe((train_x, train[1]), (val_x, val[1]), layer, len(task.classes), seed=0)
        accuracy = {c: float(evaluate_probe(probe, layer_of(x, layer), y)["accuracy"]) for c, (x, y) in tests.items()}
        cells = [name, str(layer), f"{accuracy['clean']:.3f}"]
        for condition, value in accuracy.items():
            if condition != "clean":
                drop = drop_above_chance(accuracy["clean"], value, chance)
                cells.append(f"{value:.3f} / " + ("-" if drop is None else f"{drop:.2f}"))
        rows.append(cells)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="NAME=PATH: a student checkpoint or a teacher folder")
    parser.add_argument("--task", choices=["fsdd-digit", "fsdd-speaker"], default="fsdd-digit")
    parser.add_argument("--fsdd", type=Path, default=DEFAULT_FSDD)
    args = parser.parse_args(argv)
    if not args.fsdd.is_dir():
        parser.error(f"--fsdd {args.fsdd}: not a folder (the FSDD recordings of ../shared/data)")
    task = next(t for t in fsdd_tasks(args.fsdd, seed=0) if t.name == args.task).subset(*LIMITS, seed=0)
    audio = load_waveforms(task.items(), BadFileReport())
    uids = list(audio)
    copies = corrupted_copies([torch.from_numpy(audio[u]) for u in uids])
    labels = np.array([int(i.label) for i in task.test])
    chance = float(np.bincount(labels).max() / len(labels))  # always answering the most frequent class
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s); task {task.name}: "
        f"{len(task.train)} / {len(task.val)} / {len(task.test)} utterances, chance {chance:.3f}"
    )
    rows = []
    for name, entry in named_models(parser, args.models):
        feats = {c: dict(zip(uids, pooled_layers(entry.model, wavs))) for c, wavs in copies.items()}
        rows += layer_rows(name, task, feats, chance)
    header = ["model", "hidden state", "clean", *(f"{c}: acc. / drop" for c in copies if c != "clean")]
    print(markdown(header, rows))


if __name__ == "__main__":
    main()
