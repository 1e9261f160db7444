"""Optimizer, learning-rate schedule and gradient clipping for distillation.

s3prl's implementation ("AdamW_with_schedule") is a LAMB class run in Adam mode with a built-in
``warmup_linear`` schedule. Here it is ``torch.optim.AdamW`` plus a ``LambdaLR`` with the same
multiplier. Two small, documented differences remain: AdamW's decoupled decay is not scaled by the
bias-correction factor (s3prl multiplies ``wd * p`` by ``sqrt(1 - b2^t) / (1 - b1^t)``,
which only matters in the first few hundred steps), and the schedule advances when the trainer
calls ``scheduler.step()`` — call it only after a step that was taken, as s3prl's
per-parameter step counter does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from robustdistiller.errors import ConfigError


def decay_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float, *, match_reference: bool = False
) -> list[dict[str, Any]]:
    """The trainable parameters in a decayed and a non-decayed AdamW group (empty groups left out).

    Default: no weight decay for biases and other 1-D parameters (LayerNorm/GroupNorm scales and
    shifts), the usual practice. ``match_reference=True`` reproduces s3prl exactly: only
    parameters whose name contains ``"bias"`` skip decay (its ``LayerNorm.weight`` exclusion never
    matches fairseq-style names, so norm scales are decayed there). Frozen parameters
    (``requires_grad=False``, e.g. a teacher) are left out.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        skip = "bias" in name if match_reference else (param.ndim <= 1 or name.endswith("bias"))
        (no_decay if skip else decay).append(param)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def adamw(
    groups: Sequence[dict[str, Any]], *, lr: float, weight_decay: float, betas: tuple[float, float], eps: float
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``groups``; ``lr`` / ``weight_decay`` are the defaults of groups
    that set none.

    Raises:
        ValueError: no group has a parameter.
    """
    if not any(g["params"] for g in groups):
        raise ConfigError("no trainable parameters to optimise")
    return torch.optim.AdamW(list(groups), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def build_optimizer(
    model_or_named_params: nn.Module | Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float = 2e-4,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    match_reference: bool = False,
    extra_groups: Sequence[dict[str, Any]] = (),
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters in :func:`decay_groups`, plus ``extra_groups`` appended
    as given (each a dict with ``"params"`` and optional overrides such as ``"lr"``; they must not
    repeat a parameter)."""
    named = (
        model_or_named_params.named_parameters()
        if isinstance(model_or_named_params, nn.Module)
        else model_or_named_params
    )
    groups = decay_groups(named, weight_decay, match_reference=match_reference) + [dict(g) for g in extra_groups]
    return adamw(groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


@dataclass
class WarmupLinear:
    """LR multiplier: linear 0 -> 1 over the first ``warmup_proportion`` of ``total_steps``, then
    linear 1 -> 0 at ``total_steps`` (s3prl ``warmup_linear``). A picklable object rather than a
    lambda so ``LambdaLR.state_dict()`` records its settings."""

    total_steps: int
    warmup_proportion: float

    def __call__(self, step: int) -> float:
        progress = step / self.total_steps
        if progress < self.warmup_proportion:
            return progress / self.warmup_proportion
        return max((1.0 - progress) / (1.0 - self.warmup_proportion), 0.0)


def warmup_linear_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_proportion: float = 0.07
) -> LambdaLR:
    """Linear warm-up to each group's lr over ``warmup_proportion * total_steps`` steps, then
    linear decay to 0 at ``total_steps``. Resume with ``load_state_dict`` (the step counter and
    the multiplier's settings are in ``state_dict()``)."""
    if total_steps <= 0:
        raise ConfigError(f"total_steps must be positive, got {total_steps}")
    if not 0.0 <= warmup_proportion < 1.0:
        raise ConfigError(f"warmup_proportion must be in [0, 1), got {warmup_proportion}")
    return LambdaLR(optimizer, WarmupLinear(total_steps, warmup_proportion))


def clip_and_check(parameters: Iterable[nn.Parameter], max_norm: float) -> tuple[float, bool]:
    """Clip the total gradient norm to ``max_norm``; return ``(norm before clipping, finite)``.

    With mixed precision, unscale the gradients (``GradScaler.unscale_``) first. When ``finite`` is
    False the gradients are unusable: skip ``optimizer.step()`` and ``scheduler.step()``.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0, True
    norm = float(nn.utils.clip_grad_norm_(params, max_norm))
    return norm, math.isfinite(norm)
