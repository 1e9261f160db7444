"""Training: distillation and enhancement losses, optimizer and learning-rate schedule."""

from robustdistiller.train.losses import (
    DistillationLoss,
    MultiResolutionSTFTLoss,
    distillation_loss,
    enhancement_loss,
    feature_penalty,
    si_snr,
)
from robustdistiller.train.optim import (
    WarmupLinear,
    build_optimizer,
    clip_and_check,
    warmup_linear_schedule,
)

__all__ = [
    "DistillationLoss",
    "MultiResolutionSTFTLoss",
    "WarmupLinear",
    "build_optimizer",
    "clip_and_check",
    "distillation_loss",
    "enhancement_loss",
    "feature_penalty",
    "si_snr",
    "warmup_linear_schedule",
]
