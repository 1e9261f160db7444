"""WavLM's utterance mixing: part of another utterance of the batch laid over some utterances.

WavLM (Chen et al., 2022) pre-trains by *denoising* masked prediction: the model hears an utterance
with a segment of another utterance added and predicts the pseudo-labels of the first (primary) one,
so it learns to follow the main speaker and to ignore an interfering one. Here the secondary segment
is the clean audio of another row of the same batch; it covers less than ``max_share`` of the
primary's length (WavLM: under half, so the primary speaker stays the main one) and is scaled to an
energy ratio drawn uniformly from ``ratio_db`` (primary over secondary; WavLM: -5 to 5 dB).

Planning (numpy, from a generator the caller seeds per step) is apart from applying (torch), so a
resumed run draws the same overlays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from robustdistiller.augment.mixing import POWER_EPS


@dataclass(frozen=True)
class Overlay:
    """One secondary segment: ``sources[source, source_start : source_start + length]`` is added to
    row ``row`` at ``start``, ``ratio_db`` below the primary's energy."""

    row: int
    source: int
    start: int
    source_start: int
    length: int
    ratio_db: float


@dataclass
class UtteranceMixing:
    """WavLM-style utterance mixing in pre-training (off at ``prob`` 0)."""

    prob: float = 0.0  # share of the utterances that get a secondary segment
    max_share: float = 0.5  # the segment's length is drawn uniformly below this share of the primary's
    ratio_db: list[float] = field(default_factory=lambda: [-5.0, 5.0])  # primary / secondary energy, dB

    def validate(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {self.prob}")
        if not 0.0 < self.max_share <= 1.0:
            raise ValueError(f"max_share must be in (0, 1], got {self.max_share}")
        if len(self.ratio_db) != 2 or self.ratio_db[0] > self.ratio_db[1]:
            raise ValueError(f"ratio_db must be [low, high] with low <= high, got {self.ratio_db}")

    def plan(self, lengths: Sequence[int], rng: np.random.Generator) -> list[Overlay]:
        """The overlays of one batch of rows with ``lengths`` valid samples (none for a single row)."""
        if self.prob == 0.0 or len(lengths) < 2:
            return []
        plans = []
        for row, n in enumerate(lengths):
            if rng.random() >= self.prob:
                continue
            source = int(rng.integers(len(lengths) - 1))
            source += source >= row  # any other row
            length = min(int(rng.uniform(0.0, self.max_share) * n), lengths[source])
            if length < 1:
                continue
            start = int(rng.integers(n - length + 1))
            source_start = int(rng.integers(lengths[source] - length + 1))
            ratio_db = float(rng.uniform(self.ratio_db[0], self.ratio_db[1]))
            plans.append(Overlay(row, source, start, source_start, length, ratio_db))
        return plans


def overlay(wavs: torch.Tensor, lengths: torch.Tensor, sources: torch.Tensor, plans: Sequence[Overlay]) -> torch.Tensor:
    """``wavs`` [B, L] with every planned segment of ``sources`` [B, L] (the clean batch) added.

    The energy ratio compares the primary's clean audio over its ``lengths[row]`` valid samples with
    the secondary segment, so it does not depend on the noise or room the primary may already carry.
    Returns a new tensor; rows without an overlay are unchanged.
    """
    if not plans:
        return wavs
    out = wavs.clone()
    for p in plans:
        primary = sources[p.row, : int(lengths[p.row])]
        segment = sources[p.source, p.source_start : p.source_start + p.length]
        power = primary.pow(2).mean() / (segment.pow(2).mean() + POWER_EPS)
        out[p.row, p.start : p.start + p.length] += torch.sqrt(power * 10 ** (-p.ratio_db / 10)) * segment
    return out
