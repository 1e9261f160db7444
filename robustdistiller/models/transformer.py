"""wav2vec2-family Transformer encoder: post-LN or pre-LN layers with per-layer sizes.

Parameter names follow fairseq (``self_attn``, ``self_attn_layer_norm``, ``fc1``, ``fc2``,
``final_layer_norm``; encoder ``pos_conv``, ``layers``, ``layer_norm``). A layer may have no
attention or no FFN (what structured pruning leaves); its LayerNorms stay, as in DPHuBERT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .positional import ConvPositionalEmbedding

# Sanity bounds on sizes read from configs and checkpoints (a checkpoint may be hostile): far above
# any real model (HuBERT X-Large: 48 layers of 1280, FFN 5120), far below exhausting memory.
ENCODER_LIMITS = {
    "layers": 128,
    "embed_dim": 8192,
    "ffn_dim": 65536,
    "heads": 256,
    "conv_pos": 1024,
    "conv_pos_groups": 1024,
}
MAX_ENCODER_PARAMS = 4_000_000_000
"""About 16 GB of fp32 weights: ten times the largest teacher."""


def check_encoder_size(
    what: str,
    *,
    layers: int,
    embed_dim: int,
    ffn_dims: Sequence[int],
    heads: Sequence[int],
    conv_pos: int,
    conv_pos_groups: int,
    names: Mapping[str, str] | None = None,
) -> None:
    """Refuse sizes beyond :data:`ENCODER_LIMITS` / :data:`MAX_ENCODER_PARAMS` before anything is
    allocated. ``what`` names the config in the error; ``ffn_dims`` / ``heads`` are per layer;
    ``names`` maps the keys of :data:`ENCODER_LIMITS` to the config's own field names for the message."""
    names = names or {}
    sizes = {
        "layers": layers,
        "embed_dim": embed_dim,
        "ffn_dim": max(ffn_dims, default=0),
        "heads": max(heads, default=0),
        "conv_pos": conv_pos,
        "conv_pos_groups": conv_pos_groups,
    }
    for name, value in sizes.items():
        if value > ENCODER_LIMITS[name]:
            raise ValueError(f"{what}: {names.get(name, name)}={value} is over the limit of {ENCODER_LIMITS[name]}")
    params = layers * (4 * embed_dim * embed_dim + 2 * embed_dim * sizes["ffn_dim"])
    if params > MAX_ENCODER_PARAMS:
        raise ValueError(
            f"{what}: an encoder of {layers} layers x {embed_dim} dims (FFN {sizes['ffn_dim']}) has about "
            f"{params:.3g} parameters, over the limit of {MAX_ENCODER_PARAMS:.3g}"
        )


class EncoderLayer(nn.Module):
    """One Transformer block; ``self_attn`` / ``fc1``+``fc2`` are None when pruned away."""

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        self_attn: nn.Module | None,
        *,
        layer_norm_first: bool = False,
        dropout: float = 0.1,
        activation_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.self_attn = self_attn
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(activation_dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim) if ffn_dim > 0 else None
        self.fc2 = nn.Linear(ffn_dim, embed_dim) if ffn_dim > 0 else None
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def _ffn(self, x: Tensor) -> Tensor:
        assert self.fc1 is not None and self.fc2 is not None
        # exact (erf) GELU in fp32, as fairseq does, so fp16/bf16 autocast keeps the same activation
        h = F.gelu(self.fc1(x).float()).type_as(x)
        return self.dropout3(self.fc2(self.dropout2(h)))

    def forward(
        self, x: Tensor, frame_mask: Tensor | None, position_bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if self.self_attn is not None:
            residual = x
            if self.layer_norm_first:
                x = self.self_attn_layer_norm(x)
            x, position_bias = self.self_attn(x, frame_mask, position_bias)
            x = residual + self.dropout1(x)
        if self.layer_norm_first:
            if self.fc1 is not None:
                x = x + self._ffn(self.final_layer_norm(x))
        else:
            x = self.self_attn_layer_norm(x)
            if self.fc1 is not None:
                x = x + self._ffn(x)
            x = self.final_layer_norm(x)
        return x, position_bias


@dataclass
class TransformerOutput:
    layer_input: Tensor
    """Input of layer 1: after pos-conv (+ LayerNorm for post-LN encoders), (B, T, C)."""
    layer_outputs: list[Tensor]
    """Output of every layer, (B, T, C) each (pre-LN: before the final LayerNorm)."""
    last_hidden_state: Tensor
    """Last layer output, after the final LayerNorm for pre-LN encoders."""


class TransformerEncoder(nn.Module):
    """Zero padded frames, ``x + pos_conv(x)``, [LayerNorm (post-LN)], layers, [LayerNorm (pre-LN)]."""

    def __init__(
        self,
        embed_dim: int,
        layers: Sequence[EncoderLayer],
        *,
        conv_pos: int = 128,
        conv_pos_groups: int = 16,
        layer_norm_first: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.pos_conv = ConvPositionalEmbedding(embed_dim, conv_pos, conv_pos_groups)
        self.layers = nn.ModuleList(layers)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, frame_mask: Tensor | None = None) -> TransformerOutput:
        """``x`` (B, T, C) projected features; ``frame_mask`` (B, T) True = valid."""
        if frame_mask is not None:
            x = x.masked_fill(~frame_mask[..., None], 0.0)
            if bool(frame_mask.all()):
                frame_mask = None  # nothing to mask: lets attention take its fastest path
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        layer_input = x
        outputs: list[Tensor] = []
        position_bias: Tensor | None = None
        for layer in self.layers:
            x, position_bias = layer(x, frame_mask, position_bias)
            outputs.append(x)
        last = self.layer_norm(x) if self.layer_norm_first else x
        return TransformerOutput(layer_input=layer_input, layer_outputs=outputs, last_hidden_state=last)


def init_bert_params(module: nn.Module) -> None:
    """BERT-style init used by fairseq/s3prl encoders: Linear N(0, 0.02) with zero bias, Embedding N(0, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
