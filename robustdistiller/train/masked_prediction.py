"""The masked-prediction objective of HuBERT pre-training, in the shape of a trainer objective: the
module it trains (:attr:`MaskedPrediction.model`), its loss on a batch returning ``(loss, scalars
to log)``, its parameter groups, and its state (none: the mask of each step is drawn from a
generator seeded by (seed, step, micro-batch), so a resumed run draws the same masks).

Per micro-batch: cluster labels come from the *clean* audio (MFCC or an earlier model's layer),
the model sees ``inputs`` (the clean audio, or its corrupted copy for the robust variant) with
spans of frames replaced by the mask embedding, and the loss is the cross-entropy of the labels
on masked frames (plus ``unmasked_weight`` x the same on the other valid frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistiller.models.pretraining import HubertPretrainModel, span_mask
from robustdistiller.train.clusters import FrameLabeller
from robustdistiller.train.optim import build_optimizer

# Mixed into the mask generator's seed so masks never share a stream with crops or corruption plans.
_MASK_SALT = 0x3A5C


@dataclass
class MaskedPredictionLoss:
    total: Tensor
    """``masked + unmasked_weight * unmasked`` (with grad)."""
    masked: Tensor
    """Mean cross-entropy over masked valid frames."""
    unmasked: Tensor
    """Mean cross-entropy over unmasked valid frames (0 when there are none)."""
    accuracy: Tensor
    """Top-1 accuracy of the cluster label on masked frames (detached)."""


def masked_prediction_loss(logits: Tensor, labels: Tensor, time_mask: Tensor, frame_mask: Tensor,
                           unmasked_weight: float = 0.0) -> MaskedPredictionLoss:
    """HuBERT's loss on one batch.

    Args:
        logits: (B, T, K) scores of the K clusters (cosine / temperature).
        labels: (B, T) int64 cluster of each frame (ignored on padded frames).
        time_mask: (B, T) bool, True = the frame was replaced by the mask embedding.
        frame_mask: (B, T) bool, True = valid frame.
        unmasked_weight: weight of the loss on unmasked valid frames (HuBERT: 0).

    Returns:
        :class:`MaskedPredictionLoss`; the means run over frames, so batches of any length weigh
        the same per frame.
    """
    masked = time_mask & frame_mask
    if not bool(masked.any()):
        raise ValueError("masked_prediction_loss: no masked valid frame in the batch (check the span mask)")
    flat_logits = logits.float()
    ce_masked = F.cross_entropy(flat_logits[masked], labels[masked])
    unmasked = ~time_mask & frame_mask
    ce_unmasked = F.cross_entropy(flat_logits[unmasked], labels[unmasked]) if bool(unmasked.any()) \
        else flat_logits.new_zeros(())
    accuracy = (flat_logits[masked].argmax(-1) == labels[masked]).float().mean().detach()
    total = ce_masked + unmasked_weight * ce_unmasked if unmasked_weight else ce_masked
    return MaskedPredictionLoss(total, ce_masked, ce_unmasked, accuracy)


class MaskedPrediction:
    """HuBERT masked prediction over one :class:`HubertPretrainModel`.

    Args:
        model: the model being pre-trained.
        labeller: labels for the clean audio (its cluster model already fitted).
        mask_prob, mask_length: span masking (:func:`span_mask`).
        unmasked_weight: loss weight on unmasked frames.
        seed: seeds the per-step mask generator.
    """

    def __init__(self, model: HubertPretrainModel, labeller: FrameLabeller, *, mask_prob: float,
                 mask_length: int, unmasked_weight: float, seed: int) -> None:
        self.model = model
        self.labeller = labeller
        self.mask_prob = mask_prob
        self.mask_length = mask_length
        self.unmasked_weight = unmasked_weight
        self.seed = seed

    def optimizer(self, **optim: Any) -> torch.optim.Optimizer:
        """AdamW over every trainable tensor of the model, in two groups (decay on matrices, none on
        biases and norms; see :func:`build_optimizer`); ``optim`` = lr / weight_decay / betas / eps /
        match_reference."""
        return build_optimizer(self.model, **optim)

    def state_dict(self) -> dict[str, Any]:
        """No state beyond the model: masks are a pure function of (seed, step, micro-batch)."""
        return {}

    def loss(self, forward: nn.Module, inputs: Tensor, clean: Tensor, lengths: Tensor, *, step: int,
             micro: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of one micro-batch and the detached scalars to log.

        Args:
            forward: the model to call (``self.model`` or its DDP wrapper).
            inputs: (B, L) audio the model hears (clean or corrupted).
            clean: (B, L) the clean audio the labels come from.
            lengths: (B,) valid samples per row.
            step, micro: optimizer step and micro-batch index (seed the span mask).
        """
        frame_lengths = self.model.frame_lengths(lengths)
        num_frames = int(self.model.frame_lengths(torch.tensor([clean.shape[1]]))[0])
        labels = self.labeller.labels(clean, lengths, frame_lengths, num_frames)
        rng = np.random.default_rng([self.seed, _MASK_SALT, step, micro])
        time_mask = span_mask(frame_lengths.cpu(), num_frames, self.mask_prob, self.mask_length, rng)
        out = forward(inputs, lengths, time_mask.to(inputs.device))
        result = masked_prediction_loss(out.logits, labels, time_mask.to(inputs.device), out.frame_mask,
                                        self.unmasked_weight)
        scalars = {
            "loss/masked": result.masked.detach(),
            "loss/unmasked": result.unmasked.detach(),
            "accuracy/masked": result.accuracy,
            "mask/fraction": (time_mask.sum() / frame_lengths.sum().cpu()).to(inputs.device).float(),
        }
        return result.total, scalars
