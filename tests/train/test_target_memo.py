"""The teacher-target memo: a run given it takes, bitwise, the targets an earlier run computed over
the same clean batch, and nothing else; the demo's robust student trains exactly as without it."""

from __future__ import annotations

from pathlib import Path

import torch
from test_trainer import ROBUST

from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.train.distillation import distill
from robustdistiller.train.targets import TargetMemo, teacher_targets


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    lengths = torch.tensor([8000, 6000])
    return torch.randn(2, 8000) * (torch.arange(8000) < lengths[:, None]), lengths


def test_a_stored_batch_is_served_only_for_the_same_audio_teacher_layers_and_frames(tiny_teacher: Path) -> None:
    teacher = load_teacher(tiny_teacher)
    wavs, lengths = _batch()
    frames = int(teacher.frame_lengths(lengths.max().unsqueeze(0)))
    memo = TargetMemo()
    first = memo.targets(teacher, wavs, lengths, [1, 3], frames)
    assert torch.equal(first, teacher_targets(teacher, wavs, lengths, [1, 3], frames))
    assert (memo.hits, memo.misses, len(memo)) == (0, 1, 1) and memo.stored_bytes == first.numel() * 4

    # Anything the targets depend on, changed: the teacher runs (and the first entry stays).
    changed = wavs.clone()
    changed[1, 100] += 1e-3
    other_teacher = load_teacher(tiny_teacher)
    with torch.no_grad():
        next(other_teacher.parameters()).add_(1e-3)
    for args in (
        (teacher, changed, lengths, [1, 3], frames),
        (teacher, wavs, torch.tensor([8000, 5999]), [1, 3], frames),
        (teacher, wavs, lengths, [1, 2], frames),
        (teacher, wavs, lengths, [1, 3], frames + 1),
        (other_teacher, wavs, lengths, [1, 3], frames),
    ):
        memo.targets(*args)
    assert (memo.hits, memo.misses) == (0, 6)

    # The same batch again: the stored tensor, which stays for a later run over the batch.
    assert memo.targets(teacher, wavs, lengths, [1, 3], frames) is first
    assert memo.targets(teacher, wavs, lengths, [1, 3], frames) is first
    assert (memo.hits, memo.misses) == (2, 6)
    memo.clear()
    assert (len(memo), memo.stored_bytes) == (0, 0)
    memo.targets(teacher, wavs, lengths, [1, 3], frames)
    assert (memo.hits, memo.misses) == (2, 7)


def test_a_full_memo_stores_nothing_more(tiny_teacher: Path) -> None:
    teacher = load_teacher(tiny_teacher)
    wavs, lengths = _batch()
    frames = int(teacher.frame_lengths(lengths.max().unsqueeze(0)))
    memo = TargetMemo(max_bytes=100)  # less than one batch's targets
    memo.targets(teacher, wavs, lengths, [1], frames)
    memo.targets(teacher, wavs, lengths, [1], frames)
    assert (memo.hits, memo.misses, len(memo), memo.stored_bytes) == (0, 2, 0, 0)


def test_the_robust_student_takes_every_target_from_the_baseline_and_trains_as_without(make_recipe) -> None:
    # The demo's pairing: both runs draw the same clean crops (same manifest, data seed, crop length),
    # the corruption is planned from its own generator, so every batch of the robust run is a hit.
    memo = TargetMemo()
    distill(make_recipe("optim.total_steps=6", out="baseline"), memo=memo)
    # 16 short utterances, 4 per batch, most shorter than the crop: the baseline may draw a batch twice.
    stored, computed = len(memo), memo.misses
    assert memo.hits + computed == 6 and stored == computed
    hits = memo.hits
    shared = distill(make_recipe(*ROBUST, "optim.total_steps=6", out="shared"), memo=memo)
    assert (memo.hits - hits, memo.misses, len(memo)) == (6, computed, stored)
    alone = distill(make_recipe(*ROBUST, "optim.total_steps=6", out="alone"))
    assert shared.losses == alone.losses
    a, b = (torch.load(r.checkpoint, map_location="cpu", weights_only=True)["Distiller"] for r in (shared, alone))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
