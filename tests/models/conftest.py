"""Tiny model builders shared by the model tests (CNN 32 channels, 2 layers of 64 dims, 4 heads)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from robustdistiller.models import DistillerConfig

TINY_CONV = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"

HF_TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    layerdrop=0.0,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    mask_time_prob=0.0,
)


TINY_STUDENT = dict(
    extractor_conv_feature_layers=TINY_CONV,
    encoder_layers=2,
    encoder_embed_dim=64,
    encoder_ffn_embed_dim=128,
    encoder_attention_heads=4,
    conv_pos=16,
    conv_pos_groups=4,
    final_dim=64,
    n_tasks=3,
    pred_layer_id=[1, 2, 3],
    feature_grad_mult=0.1,
)


@pytest.fixture
def tiny_student() -> Callable[..., DistillerConfig]:
    """``tiny_student(**overrides)`` -> a validated tiny DistillerConfig (s3prl field names)."""

    def build(**overrides: object) -> DistillerConfig:
        return DistillerConfig.from_s3prl({**TINY_STUDENT, **overrides})

    return build


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Move every parameter off its init (LayerNorms are 1/0 otherwise) so parity tests see real values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


@pytest.fixture
def hf_tiny() -> Callable[..., torch.nn.Module]:
    """``hf_tiny(family, pre_ln=False, **config)`` -> a random eval-mode transformers model."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

    classes = {
        "hubert": (HubertConfig, HubertModel),
        "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
        "wavlm": (WavLMConfig, WavLMModel),
    }

    def build(family: str, pre_ln: bool = False, seed: int = 0, **config: object) -> torch.nn.Module:
        cfg_cls, model_cls = classes[family]
        kwargs = dict(HF_TINY)
        kwargs.update(do_stable_layer_norm=pre_ln, feat_extract_norm="layer" if pre_ln else "group", conv_bias=pre_ln)
        if family == "wavlm":
            kwargs.update(num_buckets=16, max_bucket_distance=40)
        kwargs.update(config)
        torch.manual_seed(seed)
        model = model_cls(cfg_cls(**kwargs)).eval()
        _perturb(model, seed)
        return model

    return build


@pytest.fixture
def hf_dir(tmp_path: Path, hf_tiny: Callable[..., torch.nn.Module]) -> Callable[..., Path]:
    """``hf_dir(family, pre_ln=False)`` -> a save_pretrained directory of a tiny random model."""

    def build(family: str, pre_ln: bool = False, seed: int = 0) -> Path:
        out = tmp_path / f"hf-{family}-{int(pre_ln)}-{seed}"
        hf_tiny(family, pre_ln, seed).save_pretrained(out)
        return out

    return build


@pytest.fixture
def wave_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two utterances (0.5 s and 0.33 s) zero-padded into one batch."""
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([8000, 5300])
    wavs = torch.randn(2, 8000, generator=gen)
    wavs[1, 5300:] = 0.0
    return wavs, lengths
