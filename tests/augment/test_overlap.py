"""WavLM's utterance mixing (augment/overlap.py): how often, how long, how loud, and where."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustdistiller.augment.overlap import UtteranceMixing, overlay
from robustdistiller.config import ConfigError, from_dict


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):  # rows of very different loudness, zero padding
        wavs[row, :n] = torch.randn(n, generator=gen) * (0.05 + 0.3 * row)
    return wavs, torch.tensor(lengths)


def _db(x: torch.Tensor) -> float:
    return 10 * math.log10(float(x.pow(2).mean()))


def test_plan_statistics() -> None:
    mixing = UtteranceMixing(prob=0.3, max_share=0.5, ratio_db=[-5.0, 5.0])
    lengths = [16000, 12000, 9000, 16000, 4000, 15000, 8000, 16000]
    rng = np.random.default_rng(0)
    plans = [p for _ in range(500) for p in mixing.plan(lengths, rng)]
    assert len(plans) / (500 * len(lengths)) == pytest.approx(0.3, abs=0.02)
    shares = np.array([p.length / lengths[p.row] for p in plans])
    assert shares.max() < 0.5 and shares.mean() == pytest.approx(0.25, abs=0.02)  # uniform below the share
    ratios = np.array([p.ratio_db for p in plans])
    assert ratios.min() >= -5.0 and ratios.max() <= 5.0 and abs(ratios.mean()) < 0.3
    for p in plans:  # another row; both segments inside the valid samples
        assert p.source != p.row
        assert 0 <= p.start and p.start + p.length <= lengths[p.row]
        assert 0 <= p.source_start and p.source_start + p.length <= lengths[p.source]
    sources = np.array([p.source for p in plans])
    assert len(set(sources.tolist())) == len(lengths)  # every row serves as a secondary


def test_plans_are_a_function_of_the_generator() -> None:
    mixing = UtteranceMixing(prob=0.5)
    lengths = [8000, 6000, 7000, 5000]
    assert mixing.plan(lengths, np.random.default_rng([1, 2])) == mixing.plan(lengths, np.random.default_rng([1, 2]))
    assert UtteranceMixing(prob=1.0).plan([8000], np.random.default_rng(0)) == []  # nobody to mix with
    assert UtteranceMixing(prob=0.0).plan(lengths, np.random.default_rng(0)) == []


def test_overlay_adds_the_segment_at_the_drawn_energy_ratio_and_nothing_else() -> None:
    lengths = [16000, 11000, 7000]
    clean, lens = _batch(lengths)
    noisy = clean + 0.01 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(9))
    noisy[1, 11000:] = 0.0
    noisy[2, 7000:] = 0.0
    plans = UtteranceMixing(prob=1.0).plan(lengths, np.random.default_rng(3))
    assert len(plans) == 3
    before = noisy.clone()
    heard = overlay(noisy, lens, clean, plans)
    assert torch.equal(noisy, before)  # the input is left alone
    for p in plans:
        added = heard[p.row] - noisy[p.row]
        inside = slice(p.start, p.start + p.length)
        segment = clean[p.source, p.source_start : p.source_start + p.length]
        outside = torch.ones(added.shape[0], dtype=torch.bool)
        outside[inside] = False
        assert torch.all(added[outside] == 0)  # the rest of the row, padding included, is untouched
        scale = added[inside] / segment
        assert torch.allclose(scale, scale[0].expand_as(scale), rtol=1e-3)  # the segment itself, scaled
        measured = _db(clean[p.row, : lengths[p.row]]) - _db(added[inside])
        assert measured == pytest.approx(p.ratio_db, abs=1e-3)  # primary's clean energy over the segment's
    assert overlay(noisy, lens, clean, []) is noisy


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="prob must be in"):
        from_dict(UtteranceMixing, {"prob": 1.5})
    with pytest.raises(ConfigError, match="max_share"):
        from_dict(UtteranceMixing, {"max_share": 0.0})
    with pytest.raises(ConfigError, match="ratio_db"):
        from_dict(UtteranceMixing, {"ratio_db": [5.0, -5.0]})
