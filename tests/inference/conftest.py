"""Fixtures of the inference tests (builders live in tests/fixtures_tiny.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixtures_tiny import layer_norm_student, speechlike

from robustdistiller.models.student import DistillerModel


@pytest.fixture
def student() -> DistillerModel:
    return layer_norm_student()


@pytest.fixture
def write_wav(tmp_path: Path):
    def write(name: str, seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        wav = speechlike(seconds, rate, seed)
        sf.write(path, np.stack([wav] * channels, axis=1) if channels > 1 else wav, rate, subtype="PCM_16")
        return path

    return write
