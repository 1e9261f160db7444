"""Parameter count of a wav2vec2-family encoder from its per-block sizes (DPHuBERT's formula).

The same function gives the *expected* size under the gates (sizes = expected numbers of kept
units, differentiable tensors: the quantity the sparsity constraint drives) and the *actual* size
of a concrete architecture (sizes = ints; a sub-block with 0 units is absent and costs nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .config import PrunableConfig

Size = int | float | Tensor


def _absent(n: Size) -> bool:
    return not isinstance(n, Tensor) and n == 0


def structure_params(
    config: PrunableConfig,
    conv_channels: Sequence[Size],
    heads: Sequence[Size],
    ffn_units: Sequence[Size],
    attention_keep: Sequence[Size] | None = None,
    ffn_keep: Sequence[Size] | None = None,
) -> Size:
    """Parameters (``dummy_weight`` included) of ``config``'s model with the given per-block sizes.

    ``attention_keep`` / ``ffn_keep``: per-layer multipliers (expected whole-layer gates), 1 if None.
    """
    d, hd, total = config.embed_dim, config.head_dim, config.total_heads
    n: Size = 0
    c_in: Size = 1
    for i, (c, (_, kernel, _)) in enumerate(zip(conv_channels, config.conv_spec)):
        n = n + c_in * c * kernel + (c if config.conv_bias else 0)
        if config.extractor_mode == "layer_norm" or i == 0:
            n = n + 2 * c
        c_in = c
    n = n + c_in  # dummy_weight
    n = n + (2 * c_in if config.feature_layer_norm else 0) + (c_in + 1) * d
    n = n + d + config.conv_pos + d * (d // config.conv_pos_groups) * config.conv_pos + 2 * d  # pos-conv, LN
    for layer in range(config.num_layers):
        n = n + 4 * d
        h, f = heads[layer], ffn_units[layer]
        if not _absent(h):
            attn = (d + 1) * h * hd * 3 + (h * hd + 1) * d
            if config.family == "wavlm":
                attn = attn + (d // total) * 8 + 8 + total + (config.num_buckets * total if layer == 0 else 0)
            n = n + attn * (attention_keep[layer] if attention_keep is not None else 1)
        if not _absent(f):
            ffn = (d + 1) * f + (f + 1) * d
            n = n + ffn * (ffn_keep[layer] if ffn_keep is not None else 1)
    return n


def config_params(config: PrunableConfig) -> int:
    """Actual parameter count of the (ungated) model ``config`` describes."""
    return int(structure_params(config, [c[0] for c in config.conv_spec], config.head_counts, config.layer_ffn_dims))
