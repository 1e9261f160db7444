"""Distortion scorer: how far each model's hidden states on corrupted audio move from clean references.

References per (model, condition), over the first ``max_distortion`` test utterances:
- ``self_clean``: every hidden state against the model's own output on clean audio (corrupted
  conditions only);
- ``teacher_clean``: a student's prediction heads against the teacher layers they predict, on clean
  audio; the teacher's own (predicted, else every) layers against themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from robustdistiller.evaluate.conditions import CLEAN, Condition
from robustdistiller.evaluate.distortion import DistortionMeter
from robustdistiller.evaluate.models import ModelUnderTest
from robustdistiller.evaluate.rows import DistortionRow
from robustdistiller.evaluate.scorers.base import Observation, Scorer, ScoringContext

log = logging.getLogger(__name__)

Pairs = list[tuple[int, int]]  # (index in this model's hidden states, index in the reference's)


def _padded(feats: Sequence[Tensor], layer: int, frames: Sequence[int]) -> Tensor:
    """[B, T, D] float32 batch of one hidden state from per-utterance [L, T_i, D] features."""
    out = torch.zeros(len(feats), max(frames), feats[0].shape[-1])
    for row, (f, n) in enumerate(zip(feats, frames)):
        out[row, :n] = f[layer, :n].float()
    return out


def _compare(corrupted: dict[str, Tensor], reference: dict[str, Tensor], pairs: Pairs, chunk: int = 16) -> list[dict]:
    """Meter rows (``l1``, ``cosine``, ``frames``; one per pair) of ``corrupted`` [L, T, D] features
    against the same utterances' ``reference`` features, accumulated ``chunk`` utterances at a time."""
    meter = DistortionMeter([(k, k) for k in range(len(pairs))])
    uids = list(corrupted)
    for start in range(0, len(uids), chunk):
        a = [corrupted[u] for u in uids[start : start + chunk]]
        b = [reference[u] for u in uids[start : start + chunk]]
        # Teacher and student CNNs may differ by a frame at the end: compare the common span.
        frames = [min(x.shape[1], y.shape[1]) for x, y in zip(a, b)]
        meter.update(
            [_padded(a, i, frames) for i, _ in pairs], [_padded(b, j, frames) for _, j in pairs], torch.tensor(frames)
        )
    return meter.rows()


def teacher_pairs(entry: ModelUnderTest, teacher: ModelUnderTest | None, targets: list[int]) -> Pairs | None:
    """Index pairs (this model, teacher) for the teacher_clean comparison, or None when there is none.

    Args:
        targets: the teacher layers any student predicts (what the teacher is compared on with itself).
    """
    if teacher is None:
        return None
    layers = len(teacher.layer_names)
    if entry is teacher:
        return [(t, t) for t in (targets or range(layers)) if t < layers]
    if entry.head_pairs is None:
        return None  # another teacher: its layers do not correspond to this teacher's
    bad = [t for _, t in entry.head_pairs if t >= layers]
    if bad:
        log.warning(
            "%s predicts teacher layers %s but the teacher has %d hidden states; no teacher comparison",
            entry.name,
            bad,
            layers,
        )
        return None
    return entry.head_pairs


class DistortionScorer(Scorer):
    """L1 / cosine rows per (model, condition, reference, compared hidden state); see the module docstring."""

    name = "distortion"

    def __init__(
        self, compare_uids: list[str], teacher_clean: dict[str, Tensor] | None, pairs: dict[str, Pairs | None]
    ) -> None:
        self.compare_uids = compare_uids
        self.teacher_clean = teacher_clean
        self.pairs = pairs  # model name -> teacher_clean pairs
        self._own_clean: dict[str, dict[str, Tensor]] = {}  # model name -> its clean features

    @classmethod
    def build(
        cls, entries: Sequence[ModelUnderTest], teacher: ModelUnderTest | None, ctx: ScoringContext, max_utterances: int
    ) -> DistortionScorer:
        """Compare the first ``max_utterances`` test utterances (0 = all) of ``entries``; with a
        ``teacher``, its clean features are extracted here."""
        uids = ctx.test_uids if max_utterances <= 0 else ctx.test_uids[:max_utterances]
        teacher_clean = None if teacher is None else ctx.features(teacher, uids, ctx.wavs, CLEAN.id)
        targets = sorted({t for e in entries for _, t in (e.head_pairs or [])})
        return cls(uids, teacher_clean, {e.name: teacher_pairs(e, teacher, targets) for e in entries})

    def score(self, entry: ModelUnderTest, seen: Observation, ctx: ScoringContext) -> list[DistortionRow]:
        compared = {u: seen.features[u] for u in self.compare_uids}
        if seen.condition.kind == "clean":
            self._own_clean[entry.name] = compared
        comparisons: list[tuple[str, dict[str, Tensor], Pairs]] = []
        own = self._own_clean.get(entry.name)
        if own is not None and seen.condition.kind != "clean":
            comparisons.append(("self_clean", own, [(i, i) for i in range(len(entry.layer_names))]))
        to_teacher = self.pairs.get(entry.name)
        if self.teacher_clean is not None and to_teacher:
            comparisons.append(("teacher_clean", self.teacher_clean, to_teacher))
        return [
            row
            for reference, other, pairs in comparisons
            for row in self._rows(entry, seen.condition, reference, _compare(compared, other, pairs), pairs)
        ]

    @staticmethod
    def _rows(
        entry: ModelUnderTest, condition: Condition, reference: str, measured: list[dict], pairs: Pairs
    ) -> list[DistortionRow]:
        return [
            DistortionRow(
                model=entry.name,
                condition=condition.id,
                reference=reference,
                index_a=i,
                index_b=j,
                l1=m["l1"],
                cosine=m["cosine"],
                frames=m["frames"],
                layer=entry.layer_names[i],
            )
            for m, (i, j) in zip(measured, pairs)
        ]
