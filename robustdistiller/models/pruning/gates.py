"""Hard-concrete (L0) gates and the Lagrangian sparsity constraint (DPHuBERT / FLOP).

A :class:`HardConcrete` gate owns one ``log_alpha`` per structured unit (CNN channel, attention head,
FFN unit, or a whole sub-block). In training it draws one stretched, clamped concrete sample per
forward (shared by the batch); in eval it returns DPHuBERT's deterministic mask: the
``round(n - E[L0])`` units with the smallest ``sigmoid(0.8 * log_alpha / beta)`` are zeroed and the
others keep that soft value (not 1), which pruning later folds into the next weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TEMPERATURE = 2.0 / 3.0
STRETCH = (-0.1, 1.1)
_EPS = 1e-6
# log(-l / r): shift between log_alpha and the probability that a unit is non-zero
_L0_SHIFT = TEMPERATURE * math.log(-STRETCH[0] / STRETCH[1])


class HardConcrete(nn.Module):
    """``n`` hard-concrete gates. ``init_mean`` is the initial probability of a unit being *off*
    (0.01 for channels / heads / layers: they start on; 0.5 for FFN units)."""

    def __init__(self, n: int, init_mean: float = 0.01, init_std: float = 0.01) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"a hard-concrete gate needs at least one unit, got {n}")
        if not 0.0 < init_mean < 1.0:
            raise ValueError(f"init_mean must be in (0, 1), got {init_mean}")
        self.n = n
        self.log_alpha = nn.Parameter(torch.empty(n))
        with torch.no_grad():
            self.log_alpha.normal_(math.log(1.0 - init_mean) - math.log(init_mean), init_std)

    def l0_norm(self) -> Tensor:
        """Expected number of non-zero units (differentiable): ``sum sigmoid(log_alpha - beta log(-l/r))``."""
        return torch.sigmoid(self.log_alpha - _L0_SHIFT).sum()

    def sample(self) -> Tensor:
        """One training mask in [0, 1] (reparameterised, so ``log_alpha`` gets gradients)."""
        u = torch.empty_like(self.log_alpha).uniform_(_EPS, 1.0 - _EPS)
        s = torch.sigmoid((torch.log(u / (1.0 - u)) + self.log_alpha) / TEMPERATURE)
        low, high = STRETCH
        return (s * (high - low) + low).clamp(0.0, 1.0)

    def eval_mask(self) -> Tensor:
        """The deterministic mask (no gradient): soft values, the expected number of units zeroed."""
        with torch.no_grad():
            num_zeros = round(self.n - float(self.l0_norm()))  # Python round, as DPHuBERT
            mask = torch.sigmoid(self.log_alpha / TEMPERATURE * 0.8)
            if num_zeros > 0:
                mask[torch.topk(mask, k=num_zeros, largest=False).indices] = 0.0
        return mask

    def forward(self) -> Tensor:
        return self.sample() if self.training else self.eval_mask()

    def extra_repr(self) -> str:
        return f"n={self.n}"


class SparsityConstraint(nn.Module):
    """``lambda1 (s - t) + lambda2 (s - t)^2`` with the target ``t`` ramped linearly from 0 to
    ``target`` over ``warmup_steps``. The multipliers start at 0 and must be trained by gradient
    *ascent* (an optimizer group with a negative learning rate), which turns the penalty into a
    constraint: they grow while the expected sparsity ``s`` misses the target."""

    def __init__(self, target: float, warmup_steps: int) -> None:
        super().__init__()
        if not 0.0 <= target < 1.0:
            raise ValueError(f"target sparsity must be in [0, 1), got {target}")
        if warmup_steps < 0:
            raise ValueError(f"sparsity warm-up must be >= 0 steps, got {warmup_steps}")
        self.target = target
        self.warmup_steps = warmup_steps
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def target_at(self, step: int) -> float:
        if self.warmup_steps == 0 or step >= self.warmup_steps:
            return self.target
        return self.target * step / self.warmup_steps

    def forward(self, expected_sparsity: Tensor, step: int) -> Tensor:
        gap = expected_sparsity - self.target_at(step)
        return self.lambda1 * gap + self.lambda2 * gap * gap
