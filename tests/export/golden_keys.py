"""Golden key-and-shape lists of released checkpoints we did not write.

Written by hand from the public model definitions (fairseq ``Wav2Vec2Model`` / ``HubertModel``,
unilm ``WavLM``, DPHuBERT's ``wav2vec2_model``) and the configs of the official releases, never
from this project's code: a naming or shape difference between our loader and the real files
therefore fails a test. Each list maps a state-dict key to its shape; the ``cfg`` dicts hold the
fields of the released files that matter (plus a few that do not, as real files carry them).

Layout reminders (fairseq / unilm):
- CNN block ``i`` is ``Sequential(Conv1d, Dropout, norm, GELU)``; "default" mode has a GroupNorm
  only on block 0 (``conv_layers.0.2``), "layer_norm" mode a ``Sequential(TransposeLast,
  Fp32LayerNorm, TransposeLast)`` on every block (``conv_layers.i.2.1``).
- The positional conv is weight-normalised over dim 2: ``weight_g`` is ``[1, 1, kernel]``.
- unilm WavLM: ``relative_attention_bias`` (an ``Embedding(num_buckets, heads)``) on layer 0 only;
  ``grep_linear`` (``Linear(head_dim, 8)``) and ``grep_a`` (``[1, heads, 1, 1]``) on every layer.
"""

from __future__ import annotations

Shapes = dict[str, tuple[int, ...]]

CONV_SPEC = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
_KERNELS = [10, 3, 3, 3, 3, 2, 2]


def _cnn(mode: str, conv_bias: bool, channels: list[int] | None = None) -> Shapes:
    channels = channels or [512] * 7
    out: Shapes = {}
    for i, (c, k) in enumerate(zip(channels, _KERNELS)):
        out[f"feature_extractor.conv_layers.{i}.0.weight"] = (c, channels[i - 1] if i else 1, k)
        if conv_bias:
            out[f"feature_extractor.conv_layers.{i}.0.bias"] = (c,)
        if mode == "layer_norm":
            out[f"feature_extractor.conv_layers.{i}.2.1.weight"] = (c,)
            out[f"feature_extractor.conv_layers.{i}.2.1.bias"] = (c,)
    if mode == "default":
        out["feature_extractor.conv_layers.0.2.weight"] = (channels[0],)
        out["feature_extractor.conv_layers.0.2.bias"] = (channels[0],)
    return out


def _encoder(dim: int, layers: int, heads: int, ffn: int, wavlm: bool = False) -> Shapes:
    out: Shapes = {
        "layer_norm.weight": (512,),
        "layer_norm.bias": (512,),
        "post_extract_proj.weight": (dim, 512),
        "post_extract_proj.bias": (dim,),
        "encoder.pos_conv.0.bias": (dim,),
        "encoder.pos_conv.0.weight_g": (1, 1, 128),
        "encoder.pos_conv.0.weight_v": (dim, dim // 16, 128),
        "encoder.layer_norm.weight": (dim,),
        "encoder.layer_norm.bias": (dim,),
    }
    for i in range(layers):
        p = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out[f"{p}self_attn.{proj}.weight"] = (dim, dim)
            out[f"{p}self_attn.{proj}.bias"] = (dim,)
        if wavlm:
            out[f"{p}self_attn.grep_a"] = (1, heads, 1, 1)
            out[f"{p}self_attn.grep_linear.weight"] = (8, dim // heads)
            out[f"{p}self_attn.grep_linear.bias"] = (8,)
            if i == 0:
                out[f"{p}self_attn.relative_attention_bias.weight"] = (320, heads)
        out.update(
            {
                f"{p}self_attn_layer_norm.weight": (dim,),
                f"{p}self_attn_layer_norm.bias": (dim,),
                f"{p}fc1.weight": (ffn, dim),
                f"{p}fc1.bias": (ffn,),
                f"{p}fc2.weight": (dim, ffn),
                f"{p}fc2.bias": (dim,),
                f"{p}final_layer_norm.weight": (dim,),
                f"{p}final_layer_norm.bias": (dim,),
            }
        )
    return out


# ---------------------------------------------------------------- fairseq / unilm releases
# hubert_base_ls960.pt: 12 x 768, GroupNorm CNN without bias, final_dim 256, 504 k-means labels (500 + 4
# dictionary specials).
HUBERT_BASE: Shapes = {
    "mask_emb": (768,),
    "label_embs_concat": (504, 256),
    "final_proj.weight": (256, 768),
    "final_proj.bias": (256,),
    **_cnn("default", False),
    **_encoder(768, 12, 12, 3072),
}
HUBERT_BASE_CFG = {
    "cfg": {
        "model": {
            "_name": "hubert",
            "label_rate": 50.0,
            "extractor_mode": "default",
            "encoder_layers": 12,
            "encoder_embed_dim": 768,
            "encoder_ffn_embed_dim": 3072,
            "encoder_attention_heads": 12,
            "activation_fn": "gelu",
            "layer_norm_first": False,
            "conv_feature_layers": CONV_SPEC,
            "conv_bias": False,
            "logit_temp": 0.1,
            "final_dim": 256,
            "untie_final_proj": False,
            "conv_pos": 128,
            "conv_pos_groups": 16,
            "dropout": 0.1,
            "encoder_layerdrop": 0.05,
            "feature_grad_mult": 0.1,
            "mask_prob": 0.8,
            "skip_masked": False,
        },
        "task": {
            "_name": "hubert_pretraining",
            "labels": ["km"],
            "label_rate": 50.0,
            "sample_rate": 16000,
            "normalize": False,
            "max_sample_size": 250000,
        },
    },
}

# hubert_large_ll60k.pt: 24 x 1024, pre-LN, LayerNorm CNN with bias, untied final_proj (768 x 1 dictionary).
HUBERT_LARGE: Shapes = {
    "mask_emb": (1024,),
    "label_embs_concat": (504, 768),
    "final_proj.weight": (768, 1024),
    "final_proj.bias": (768,),
    **_cnn("layer_norm", True),
    **_encoder(1024, 24, 16, 4096),
}
HUBERT_LARGE_CFG = {
    "cfg": {
        "model": {
            **HUBERT_BASE_CFG["cfg"]["model"],
            "extractor_mode": "layer_norm",
            "encoder_layers": 24,
            "encoder_embed_dim": 1024,
            "encoder_ffn_embed_dim": 4096,
            "encoder_attention_heads": 16,
            "layer_norm_first": True,
            "conv_bias": True,
            "final_dim": 768,
            "untie_final_proj": True,
            "feature_grad_mult": 1.0,
        },
        "task": {**HUBERT_BASE_CFG["cfg"]["task"], "normalize": True},
    },
}

# wav2vec_small.pt (wav2vec 2.0 Base): Gumbel quantiser of 2 groups x 320 codewords of 128, final_dim 256.
WAV2VEC2_BASE: Shapes = {
    "mask_emb": (768,),
    "quantizer.vars": (1, 640, 128),
    "quantizer.weight_proj.weight": (640, 512),
    "quantizer.weight_proj.bias": (640,),
    "project_q.weight": (256, 256),
    "project_q.bias": (256,),
    "final_proj.weight": (256, 768),
    "final_proj.bias": (256,),
    **_cnn("default", False),
    **_encoder(768, 12, 12, 3072),
}
WAV2VEC2_BASE_CFG = {
    "cfg": {
        "model": {
            "_name": "wav2vec2",
            "quantize_targets": True,
            "final_dim": 256,
            "latent_vars": 320,
            "latent_groups": 2,
            "latent_temp": [2.0, 0.5, 0.999995],
            "extractor_mode": "default",
            "encoder_layers": 12,
            "encoder_embed_dim": 768,
            "encoder_ffn_embed_dim": 3072,
            "encoder_attention_heads": 12,
            "activation_fn": "gelu",
            "layer_norm_first": False,
            "conv_feature_layers": CONV_SPEC,
            "conv_bias": False,
            "conv_pos": 128,
            "conv_pos_groups": 16,
            "feature_grad_mult": 0.1,
            "encoder_layerdrop": 0.05,
        },
        "task": {"_name": "audio_pretraining", "normalize": False, "sample_rate": 16000},
    },
}

# WavLM-Base+.pt (unilm): the state dict of the unilm WavLM class, flat cfg.
WAVLM_BASE_PLUS: Shapes = {"mask_emb": (768,), **_cnn("default", False), **_encoder(768, 12, 12, 3072, wavlm=True)}
WAVLM_BASE_PLUS_CFG = {
    "cfg": {
        "extractor_mode": "default",
        "encoder_layers": 12,
        "encoder_embed_dim": 768,
        "encoder_ffn_embed_dim": 3072,
        "encoder_attention_heads": 12,
        "activation_fn": "gelu",
        "layer_norm_first": False,
        "conv_feature_layers": CONV_SPEC,
        "conv_bias": False,
        "feature_grad_mult": 0.1,
        "normalize": False,
        "conv_pos": 128,
        "conv_pos_groups": 16,
        "relative_position_embedding": True,
        "num_buckets": 320,
        "max_distance": 800,
        "gru_rel_pos": True,
        "dropout": 0.1,
        "encoder_layerdrop": 0.05,
        "mask_prob": 0.65,
    },
}

# WavLM-Large.pt (unilm): 24 x 1024, pre-LN, LayerNorm CNN without bias, normalised input.
WAVLM_LARGE: Shapes = {"mask_emb": (1024,), **_cnn("layer_norm", False), **_encoder(1024, 24, 16, 4096, wavlm=True)}
WAVLM_LARGE_CFG = {
    "cfg": {
        **WAVLM_BASE_PLUS_CFG["cfg"],
        "extractor_mode": "layer_norm",
        "encoder_layers": 24,
        "encoder_embed_dim": 1024,
        "encoder_ffn_embed_dim": 4096,
        "encoder_attention_heads": 16,
        "layer_norm_first": True,
        "feature_grad_mult": 1.0,
        "normalize": True,
    },
}

FAIRSEQ_RELEASES: dict[str, tuple[Shapes, dict]] = {
    "hubert_base_ls960": (HUBERT_BASE, HUBERT_BASE_CFG),
    "hubert_large_ll60k": (HUBERT_LARGE, HUBERT_LARGE_CFG),
    "wav2vec_small": (WAV2VEC2_BASE, WAV2VEC2_BASE_CFG),
    "WavLM-Base+": (WAVLM_BASE_PLUS, WAVLM_BASE_PLUS_CFG),
    "WavLM-Large": (WAVLM_LARGE, WAVLM_LARGE_CFG),
}
TRAINING_ONLY = ("mask_emb", "label_embs_concat", "final_proj.", "quantizer.", "project_q.")
"""Released tensors the encoder does not use (dropped on load)."""


# ---------------------------------------------------------------- DPHuBERT / DPWavLM
# Pruned 2-layer models of a 768-d teacher, torchaudio names. Per layer: heads kept (HuBERT form: a
# count of 64-d heads, WavLM form: indices of the original 12), FFN units (0 = FFN removed).
DP_CONV = [[500, 10, 5], [480, 3, 2], [512, 3, 2], [300, 3, 2], [511, 3, 2], [256, 2, 2], [400, 2, 2]]


def _dp_cnn() -> Shapes:
    out: Shapes = {
        "feature_extractor.conv_layers.0.layer_norm.weight": (500,),
        "feature_extractor.conv_layers.0.layer_norm.bias": (500,),
    }
    previous = 1
    for i, (c, k, _) in enumerate(DP_CONV):
        out[f"feature_extractor.conv_layers.{i}.conv.weight"] = (c, previous, k)
        previous = c
    out["feature_extractor.dummy_weight"] = (400,)
    out.update(
        {
            "encoder.feature_projection.layer_norm.weight": (400,),
            "encoder.feature_projection.layer_norm.bias": (400,),
            "encoder.feature_projection.projection.weight": (768, 400),
            "encoder.feature_projection.projection.bias": (768,),
            "encoder.transformer.pos_conv_embed.conv.bias": (768,),
            "encoder.transformer.pos_conv_embed.conv.weight_g": (1, 1, 128),
            "encoder.transformer.pos_conv_embed.conv.weight_v": (768, 48, 128),
            "encoder.transformer.layer_norm.weight": (768,),
            "encoder.transformer.layer_norm.bias": (768,),
        }
    )
    return out


def _dp_layer(i: int, heads: int, ffn: int, wavlm_total: int = 0) -> Shapes:
    p = f"encoder.transformer.layers.{i}."
    out: Shapes = {
        f"{p}layer_norm.weight": (768,),
        f"{p}layer_norm.bias": (768,),
        f"{p}final_layer_norm.weight": (768,),
        f"{p}final_layer_norm.bias": (768,),
    }
    if heads:
        inner = heads * 64
        for proj in ("q_proj", "k_proj", "v_proj"):
            out[f"{p}attention.{proj}.weight"] = (inner, 768)
            out[f"{p}attention.{proj}.bias"] = (inner,)
        out[f"{p}attention.out_proj.weight"] = (768, inner)
        out[f"{p}attention.out_proj.bias"] = (768,)
        if wavlm_total:
            out[f"{p}attention.gru_rel_pos_const"] = (1, heads, 1, 1)
            out[f"{p}attention.gru_rel_pos_linear.weight"] = (8, 64)
            out[f"{p}attention.gru_rel_pos_linear.bias"] = (8,)
            if i == 0:
                out[f"{p}attention.rel_attn_embed.weight"] = (320, wavlm_total)
    if ffn:
        out[f"{p}feed_forward.intermediate_dense.weight"] = (ffn, 768)
        out[f"{p}feed_forward.intermediate_dense.bias"] = (ffn,)
        out[f"{p}feed_forward.output_dense.weight"] = (768, ffn)
        out[f"{p}feed_forward.output_dense.bias"] = (768,)
    return out


def _dp_config(heads: list[int], ffn: list[int]) -> dict:
    return {
        "extractor_mode": "group_norm",
        "extractor_conv_layer_config": [tuple(c) for c in DP_CONV],
        "extractor_conv_bias": False,
        "encoder_embed_dim": 768,
        "encoder_projection_dropout": 0.1,
        "encoder_pos_conv_kernel": 128,
        "encoder_pos_conv_groups": 16,
        "encoder_num_layers": 2,
        "encoder_use_attention": [h > 0 for h in heads],
        "encoder_use_feed_forward": [f > 0 for f in ffn],
        "encoder_attention_dropout": 0.1,
        "encoder_ff_interm_features": ffn,
        "encoder_ff_interm_dropout": 0.0,
        "encoder_dropout": 0.1,
        "encoder_layer_norm_first": False,
        "encoder_layer_drop": 0.05,
        "aux_num_out": None,
        "normalize_waveform": False,
        "extractor_prune_conv_channels": False,
        "encoder_prune_attention_heads": False,
        "encoder_prune_attention_layer": False,
        "encoder_prune_feed_forward_intermediate": False,
        "encoder_prune_feed_forward_layer": False,
    }


# HuBERT form: 11 and 9 heads of 64 (11 does not divide 768), FFNs 3000 and 1234.
DPHUBERT: Shapes = {**_dp_cnn(), **_dp_layer(0, 11, 3000), **_dp_layer(1, 9, 1234)}
DPHUBERT_CONFIG = {**_dp_config([11, 9], [3000, 1234]), "encoder_num_heads": [11, 9], "encoder_head_dim": 64}

# WavLM form: layer 0 keeps all 12 heads (it owns the position bias), layer 1 none; FFNs 2048 and 0.
DPWAVLM: Shapes = {**_dp_cnn(), **_dp_layer(0, 12, 2048, wavlm_total=12), **_dp_layer(1, 0, 0, wavlm_total=12)}
DPWAVLM_CONFIG = {
    **_dp_config([12, 0], [2048, 0]),
    "encoder_total_num_heads": [12, 12],
    "encoder_remaining_heads": [list(range(12)), []],
    "encoder_num_buckets": 320,
    "encoder_max_distance": 800,
}

DPHUBERT_RELEASES: dict[str, tuple[Shapes, dict]] = {
    "DPHuBERT-[11,9]": (DPHUBERT, DPHUBERT_CONFIG),
    "DPWavLM-[12,0]": (DPWAVLM, DPWAVLM_CONFIG),
}
