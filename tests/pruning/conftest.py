"""Tiny prunable models, tiny Hugging Face teachers and tiny generated audio for the pruning tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pruning_helpers import SR, hf_model

from robustdistiller.data import Manifest, ManifestEntry


@pytest.fixture
def wave_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two utterances (0.5 s and 0.33 s) zero-padded into one batch."""
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([8000, 5300])
    wavs = torch.randn(2, 8000, generator=gen)
    wavs[1, 5300:] = 0.0
    return wavs, lengths


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``teacher_dir(family)``: a tiny random 3-layer teacher saved with save_pretrained."""
    made: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in made:
            path = tmp_path_factory.mktemp("teacher") / family
            hf_model(family, seed=0, num_hidden_layers=3).save_pretrained(path)
            made[family] = path
        return made[family]

    return build


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 harmonic 'utterances' of 0.3-0.5 s, as a manifest."""
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    entries = []
    for i in range(8):
        n = int(SR * rng.uniform(0.3, 0.5))
        t = np.arange(n) / SR
        f0 = rng.uniform(100, 250)
        wav = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * np.hanning(n)
        wav = (0.3 * wav / np.abs(wav).max() + 0.01 * rng.standard_normal(n)).astype(np.float32)
        sf.write(root / f"utt{i}.wav", wav, SR)
        entries.append(ManifestEntry(f"utt{i}.wav", n))
    return Manifest(root, entries).write(root / "train.tsv")
