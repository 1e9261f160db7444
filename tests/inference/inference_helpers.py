"""A tiny student (layer-norm CNN, so chunk stitching can be checked exactly) and speech-like audio.

A plain module (not conftest) so subprocesses and tests can import it without clashing with
other folders' conftest modules."""

from __future__ import annotations

import numpy as np
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

