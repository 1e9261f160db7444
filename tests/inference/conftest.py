"""Fixtures of the inference tests (helpers live in inference_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from inference_helpers import speechlike, tiny_student

from robustdistiller.models.student import DistillerModel


@pytest.fixture
def student() -> DistillerModel:
    return tiny_student()


@pytest.fixture
def write_wav(tmp_path: Path):
    def write(name: str, seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        wav = speechlike(seconds, rate, seed)
        sf.write(path, np.stack([wav] * channels, axis=1) if channels > 1 else wav, rate, subtype="PCM_16")
        return path

    return write
