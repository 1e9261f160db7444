"""How far corruption moves each layer of a model, against how far apart the speakers are.

Why a speaker probe trained on clean features can collapse under noise even when a student's layers
stay close to their clean selves: the probe separates speakers by the differences between their mean
(pooled) features, and these are small. For each model and layer, on the shipped held-out speech
(46 speakers, 1 s segments; ``robustdistiller/assets/recordings``), this prints

- ``cos``: frame cosine between the layer on corrupted audio and on the same clean audio;
- ``shift``: the root-mean-square distance the corruption moves a segment's pooled (time-averaged)
  feature, divided by ``between``, the spread of the speakers' clean centroids about their grand mean
  (root-mean-square, corrected for the centroids' estimation noise). Near 1 and above, the shift is
  as large as what separates speakers, and a probe trained on clean features falls towards chance;
- ``within``: the root-mean-square spread of the segments about their speaker's centroid, over
  ``between`` (how hard the clean task is already).

Conditions: the four recorded Speech Commands noises (averaged) at 20, 10 and 0 dB; the measured clap
room (RT60 1.04 s). ``--rooms`` adds simulated rooms, to tell whether a student learnt its training
rooms rather than reverberation: the demo recipe's training rooms (``configs/demo.yaml``, direct path
aligned as in training), as many unseen rooms from another seed (aligned), and the same unseen rooms
raw (a real room delays the speech by its direct path; the evaluation's rooms are raw). Segment ``i``
goes through room ``i mod count``. Models are anything ``robustdistiller evaluate --model`` takes (student checkpoints,
teacher folders).

    python bench/invariance.py NAME=PATH [NAME=PATH ...] [--snrs 20 10 0] [--segments 200] [--rooms]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustdistiller.augment.mixing import mix_at_snr, reverberate
from robustdistiller.augment.rir import RIR, RIRBank, RIRBankConfig, load_or_simulate
from robustdistiller.config import from_dict, load_yaml
from robustdistiller.data.audio import SAMPLE_RATE, load_audio
from robustdistiller.data.recordings import RECORDINGS_DIR, read_index
from robustdistiller.evaluate.models import ModelUnderTest, load_model_under_test
from robustdistiller.models.precision import cpu_model
from robustdistiller.train.recipe import resolve_recipe

SEGMENT = SAMPLE_RATE  # 1 s, as the demo's speaker tasks
UNSEEN_ROOM_SEED = 4242  # any seed but the demo recipe's


def held_out_segments(limit: int) -> tuple[torch.Tensor, np.ndarray]:
    """Up to ``limit`` 1 s segments of the held-out speakers, spread evenly over them: ``[N, 16000]``, speaker ids."""
    wavs, speakers = [], []
    for rec in (r for r in read_index(RECORDINGS_DIR) if r.role == "heldout"):
        audio = load_audio(RECORDINGS_DIR / rec.path)
        for k in range(len(audio) // SEGMENT):
            wavs.append(torch.from_numpy(audio[k * SEGMENT : (k + 1) * SEGMENT]).float())
            speakers.append(rec.speaker)
    pick = np.linspace(0, len(wavs) - 1, min(limit, len(wavs))).round().astype(int)
    return torch.stack([wavs[i] for i in pick]), np.array([speakers[i] for i in pick])


def shipped_recordings(role: str) -> list[torch.Tensor]:
    """The shipped recordings of one role (``noise``, ``rir``, ...; ``assets/recordings/index.tsv``), float32."""
    return [
        torch.from_numpy(load_audio(RECORDINGS_DIR / r.path)).float()
        for r in read_index(RECORDINGS_DIR)
        if r.role == role
    ]


def corruptions(wavs: torch.Tensor, snrs: Sequence[float]) -> dict[str, list[torch.Tensor]]:
    """Condition name -> corrupted copies of ``wavs`` (one per noise recording; one for the room)."""
    lengths = torch.full((len(wavs),), wavs.shape[1])
    rng = torch.Generator().manual_seed(0)
    noises = shipped_recordings("noise")
    out: dict[str, list[torch.Tensor]] = {}
    for snr in snrs:
        out[f"noise {snr:g} dB"] = []
        for noise in noises:
            starts = torch.randint(0, len(noise) - wavs.shape[1], (len(wavs),), generator=rng)
            cuts = torch.stack([noise[s : s + wavs.shape[1]] for s in starts.tolist()])
            out[f"noise {snr:g} dB"].append(mix_at_snr(wavs, cuts, lengths, torch.full((len(wavs),), float(snr))))
    rir = shipped_recordings("rir")[0]
    rirs = rir.expand(len(wavs), -1).contiguous()
    out["clap room"] = [reverberate(wavs, lengths, rirs, torch.full((len(wavs),), len(rir)))]
    return out


def room_corruptions(wavs: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """The demo recipe's training rooms vs as many unseen ones (aligned, and raw)."""
    cfg = from_dict(RIRBankConfig, load_yaml(resolve_recipe("demo"))["corruption"]["rir"])
    unseen = dataclasses.replace(cfg.simulate_rirs, seed=UNSEEN_ROOM_SEED)
    banks = {
        "training rooms": RIRBank(rirs=load_or_simulate(cfg.simulate_rirs), align_direct_path=True),
        "unseen rooms": RIRBank(rirs=load_or_simulate(unseen), align_direct_path=True),
        "unseen rooms, raw": RIRBank(rirs=load_or_simulate(unseen)),
    }
    rng = np.random.default_rng(0)  # unused: simulated rooms are single-channel
    return {name: [_through_rooms(wavs, [bank.get(i, rng) for i in range(len(bank))])] for name, bank in banks.items()}


def _through_rooms(wavs: torch.Tensor, rooms: Sequence[RIR]) -> torch.Tensor:
    rirs = [torch.from_numpy(rooms[i % len(rooms)].samples) for i in range(len(wavs))]
    padded = torch.nn.utils.rnn.pad_sequence(rirs, batch_first=True)
    lengths = torch.full((len(wavs),), wavs.shape[1])
    return reverberate(wavs, lengths, padded, torch.tensor([len(r) for r in rirs]))


def hidden_states(model: ModelUnderTest, wavs: torch.Tensor, batch: int = 32) -> list[torch.Tensor]:
    """Every hidden state of ``model`` on ``wavs``: per layer ``[N, T, D]`` float32."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(wavs), batch):
            x = wavs[start : start + batch]
            chunks.append([h.float() for h in model.model.extract(x, torch.full((len(x),), x.shape[1]))])
    return [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def speaker_geometry(pooled: np.ndarray, speakers: np.ndarray) -> tuple[float, float]:
    """(between, within), root-mean-square: the spread of the speakers' true centroids about their
    grand mean, and of the segments about their own speaker's centroid.

    A centroid estimated from n segments sits sigma^2 / n (squared) from the true one, which would
    inflate ``between`` when speakers have few segments; that expected excess is subtracted."""
    ids = np.unique(speakers)
    groups = [pooled[speakers == s] for s in ids]
    centroids = np.stack([g.mean(0) for g in groups])
    # unbiased per-speaker variance (summed over dimensions); a single-segment speaker contributes none
    variances = [((g - g.mean(0)) ** 2).sum(1).sum() / max(len(g) - 1, 1) for g in groups]
    spread = ((centroids - centroids.mean(0)) ** 2).sum(1).mean()
    excess = np.mean([v / len(g) for v, g in zip(variances, groups)])
    return float(np.sqrt(max(spread - excess, 1e-12))), float(np.sqrt(np.mean(variances)))


def layer_rows(
    name: str,
    model: ModelUnderTest,
    wavs: torch.Tensor,
    speakers: np.ndarray,
    conditions: dict[str, list[torch.Tensor]],
) -> list[list[str]]:
    """One table row per hidden state of ``model``: within/between, then cos and shift/between per condition."""
    clean = hidden_states(model, wavs)
    corrupted = {c: [hidden_states(model, x) for x in copies] for c, copies in conditions.items()}
    rows = []
    for layer, h in enumerate(clean):
        pooled = h.mean(1).numpy()
        between, within = speaker_geometry(pooled, speakers)
        cells = [name, model.layer_names[layer], f"{within / between:.2f}"]
        for copies in corrupted.values():
            cos = np.mean([F.cosine_similarity(c[layer], h, dim=-1).mean().item() for c in copies])
            shift = np.sqrt(np.mean([((c[layer].mean(1).numpy() - pooled) ** 2).sum(1).mean() for c in copies]))
            cells.append(f"{cos:.3f} / {shift / between:.2f}")
        rows.append(cells)
    return rows


def named_models(parser: argparse.ArgumentParser, specs: Sequence[str]) -> Iterator[tuple[str, ModelUnderTest]]:
    """``NAME=PATH`` arguments -> (name, loaded model), one at a time (a bad spec stops the script)."""
    for spec in specs:
        name, _, path = spec.partition("=")
        if not path or not Path(path).exists():
            parser.error(f"{spec!r}: expected NAME=PATH with an existing PATH")
        yield name, load_model_under_test(path, name)


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="NAME=PATH: a student checkpoint or a teacher folder")
    parser.add_argument("--snrs", type=float, nargs="+", default=[20.0, 10.0, 0.0])
    parser.add_argument("--segments", type=int, default=10_000, help="at most this many held-out 1 s segments")
    parser.add_argument("--rooms", action="store_true", help="add the demo's training rooms vs unseen rooms")
    args = parser.parse_args(argv)
    wavs, speakers = held_out_segments(args.segments)
    conditions = corruptions(wavs, args.snrs)
    if args.rooms:
        conditions |= room_corruptions(wavs)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s); "
        f"{len(wavs)} segments of {len(np.unique(speakers))} speakers"
    )
    rows = []
    for name, model in named_models(parser, args.models):
        rows += layer_rows(name, model, wavs, speakers, conditions)
    header = ["model", "layer", "within / between", *(f"{c}: cos / shift" for c in conditions)]
    print(markdown(header, rows))


if __name__ == "__main__":
    main()
