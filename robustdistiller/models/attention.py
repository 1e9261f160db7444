"""Multi-head self-attention (fairseq parameter names) and WavLM's gated relative-position variant.

Both run through ``torch.nn.functional.scaled_dot_product_attention``. Heads are counted per layer
and the head dimension is fixed separately, so a pruned layer with fewer heads keeps the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """``q/k/v/out`` projections (registered k, v, q, out like fairseq) + SDPA with a padding mask."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        if num_heads <= 0 or head_dim <= 0:
            raise ValueError(f"attention needs num_heads > 0 and head_dim > 0, got {num_heads}, {head_dim}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        inner = num_heads * head_dim
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.q_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, -1, self.head_dim).transpose(1, 2)

    def attend(self, x: Tensor, frame_mask: Tensor | None, bias: Tensor | None) -> Tensor:
        """``x`` (B, T, C); ``frame_mask`` (B, T) True = valid key; ``bias`` (B, H, T, T) added to logits."""
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        mask: Tensor | None = None
        if bias is not None:
            mask = bias.to(q.dtype)
            if frame_mask is not None:
                mask = mask.masked_fill(~frame_mask[:, None, None, :], float("-inf"))
        elif frame_mask is not None and not bool(frame_mask.all()):
            mask = frame_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))

    def forward(
        self, x: Tensor, frame_mask: Tensor | None = None, position_bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Returns the attention output and ``position_bias`` unchanged (a uniform layer interface)."""
        return self.attend(x, frame_mask, None), position_bias


def relative_position_buckets(relative: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """T5/WavLM bidirectional bucketing: half the buckets per direction, exact below ``n/4``, log beyond."""
    half = num_buckets // 2
    buckets = (relative > 0).to(torch.long) * half
    distance = relative.abs()
    max_exact = half // 2
    # clamp avoids log(0); those positions take the exact branch anyway
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + log_ratio * (half - max_exact)).to(torch.long).clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class WavLMSelfAttention(SelfAttention):
    """WavLM attention: bucketed relative position bias with a gate computed from the layer input.

    Only layer 0 owns ``relative_attention_bias``; it returns the (ungated) bias, which later layers
    receive and gate with their own ``grep_linear`` / ``grep_a`` (unilm names). The bias and the gate
    are defined over the ``bias_heads`` heads of the unpruned model; ``remaining_heads`` picks the
    heads this (possibly pruned) layer still has.
    """

    remaining_heads: Tensor  # a non-persistent buffer (registered in __init__)

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int = 64,
        dropout: float = 0.0,
        *,
        has_relative_attention_bias: bool,
        num_buckets: int = 320,
        max_distance: int = 800,
        bias_heads: int | None = None,
        remaining_heads: Sequence[int] | None = None,
    ) -> None:
        bias_heads = num_heads if bias_heads is None else bias_heads
        if embed_dim % bias_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by the {bias_heads} position-bias heads")
        heads = list(range(num_heads)) if remaining_heads is None else [int(h) for h in remaining_heads]
        if len(heads) != num_heads or any(not 0 <= h < bias_heads for h in heads):
            raise ValueError(f"remaining_heads {heads} must list {num_heads} indices below {bias_heads}")
        super().__init__(embed_dim, num_heads, head_dim, dropout)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bias_heads = bias_heads
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(num_buckets, bias_heads)
        self.grep_linear = nn.Linear(embed_dim // bias_heads, 8)
        self.grep_a = nn.Parameter(torch.ones(1, bias_heads, 1, 1))
        self.register_buffer("remaining_heads", torch.tensor(heads, dtype=torch.long), persistent=False)
        self._all_heads = remaining_heads is None or heads == list(range(bias_heads))

    def compute_bias(self, length: int) -> Tensor:
        """(bias_heads, T, T) relative position bias."""
        if not hasattr(self, "relative_attention_bias"):
            raise RuntimeError("this WavLM layer does not own relative_attention_bias; pass layer 0's bias")
        pos = torch.arange(length, device=self.relative_attention_bias.weight.device)
        buckets = relative_position_buckets(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def forward(
        self, x: Tensor, frame_mask: Tensor | None = None, position_bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        b, t, c = x.shape
        if position_bias is None:
            position_bias = self.compute_bias(t)
        # gate per (batch, head, frame) from the layer input split into the original heads
        gate_in = x.view(b, t, self.bias_heads, c // self.bias_heads).transpose(1, 2)
        gate_a, gate_b = torch.sigmoid(self.grep_linear(gate_in).view(b, self.bias_heads, t, 2, 4).sum(-1)).chunk(
            2, dim=-1
        )
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0
        bias = gate * position_bias[None]
        if not self._all_heads:
            bias = bias.index_select(1, self.remaining_heads)
        return self.attend(x, frame_mask, bias), position_bias
