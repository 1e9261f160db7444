"""Representation distortion: per-layer L1 distance and cosine similarity between hidden-state lists.

Typical comparisons: model(corrupted) vs teacher(clean), model(corrupted) vs model(clean), and a
student's prediction heads vs the teacher's target layers (the caller passes the index pairs, e.g.
``[(3, 4), (4, 8), (5, 12)]`` for DistilHuBERT's three heads). Only valid frames count; statistics
accumulate over batches in float64 so the result does not depend on the batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robustdistiller.models.conv import lengths_to_mask


class DistortionMeter:
    """Accumulates per-pair L1 (mean absolute difference per element) and per-frame cosine similarity."""

    def __init__(self, pairs: Sequence[tuple[int, int]] | None = None) -> None:
        # None: pair index i of ``a`` with index i of ``b``, fixed on the first update.
        self.pairs = list(pairs) if pairs is not None else None
        # Per pair: sum of |a - b|, sum of frame cosines, valid elements, valid frames (float64).
        self._sums: Tensor | None = None

    def update(self, a: Sequence[Tensor], b: Sequence[Tensor], frame_lengths: Tensor | None = None) -> None:
        """Add one batch: ``a``/``b`` are hidden-state lists of [B, T, D]; ``frame_lengths`` [B] (None: all valid)."""
        if self.pairs is None:
            if len(a) != len(b):
                raise ValueError(f"lists differ in length ({len(a)} vs {len(b)}); pass explicit pairs")
            self.pairs = [(i, i) for i in range(len(a))]
        sums = torch.zeros(len(self.pairs), 4, dtype=torch.float64)
        for k, (i, j) in enumerate(self.pairs):
            if not (-len(a) <= i < len(a) and -len(b) <= j < len(b)):
                raise ValueError(f"pair ({i}, {j}) is out of range for lists of {len(a)} and {len(b)}")
            x, y = a[i], b[j]
            if x.ndim != 3 or x.shape != y.shape:
                raise ValueError(
                    f"pair ({i}, {j}): shapes {tuple(x.shape)} and {tuple(y.shape)} must be equal [B, T, D]"
                )
            lengths = frame_lengths if frame_lengths is not None else torch.full((x.shape[0],), x.shape[1])
            if lengths.shape != (x.shape[0],) or int(lengths.max()) > x.shape[1]:
                raise ValueError(f"frame_lengths {lengths.tolist()} do not fit a batch of shape {tuple(x.shape)}")
            mask = lengths_to_mask(lengths.to(x.device), x.shape[1])
            xv, yv = x[mask].double(), y[mask].double()  # [N, D] valid frames only
            sums[k, 0] = (xv - yv).abs().sum()
            sums[k, 1] = F.cosine_similarity(xv, yv, dim=-1, eps=1e-8).sum()
            sums[k, 2], sums[k, 3] = xv.numel(), xv.shape[0]
        self._sums = sums if self._sums is None else self._sums + sums

    def rows(self, **extra: Any) -> list[dict[str, Any]]:
        """One dict per pair: ``extra`` fields, ``index_a``, ``index_b``, ``l1``, ``cosine``, ``frames``."""
        if self._sums is None or self.pairs is None or bool((self._sums[:, 3] == 0).any()):
            raise ValueError("no valid frames were accumulated")
        return [
            {
                **extra,
                "index_a": i,
                "index_b": j,
                "l1": float(l1 / elements),
                "cosine": float(cos / frames),
                "frames": int(frames),
            }
            for (i, j), (l1, cos, elements, frames) in zip(self.pairs, self._sums.tolist())
        ]


def layer_distortion(
    a: Sequence[Tensor],
    b: Sequence[Tensor],
    frame_lengths: Tensor | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    **extra: Any,
) -> list[dict[str, Any]]:
    """Distortion rows for a single batch (see :class:`DistortionMeter`)."""
    meter = DistortionMeter(pairs)
    meter.update(a, b, frame_lengths)
    return meter.rows(**extra)
