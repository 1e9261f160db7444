"""Builders shared by the pruning tests (imported by name; pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch

from robustdistiller.models.pruning import PrunableConfig

SR = 16000
TINY_CONV = [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2
HF_TINY = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, layerdrop=0.0, hidden_dropout=0.0,
    attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, mask_time_prob=0.0,
)


def tiny_config(family: str = "hubert", **overrides: object) -> PrunableConfig:
    """CNN 32 channels, 2 layers of 64 dims, 4 heads of 16, FFN 128; no dropout."""
    base = dict(
        family=family, conv_layers=TINY_CONV, embed_dim=64, head_dim=16, total_heads=4,
        layer_heads=[[0, 1, 2, 3]] * 2, layer_ffn_dims=[128, 128], conv_pos=16, conv_pos_groups=4,
        num_buckets=16, max_distance=40, dropout=0.0, attention_dropout=0.0, projection_dropout=0.0,
    )
    base.update(overrides)
    config = PrunableConfig(**base)  # type: ignore[arg-type]
    config.validate()
    return config


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    """Move parameters off their init (LayerNorms are 1/0 otherwise) so comparisons see real values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.requires_grad and "log_alpha" not in name:
                p.add_(scale * torch.randn(p.shape, generator=gen))


def hf_model(family: str, seed: int = 0, **config: object) -> torch.nn.Module:
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

    classes = {"hubert": (HubertConfig, HubertModel), "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
               "wavlm": (WavLMConfig, WavLMModel)}
    cfg_cls, model_cls = classes[family]
    kwargs = dict(HF_TINY)
    if family == "wavlm":
        kwargs.update(num_buckets=16, max_bucket_distance=40)
    kwargs.update(config)
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**kwargs)).eval()
    perturb(model, seed)
    return model
