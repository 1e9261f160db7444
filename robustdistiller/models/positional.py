"""Convolutional positional embedding of wav2vec2-family encoders (``encoder.pos_conv``).

The weight-normalised Conv1d is written out by hand (``weight = g * v / ||v||``, norm over every
dim except 2) instead of using ``torch.nn.utils.weight_norm`` (deprecated) or
``parametrizations.weight_norm`` (renames the parameters). This keeps the legacy state-dict names
``pos_conv.0.weight_g`` / ``pos_conv.0.weight_v`` that every released fairseq / s3prl checkpoint uses,
while still loading the parametrized names (``parametrizations.weight.original0`` / ``original1``),
mapped explicitly so a pos-conv is never left silently random.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# parametrized weight-norm names (torch >= 2.1, recent transformers) -> legacy names.
PARAMETRIZED_WEIGHT_NORM_KEYS = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


def _norm_except_dim2(v: Tensor) -> Tensor:
    return v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``weight_g * weight_v / ||weight_v||`` (norm over dims 0 and 1)."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"pos-conv channels {channels} are not divisible by groups {groups}")
        self.padding = kernel_size // 2
        self.groups = groups
        # Registration order (bias, g, v) reproduces the order of fairseq's saved state dicts.
        self.bias = nn.Parameter(torch.zeros(channels))
        v = torch.empty(channels, channels // groups, kernel_size)
        nn.init.normal_(v, mean=0.0, std=math.sqrt(4.0 / (kernel_size * channels)))
        self.weight_g = nn.Parameter(_norm_except_dim2(v))
        self.weight_v = nn.Parameter(v)

    @property
    def weight(self) -> Tensor:
        return self.weight_v * (self.weight_g / _norm_except_dim2(self.weight_v))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, padding=self.padding, groups=self.groups)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for new, legacy in PARAMETRIZED_WEIGHT_NORM_KEYS.items():
            if prefix + new in state_dict:
                if prefix + legacy in state_dict:
                    raise ValueError(f"state dict holds both {prefix + new} and {prefix + legacy}")
                state_dict[prefix + legacy] = state_dict.pop(prefix + new)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SamePad(nn.Module):
    """Drop the extra trailing frame an even kernel with ``padding = k // 2`` produces."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        return x[..., : x.shape[-1] - self.remove] if self.remove else x


class ConvPositionalEmbedding(nn.Sequential):
    """``Sequential(WeightNormConv1d, SamePad, GELU)`` on ``(B, C, T)``; the caller adds it residually."""

    def __init__(self, channels: int, kernel_size: int = 128, groups: int = 16) -> None:
        super().__init__(WeightNormConv1d(channels, kernel_size, groups), SamePad(kernel_size), nn.GELU())
