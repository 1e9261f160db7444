"""State-dict key maps between our (fairseq/s3prl) names and other layouts.

- Hugging Face ``HubertModel`` / ``Wav2Vec2Model`` / ``WavLMModel`` <-> ours, both directions, with both
  weight-norm key styles of the positional conv accepted on the way in.
- fairseq / unilm checkpoints already use our names; only their training-only tensors are dropped.
Every map is explicit: a key nobody knows raises instead of being silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from torch import Tensor

KeyTable = list[tuple[str, str]]
"""(pattern, replacement) pairs applied in order; the first full match wins. A replacement
``@convnorm <layer> <name>`` stands for our conv-norm key, whose place depends on the extractor mode."""

_HF_TO_OURS: KeyTable = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
    # "group" mode: GroupNorm on block 0 only; "layer" mode: a LayerNorm per block (see _hf_conv_norm_key)
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", r"@convnorm \1 \2"),
    (r"feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
    (
        r"encoder\.pos_conv_embed\.conv\.(?:weight_g|parametrizations\.weight\.original0)",
        r"encoder.pos_conv.0.weight_g",
    ),
    (
        r"encoder\.pos_conv_embed\.conv\.(?:weight_v|parametrizations\.weight\.original1)",
        r"encoder.pos_conv.0.weight_v",
    ),
    (r"encoder\.pos_conv_embed\.conv\.bias", r"encoder.pos_conv.0.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.self_attn.\2_proj.\3"),
    (
        r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.(weight|bias)",
        r"encoder.layers.\1.self_attn.grep_linear.\2",
    ),
    (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const", r"encoder.layers.\1.self_attn.grep_a"),
    (
        r"encoder\.layers\.(\d+)\.attention\.rel_attn_embed\.weight",
        r"encoder.layers.\1.self_attn.relative_attention_bias.weight",
    ),
    (r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)", r"encoder.layers.\1.fc1.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.fc2.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]

# The only training-only tensor an HF *base* model holds (heads live beside a "hubert."-style prefix).
_HF_DROPPED = ("masked_spec_embed",)
_HF_BASE_PREFIXES = ("hubert.", "wav2vec2.", "wavlm.")

# fairseq / unilm tensors used only by the pretraining objective.
FAIRSEQ_DROPPED_PREFIXES = (
    "mask_emb",
    "label_embs_concat",
    "final_proj.",
    "quantizer.",
    "project_q.",
    "project_inp.",
    "target_glu.",
    "untie_final_proj",
)


def map_key(key: str, table: KeyTable, *, group_norm: bool) -> str | None:
    """``key`` renamed by the first pattern of ``table`` that matches it fully; None if none does.

    ``group_norm``: the extractor is in "default" mode (GroupNorm on block 0 at ``conv_layers.0.2``)
    rather than "layer_norm" mode (a LayerNorm per block at ``conv_layers.{i}.2.1``)."""
    for pattern, repl in table:
        m = re.fullmatch(pattern, key)
        if m is None:
            continue
        out = m.expand(repl)
        if out.startswith("@convnorm"):
            _, layer, name = out.split()
            norm = "2" if group_norm else "2.1"
            return f"feature_extractor.conv_layers.{layer}.{norm}.{name}"
        return out
    return None


def hf_key_to_ours(key: str, *, group_norm: bool) -> str | None:
    """Our name for HF encoder key ``key`` (base-model prefix already removed); None if unknown."""
    return map_key(key, _HF_TO_OURS, group_norm=group_norm)


def hf_to_ours(state: Mapping[str, Tensor], *, group_norm: bool) -> dict[str, Tensor]:
    """Convert a Hugging Face wav2vec2-family state dict (base model or with a head) to our names.

    ``group_norm``: the extractor uses ``feat_extract_norm="group"`` (decides where conv norms go).
    Raises ``KeyError`` listing keys that are neither encoder weights nor known head tensors.
    """
    prefixed = any(k.startswith(_HF_BASE_PREFIXES) for k in state)
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if prefixed:
            if not key.startswith(_HF_BASE_PREFIXES):
                continue  # a task head (lm_head, projector, ...) next to the base model
            key = key.split(".", 1)[1]
        new = hf_key_to_ours(key, group_norm=group_norm)
        if new is not None:
            out[new] = value
        elif key not in _HF_DROPPED:
            unknown.append(key)
    if unknown:
        raise KeyError(f"unrecognised Hugging Face keys: {', '.join(sorted(unknown)[:10])}")
    return out


_OURS_TO_HF: KeyTable = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (
        r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)",
        r"feature_extractor.conv_layers.\1.layer_norm.\2",
    ),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.weight_g", r"encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.weight_v", r"encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)",
        r"encoder.layers.\1.attention.gru_rel_pos_linear.\2",
    ),
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_a", r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight",
        r"encoder.layers.\1.attention.rel_attn_embed.weight",
    ),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]


def ours_to_hf(state: Mapping[str, Tensor], *, skip_prefixes: Iterable[str] = ("output_layer.",)) -> dict[str, Tensor]:
    """Our encoder state dict -> HF base-model names (parametrized weight-norm keys, as current
    transformers saves them). Keys under ``skip_prefixes`` (the student's prediction heads by
    default) are left out; any other key without an HF name raises ``KeyError``."""
    skip = tuple(skip_prefixes)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(skip):
            continue
        new = map_key(key, _OURS_TO_HF, group_norm=True)  # no "@convnorm" this way: the mode does not matter
        if new is None:
            raise KeyError(f"no Hugging Face name for {key!r}")
        out[new] = value
    return out


def fairseq_to_ours(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """fairseq HuBERT / wav2vec 2.0 and unilm WavLM pretraining state dicts share our names; drop
    the tensors of the pretraining objective (mask embedding, label embeddings, quantizer, ...)."""
    return {k: v for k, v in state.items() if not k.startswith(FAIRSEQ_DROPPED_PREFIXES)}
