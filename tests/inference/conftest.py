"""A tiny student (layer-norm CNN, so chunk stitching can be checked exactly) and audio writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from robustdistiller.models.student import DistillerConfig, DistillerModel

TINY = {
    "extractor_mode": "layer_norm",
    "extractor_conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    "encoder_layers": 2,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 4,
    "final_dim": 64,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "n_tasks": 1,
    "pred_layer_id": [2],
}


def tiny_student(**overrides: object) -> DistillerModel:
    torch.manual_seed(0)
    return DistillerModel(DistillerConfig.from_s3prl({**TINY, **overrides})).eval()


def speechlike(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Noise with a slow amplitude envelope (syllable-rate bursts and pauses), float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * np.arange(n) / rate + rng.uniform(0, 6)), 0, None)
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


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
