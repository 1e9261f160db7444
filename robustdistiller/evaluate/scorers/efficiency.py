"""Efficiency scorer: parameters, MACs per second of audio, real-time factor at 1 and 2 threads and
(optionally) peak memory of one forward pass, per model."""

from __future__ import annotations

import functools

import torch

from robustdistiller.data.audio import SAMPLE_RATE
from robustdistiller.evaluate.efficiency import (
    count_macs,
    peak_memory_mb,
    real_time_factor,
)
from robustdistiller.evaluate.models import ModelUnderTest, load_model_under_test
from robustdistiller.evaluate.rows import EfficiencyRow
from robustdistiller.evaluate.scorers.base import Scorer, ScoringContext, upstream_of


def _forward_once(path: str, seconds: float) -> None:
    """Load ``path`` and run one forward pass (the body measured by peak_memory_mb)."""
    entry = load_model_under_test(path, "memory")
    x = torch.zeros(1, int(seconds * SAMPLE_RATE))
    with torch.inference_mode():
        upstream_of(entry).extract(x, torch.tensor([x.shape[1]]))


class EfficiencyScorer(Scorer):
    """One row per model, measured on ``rtf_seconds`` of noise (median of ``rtf_repeats`` passes)."""

    name = "efficiency"

    def __init__(self, rtf_seconds: float, rtf_repeats: int, measure_memory: bool) -> None:
        self.rtf_seconds, self.rtf_repeats, self.measure_memory = rtf_seconds, rtf_repeats, measure_memory

    def score_model(self, entry: ModelUnderTest, ctx: ScoringContext) -> list[EfficiencyRow]:
        macs = count_macs(entry.model, 1.0)
        rtf = {
            threads: real_time_factor(entry.model, self.rtf_seconds, threads=threads, repeats=self.rtf_repeats)
            for threads in (1, 2)
        }
        memory = (
            peak_memory_mb(functools.partial(_forward_once, entry.path, self.rtf_seconds))
            if self.measure_memory
            else None
        )
        return [
            EfficiencyRow(
                model=entry.name,
                parameters=entry.parameters,
                macs_per_second=macs,
                rtf_1_thread=rtf[1],
                rtf_2_threads=rtf[2],
                peak_memory_mb=memory,
            )
        ]
