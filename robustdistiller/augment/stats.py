"""Corruption statistics for logging: operation counts, SNR histogram, mean RT60."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import torch

from robustdistiller.augment.policy import OPS, CorruptionResult


def summarize(results: Iterable[CorruptionResult]) -> dict[str, float]:
    """Flat ``{name: value}`` over all rows of ``results``: ``utterances``, ``ops/<op>`` counts (every
    op present, 0 when unused), ``snr_hist/<dB>`` counts, ``snr_mean`` and ``rt60_mean`` (NaN when
    no row had noise / a reverb with a measurable RT60)."""
    ops: Counter[str] = Counter()
    snrs, rt60s = [], []
    for result in results:
        ops.update(result.ops)
        snrs.append(result.snr_db[~torch.isnan(result.snr_db)])
        rt60s.append(result.rt60[~torch.isnan(result.rt60)])
    snr = torch.cat(snrs) if snrs else torch.zeros(0)
    rt60 = torch.cat(rt60s) if rt60s else torch.zeros(0)
    out: dict[str, float] = {"utterances": float(sum(ops.values()))}
    out.update({f"ops/{op}": float(ops[op]) for op in OPS})
    for value, count in sorted(Counter(snr.round().to(torch.int64).tolist()).items()):
        out[f"snr_hist/{value}"] = float(count)
    out["snr_mean"] = float(snr.mean()) if snr.numel() else math.nan
    out["rt60_mean"] = float(rt60.mean()) if rt60.numel() else math.nan
    return out
